"""Argument checks of the raw op, run before any kernel and before anything is written.

Shapes, dtypes, devices and counts are always checked. The values of index tensors (query
start locations, token indices, cache slots, accepted counts) are checked when they live in
host memory (the CPU device: no synchronisation); on an XPU reading them costs a device-to-host
copy, so there they are checked only with GDN_XPU_CHECK_INDICES=1, and never while the current
XPU stream is being captured into a graph (a host read would break the capture; the values of
a captured call change at every replay anyway).

Cache slot 0 is vLLM's null block (NULL_BLOCK_ID): never given to a request, it is where vLLM
points padded rows (zero tokens: the kernels skip them) and the rows of graph-capture and dummy
runs (non-empty, all on slot 0: scratch). So slot 0 may repeat within a batch; every other slot
may be written by one non-empty sequence only (README, "Padded batches and graphs").
"""

import os
from typing import Optional

import torch

ACT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
STATE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PARAM_DTYPES = ACT_DTYPES
ACTIVATIONS = ("silu", "swish", "identity", "none")
MAX_HEAD_DIM = 256
NULL_SLOT = 0  # vLLM's NULL_BLOCK_ID: padded and capture rows' slot, may repeat (scratch)
TENSOR_ARGUMENTS = (
    "core_attn_out", "z", "projected_states_qkvz", "projected_states_ba", "conv_state",
    "ssm_state", "conv_weights", "conv_bias", "A_log", "dt_bias", "has_initial_state",
    "non_spec_query_start_loc", "non_spec_token_indx", "non_spec_state_indices_tensor",
    "spec_query_start_loc", "spec_token_indx", "spec_state_indices_tensor", "num_accepted_tokens")


def _fail(message: str, error=ValueError):
    raise error(f"gdn_attention: {message}")


def _shape(name: str, t: torch.Tensor, expected: tuple, note: str = "") -> None:
    """expected: ints, or None first for the free tokens dimension. The message is only
    formatted on failure: formatting every check's message cost 2-3 us per call."""
    shape = t.shape
    differs = (shape[1:] != expected[1:]) if expected[0] is None else (shape != expected)
    if differs:
        form = ", ".join("tokens" if e is None else str(e) for e in expected)
        _fail(f"{name} has shape {tuple(shape)}, expected [{form}]" +
              (f" ({note})" if note else ""))


def _dtype(name: str, t: torch.Tensor, allowed: tuple) -> None:
    if t.dtype not in allowed:
        _fail(f"{name} has dtype {t.dtype}, expected one of {', '.join(map(str, allowed))}",
              TypeError)


def _index_tensor(name: str, t: Optional[torch.Tensor], length: int, form: str) -> None:
    if t is None:
        _fail(f"{name} is None but the batch counts need it ({form})")
    if t.dtype not in (torch.int32, torch.int64):
        _fail(f"{name} has dtype {t.dtype}, expected int32 or int64", TypeError)
    if t.dim() != 1 or t.shape[0] < length:
        _fail(f"{name} has shape {tuple(t.shape)}, expected {form}")


def _slot_contiguous(t: torch.Tensor) -> bool:
    # From the strides: t[0].is_contiguous() makes a view, a trip through torch's dispatcher
    # (a call's two checks: 2.1 -> 1.6 us, 33 -> 20 us with the caches swept).
    expected = 1
    for size, stride in zip(reversed(t.shape[1:]), reversed(t.stride()[1:])):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def graph_capture_underway(device: torch.device) -> bool:
    """Whether torch is capturing the current stream of `device` into a graph (XPU graphs:
    torch.xpu.graph, vLLM's FULL graph mode). CPU tensors are never captured."""
    if device.type != "xpu":
        return False
    capturing = getattr(torch.xpu, "is_current_stream_capturing", None)
    return bool(capturing and capturing())


def check_values_on_device(device: torch.device) -> bool:
    """Whether the values of index tensors on `device` are checked: always in host memory
    (CPU tensors); on an XPU only with GDN_XPU_CHECK_INDICES=1 (a device-to-host copy per call)
    and never during graph capture (no host read of device memory then)."""
    if device.type == "cpu":
        return True
    if device.type != "xpu" or graph_capture_underway(device):
        return False
    return os.environ.get("GDN_XPU_CHECK_INDICES", "0") == "1"


def _batch_device(t: torch.Tensor) -> torch.device:
    # The one device of the batch (checked above its use). A seam for tests: the XPU branch of
    # check_values_on_device is exercised on CPU tensors by patching it.
    return t.device


def check_gdn_attention_args(a: dict, check_values: bool = True) -> None:
    """Raise ValueError/TypeError naming the first bad argument of the raw op's arguments `a`
    (name -> value); touch nothing. A dict, not keywords: spreading 29 arguments into keywords
    and back cost 15 us of a B=1 decode call with the caches swept.

    check_values=False skips the values of index tensors: the fake impl checks what tracing
    can see (devices, dtypes, shapes, counts), so a traced call fails as the real one would."""
    hk_global, hv_global, tp = a["num_k_heads"], a["num_v_heads"], a["tp_size"]
    K, V = a["head_k_dim"], a["head_v_dim"]
    if tp < 1:
        _fail(f"tp_size={tp} must be >= 1")
    if hk_global < 1 or hk_global % tp or hv_global % tp:
        _fail(f"tp_size={tp} must divide num_k_heads={hk_global} and num_v_heads={hv_global}")
    if hv_global % hk_global:
        _fail(f"num_v_heads={hv_global} must be a multiple of num_k_heads={hk_global}")
    for name, d in (("head_k_dim", K), ("head_v_dim", V)):
        if d % 16 or not 16 <= d <= MAX_HEAD_DIM:
            _fail(f"{name}={d}: supported head dims are multiples of 16 from 16 to {MAX_HEAD_DIM}")
    if a["activation"] not in ACTIVATIONS:
        _fail(f"activation={a['activation']!r}, expected one of {ACTIVATIONS}")
    hk, hv = hk_global // tp, hv_global // tp
    kd, vd = hk * K, hv * V
    C = 2 * kd + vd

    qkvz, ba = a["projected_states_qkvz"], a["projected_states_ba"]
    out, z = a["core_attn_out"], a["z"]
    conv_state, ssm_state = a["conv_state"], a["ssm_state"]
    # The tensor arguments by name, not found by type among all 29 (with shapes compared whole,
    # validation of a B=1 decode call took 150-154 -> 120-125 us with the caches swept).
    tensors = {name: a[name] for name in TENSOR_ARGUMENTS if a[name] is not None}
    qkvz_device = qkvz.device
    if any(t.device != qkvz_device for t in tensors.values()):
        where = ", ".join(f"{n}: {t.device}" for n, t in tensors.items())
        _fail(f"all tensors must be on one device, got {where}")
    device = _batch_device(qkvz)
    if device.type not in ("cpu", "xpu", "meta"):  # meta: shapes only, for tracing
        _fail(f"projected_states_qkvz is on {device}; supported devices are cpu and xpu")

    _dtype("projected_states_qkvz", qkvz, ACT_DTYPES)
    act = qkvz.dtype
    for name in ("projected_states_ba", "core_attn_out", "z", "conv_state"):
        if tensors[name].dtype != act:
            _fail(f"{name} has dtype {tensors[name].dtype}, expected {act} "
                  "(the dtype of projected_states_qkvz)", TypeError)
    _dtype("ssm_state", ssm_state, STATE_DTYPES)
    for name in ("conv_weights", "conv_bias", "A_log", "dt_bias"):
        if name in tensors:
            _dtype(name, tensors[name], PARAM_DTYPES)

    n = a["num_actual_tokens"]
    _shape("projected_states_qkvz", qkvz, (None, C + vd), "q, k, v, z of this rank's heads")
    T = qkvz.shape[0]
    _shape("projected_states_ba", ba, (T, 2 * hv))
    _shape("core_attn_out", out, (None, hv, V))
    _shape("z", z, (None, hv, V))
    if not 0 <= n <= min(T, out.shape[0], z.shape[0]):
        _fail(f"num_actual_tokens={n} must be within 0..{min(T, out.shape[0], z.shape[0])} "
              "(the rows of projected_states_qkvz, core_attn_out and z)")
    # [C, W] or the layer's own [C, 1, W], read from the shape (a squeezed view would be a trip
    # through torch's dispatcher).
    weights_shape = tuple(a["conv_weights"].shape)
    if len(weights_shape) == 3 and weights_shape[1] == 1:
        weights_shape = (weights_shape[0], weights_shape[2])
    if len(weights_shape) != 2 or weights_shape[0] != C or not 2 <= weights_shape[1] <= 8:
        _fail(f"conv_weights has shape {tuple(a['conv_weights'].shape)}, expected [{C}, W] "
              f"or [{C}, 1, W] with 2 <= W <= 8")
    W = weights_shape[1]
    if a["conv_bias"] is not None:
        _shape("conv_bias", a["conv_bias"], (C,))
    _shape("A_log", a["A_log"], (hv,))
    _shape("dt_bias", a["dt_bias"], (hv,))
    if conv_state.dim() != 3 or conv_state.shape[2] != C or conv_state.shape[1] < W - 1:
        _fail(f"conv_state has shape {tuple(conv_state.shape)}, expected [slots, >= {W - 1}, {C}]")
    slots = conv_state.shape[0]
    _shape("ssm_state", ssm_state, (slots, hv, V, K), "slots, v-heads, V, K")
    for name in ("core_attn_out", "z"):
        if not tensors[name].is_contiguous():
            _fail(f"{name} must be contiguous (the kernels write it in place)")
    for name in ("conv_state", "ssm_state"):  # slots may be strided (vLLM's paged cache)
        if not _slot_contiguous(tensors[name]):
            _fail(f"{name} must be contiguous within each cache slot (the kernels write it "
                  "in place); only the slot stride is free")

    nd, np_, ns = a["num_decodes"], a["num_prefills"], a["num_spec_decodes"]
    if min(nd, np_, ns) < 0:
        _fail(f"num_decodes={nd}, num_prefills={np_}, num_spec_decodes={ns} must be >= 0")
    non_spec = nd + np_
    num_spec, rolling = 0, False
    if non_spec:
        _index_tensor("non_spec_query_start_loc", a["non_spec_query_start_loc"], non_spec + 1,
                      f"[{non_spec + 1}] (num_decodes + num_prefills + 1)")
        _index_tensor("non_spec_state_indices_tensor", a["non_spec_state_indices_tensor"],
                      non_spec, f"[{non_spec}]")
        if a["has_initial_state"] is not None:
            h = a["has_initial_state"]
            if h.dim() != 1 or h.shape[0] < non_spec:
                _fail(f"has_initial_state has shape {tuple(h.shape)}, expected [{non_spec}]")
        if a["non_spec_token_indx"] is not None:
            _index_tensor("non_spec_token_indx", a["non_spec_token_indx"], 0, "[tokens]")
    if ns:
        _index_tensor("spec_query_start_loc", a["spec_query_start_loc"], ns + 1, f"[{ns + 1}]")
        idx = a["spec_state_indices_tensor"]
        if idx is None or idx.dim() != 2 or idx.shape[0] < ns or idx.shape[1] < 2:
            _fail(f"spec_state_indices_tensor has shape {None if idx is None else tuple(idx.shape)}"
                  f", expected [{ns}, num_spec + 1] (num_spec_decodes, num_spec + 1 >= 2)")
        if idx.dtype not in (torch.int32, torch.int64):
            _fail(f"spec_state_indices_tensor has dtype {idx.dtype}, expected int32 or int64",
                  TypeError)
        num_spec = idx.shape[1] - 1
        # The two spec conv layouts (README, "Speculative decoding").
        rolling = conv_state.shape[1] == W - 1 + num_spec
        if not rolling and conv_state.shape[1] != W - 1:
            _fail(f"conv_state has {conv_state.shape[1]} rows per slot; with spec decodes and "
                  f"spec_state_indices_tensor of num_spec + 1 = {num_spec + 1} columns it must "
                  f"hold W-1+num_spec = {W - 1 + num_spec} (vLLM's rolling buffer) or "
                  f"W-1 = {W - 1} (a history in every slot)")
        _index_tensor("num_accepted_tokens", a["num_accepted_tokens"], ns, f"[{ns}]")
        if a["spec_token_indx"] is not None:
            _index_tensor("spec_token_indx", a["spec_token_indx"], 0, "[tokens]")

    if check_values and check_values_on_device(device):
        _check_index_values(a, n, slots, num_spec, rolling, non_spec, ns)


def _host_values(t: torch.Tensor, count: int) -> list:
    """The first `count` rows of index tensor t as a Python list. Index tensors are short (a
    batch's sequences; its tokens at most): checked as lists, validation takes 18 us per decode
    call; a dozen torch ops on tiny tensors took 52-57. Sliced only when longer than needed: a
    slice is a trip through torch's dispatcher."""
    return (t[:count] if t.shape[0] > count else t).tolist()


def _check_index_values(a, n, slots, num_spec, rolling, non_spec, ns) -> None:
    used_slots: list[int] = []
    used_rows: list[int] = []

    def group(prefix, count, max_len):
        loc = _host_values(a[f"{prefix}_query_start_loc"], count + 1)
        token_index = a[f"{prefix}_token_indx"]
        rows = n if token_index is None else token_index.shape[0]
        lengths = [end - begin for begin, end in zip(loc, loc[1:])]
        if loc[0] != 0 or min(lengths) < 0 or loc[-1] > rows:
            _fail(f"{prefix}_query_start_loc={loc} must start at 0, not decrease, and "
                  f"end at most at {rows} (" + ("num_actual_tokens)" if token_index is None
                                               else f"the length of {prefix}_token_indx)"))
        if token_index is not None:
            used = _host_values(token_index, loc[-1])
            if used and (min(used) < 0 or max(used) >= n):
                _fail(f"{prefix}_token_indx values must be rows within 0..{n - 1} "
                      "(num_actual_tokens)")
            used_rows.extend(used)
        if max_len is not None and max(lengths) > max_len:
            _fail(f"spec sequences have at most num_spec + 1 = {max_len} tokens, got lengths "
                  f"{lengths}")
        slot_tensor = a[f"{prefix}_state_indices_tensor"]
        seq_slots = _host_values(slot_tensor, count)  # a row of slots per sequence
        if slot_tensor.dim() == 1:
            seq_slots = [[s] for s in seq_slots]
        flat = [s for row in seq_slots for s in row]
        if flat and (min(flat) < 0 or max(flat) >= slots):
            _fail(f"{prefix}_state_indices_tensor values must be cache slots within "
                  f"0..{slots - 1}, got {flat}")
        # Zero-length rows (vLLM's padding) neither read nor write their slots.
        for length, row in zip(lengths, seq_slots):
            if length > 0:
                used_slots.extend(row)

    if non_spec:
        group("non_spec", non_spec, None)
    if ns:
        # The previous step's accepted count, whatever this step's length. The rolling buffer
        # is read from row acc-1, so acc >= 1 there; the per-slot layout reads column
        # max(acc-1, 0).
        acc = _host_values(a["num_accepted_tokens"], ns)
        low = 1 if rolling else 0
        if min(acc) < low or max(acc) > num_spec + 1:
            _fail(f"num_accepted_tokens={acc} must be within {low}..{num_spec + 1} "
                  "(num_spec + 1)")
        group("spec", ns, num_spec + 1)
    real = [s for s in used_slots if s != NULL_SLOT]
    if len(real) != len(set(real)):
        _fail("two sequences of the batch write the same cache slot: the state indices of "
              f"non-empty sequences {used_slots} must be distinct, except slot "
              f"{NULL_SLOT} (vLLM's null block, scratch for padded and graph-capture rows)")
    if len(used_rows) != len(set(used_rows)):
        _fail("spec_token_indx and non_spec_token_indx must name distinct token rows")
