"""Every torch.library registration of the package, in one place.

- torch.ops.gdn_xpu.gdn_attention: the raw kernel op, with the schema of vllm-xpu-kernels'
  torch.ops._xpu_C.gdn_attention (a drop-in), for CPU tensors (SYCL CPU device) and XPU tensors.
  Spec decode takes either conv history layout, told apart by conv_state's rows per slot:
  W-1+num_spec is vLLM's rolling buffer in slot column 0 (read from row acc-1; rows
  [0, W-2+L) become (prior ++ x)[1:]); W-1 is vllm-xpu-kernels' history per slot (read from
  column max(acc-1, 0); column t receives the inputs up to token t). README, "Speculative
  decoding".
- torch.ops.gdn_xpu.gdn_attention_core_xpu: the layer op. It finds its layer by name in the
  forward context (gdn_xpu/forward_context.py) and calls the raw op with the layer's weights,
  cache and metadata, as vLLM's XPU GDN layer does.
Both mutate their outputs in place and have fake impls that write nothing (the raw op's fake
checks its arguments as the real op does), so torch.compile traces each call as one opaque node.
Without vLLM the layer op is also registered as torch.ops.vllm.gdn_attention_core_xpu; with
vLLM, the plugin (gdn_xpu/vllm_plugin.py) does that through vLLM's own registration, unless
vLLM already defines the name.
"""

import importlib.util
import inspect
import threading
from typing import Optional

import torch

from gdn_xpu import _runtime
from gdn_xpu.forward_context import lookup_layer
from gdn_xpu.layer import raw_op_args
from gdn_xpu.validation import check_gdn_attention_args

GDN_ATTENTION_SCHEMA = (
    "gdn_attention(Tensor! core_attn_out, Tensor! z, Tensor projected_states_qkvz, "
    "Tensor projected_states_ba, int num_k_heads, int num_v_heads, int head_k_dim, "
    "int head_v_dim, Tensor! conv_state, Tensor! ssm_state, Tensor conv_weights, "
    "Tensor? conv_bias, str activation, Tensor A_log, Tensor dt_bias, int num_prefills, "
    "int num_decodes, int num_spec_decodes, Tensor? has_initial_state, "
    "Tensor? non_spec_query_start_loc, Tensor? non_spec_token_indx, "
    "Tensor? non_spec_state_indices_tensor, Tensor? spec_query_start_loc, "
    "Tensor? spec_token_indx, Tensor? spec_state_indices_tensor, "
    "Tensor? num_accepted_tokens, int num_actual_tokens, int tp_size, bool reorder_input) -> ()"
)

_lib = torch.library.Library("gdn_xpu", "DEF")
GDN_ATTENTION_CORE_SCHEMA = (
    "gdn_attention_core_xpu(Tensor! core_attn_out, Tensor! z, Tensor projected_states_qkvz, "
    "Tensor projected_states_ba, str layer_name) -> ()"
)
_lib.define(GDN_ATTENTION_CORE_SCHEMA)


def _as(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    # Tensors of the right kind pass untouched, without a trip through torch's dispatcher: the
    # arguments of a B=1 decode call took 11 -> 8 us, 70 -> 62 us with the caches swept (as
    # between a model's layers).
    if t is None or (t.dtype == dtype and t.is_contiguous()):
        return t
    return t.to(dtype).contiguous()


def _int32(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return _as(t, torch.int32)


def _fp32(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return _as(t, torch.float32)


def _as_held(t: torch.Tensor, act: torch.dtype) -> torch.Tensor:
    # A parameter the kernels read as the layer holds it: fp32 or the activation dtype.
    return t if t.dtype in (torch.float32, act) and t.is_contiguous() else _fp32(t)


def gdn_attention_impl(
    core_attn_out, z, projected_states_qkvz, projected_states_ba, num_k_heads, num_v_heads,
    head_k_dim, head_v_dim, conv_state, ssm_state, conv_weights, conv_bias, activation, A_log,
    dt_bias, num_prefills, num_decodes, num_spec_decodes, has_initial_state,
    non_spec_query_start_loc, non_spec_token_indx, non_spec_state_indices_tensor,
    spec_query_start_loc, spec_token_indx, spec_state_indices_tensor, num_accepted_tokens,
    num_actual_tokens, tp_size, reorder_input,
) -> None:
    run_raw_op(dict(locals()))


def run_raw_op(a: dict) -> None:
    """The raw op on its arguments `a` (name -> value): validation, then the launcher."""
    check_gdn_attention_args(a)
    _runtime.extension().gdn_attention(*launcher_args(a),
                                       _runtime.queue_address(a["core_attn_out"].device))


def launcher_args(a: dict) -> tuple:
    """The host launcher's arguments for the raw op's (validated) arguments `a`, short of the
    queue address. The kernels take int32 indices; conv weights [C, W] or [C, 1, W], A_log and
    dt_bias as the layer holds them, fp32 or in the activation dtype (the weights not reshaped: a
    view is a dispatcher trip), any other dtype converted to fp32; an fp32 conv bias; and an fp32
    conv workspace of at least W + non-spec sequences + 1 rows of C: the tap-major copy [W, C] a
    kernel makes of the weights (torch's transposing copy took 42 µs per call), then the conv
    outputs a kernel writes for one-token sequences before the recurrent kernel; its last row
    holds A_log and dt_bias in fp32. The conversions are new tensors unless the inputs already
    are of those dtypes: whoever records the launch into a graph must keep this tuple alive as
    long as the graph, and, for CPU tensors, replay it only between calls of the op (the
    workspace is the thread's)."""
    act = a["projected_states_qkvz"].dtype
    weights = _as_held(a["conv_weights"], act)
    non_spec_seqs = a["num_prefills"] + a["num_decodes"]
    conv_workspace = _conv_workspace(weights, weights.shape[-1] + non_spec_seqs + 1)
    return (
        a["core_attn_out"], a["z"], a["projected_states_qkvz"].contiguous(),
        a["projected_states_ba"].contiguous(), a["num_k_heads"] // a["tp_size"],
        a["num_v_heads"] // a["tp_size"], a["head_k_dim"], a["head_v_dim"], a["conv_state"],
        a["ssm_state"], weights, conv_workspace, _fp32(a["conv_bias"]),
        a["activation"] in ("silu", "swish"), _as_held(a["A_log"], act),
        _as_held(a["dt_bias"], act),
        non_spec_seqs, a["num_spec_decodes"],
        _as(a["has_initial_state"], torch.bool),
        _int32(a["non_spec_query_start_loc"]), _int32(a["non_spec_token_indx"]),
        _int32(a["non_spec_state_indices_tensor"]), _int32(a["spec_query_start_loc"]),
        _int32(a["spec_token_indx"]), _int32(a["spec_state_indices_tensor"]),
        _int32(a["num_accepted_tokens"]), a["num_actual_tokens"], a["reorder_input"],
    )


# CPU calls' conv workspaces, per thread: {conv channels: fp32 tensor [rows, channels]}.
_cpu_workspaces = threading.local()


def _conv_workspace(weights: torch.Tensor, rows: int) -> torch.Tensor:
    """An fp32 conv workspace of at least `rows` rows for the weights' channels. On the CPU one
    per thread and channel count, kept and grown: every CPU call waits for its kernels, so the
    next call finds it free, and a fresh one per call cost 46-56 us of a B=1 decode call with
    the caches swept (glibc hands back pages that large, and the kernels fault them in again).
    XPU calls allocate from torch's caching allocator, in the order of their stream."""
    channels = weights.shape[0]
    if not weights.is_cpu:
        return weights.new_empty((rows, channels), dtype=torch.float32)
    kept = getattr(_cpu_workspaces, "by_channels", None)
    if kept is None:
        kept = _cpu_workspaces.by_channels = {}
    workspace = kept.get(channels)
    if workspace is None or workspace.shape[0] < rows:
        workspace = kept[channels] = torch.empty((rows, channels), dtype=torch.float32)
    return workspace


_GDN_ATTENTION_PARAMETERS = inspect.signature(gdn_attention_impl)


def gdn_attention_fake(*args, **kwargs) -> None:
    # Tracing (and tensors on meta, even mixed with real ones) lands here: refuse what the real
    # op would refuse, short of reading index values.
    bound = _GDN_ATTENTION_PARAMETERS.bind(*args, **kwargs).arguments
    check_gdn_attention_args(bound, check_values=False)


def define_raw_op(lib: torch.library.Library) -> None:
    """Define <lib's namespace>::gdn_attention as this package's raw op."""
    lib.define(GDN_ATTENTION_SCHEMA)
    torch.library.impl(f"{lib.ns}::gdn_attention", ("cpu", "xpu"), gdn_attention_impl, lib=lib)
    torch.library.register_fake(f"{lib.ns}::gdn_attention", gdn_attention_fake, lib=lib)


define_raw_op(_lib)


def run_layer(core_attn_out: torch.Tensor, z: torch.Tensor, projected_states_qkvz: torch.Tensor,
              projected_states_ba: torch.Tensor, layer_name: str) -> None:
    """The layer op's work: the layer and its batch from the forward context, then the raw op."""
    layer, metadata = lookup_layer(layer_name)
    if metadata is None:
        # Profiling or dummy run: no batch, no state change, but defined outputs.
        core_attn_out.zero_()
        z.zero_()
        return
    fresh = getattr(metadata, "gdn_xpu_fresh_spec_rows", None)
    if fresh is not None:  # spec rows of new requests (gdn_xpu/vllm_plugin.py, point 6)
        reset_spec_slots(layer.kv_cache, metadata.spec_state_indices_tensor, fresh)
    # The raw op's work, not torch.ops.gdn_xpu.gdn_attention: this body already runs inside an
    # op, and the second trip through the dispatcher cost 12 us per call (B=1 decode, one core:
    # 199 -> 187 us).
    run_raw_op(raw_op_args(layer, core_attn_out, z, projected_states_qkvz, projected_states_ba,
                           metadata))


def reset_spec_slots(kv_cache, spec_state_indices: torch.Tensor, rows: torch.Tensor) -> None:
    """Zero the conv and SSM states of every slot of the given spec rows: a new sequence's
    state. Device-side indexing only (no host read of the indices)."""
    slots = spec_state_indices[rows].flatten().long()
    for state in kv_cache[:2]:
        state.index_fill_(0, slots, 0)


# What the layer op runs. Under vLLM the plugin wraps it in vLLM's eager_break_during_capture
# (XPU graph capture runs it eagerly between captured segments), as vLLM wraps its own layer op.
layer_op_body = run_layer


def gdn_attention_core_impl(core_attn_out: torch.Tensor, z: torch.Tensor,
                            projected_states_qkvz: torch.Tensor,
                            projected_states_ba: torch.Tensor, layer_name: str) -> None:
    layer_op_body(core_attn_out, z, projected_states_qkvz, projected_states_ba, layer_name)


def gdn_attention_core_fake(core_attn_out, z, projected_states_qkvz, projected_states_ba,
                            layer_name) -> None:
    return None


torch.library.impl("gdn_xpu::gdn_attention_core_xpu", "CompositeExplicitAutograd",
                   gdn_attention_core_impl, lib=_lib)
torch.library.register_fake("gdn_xpu::gdn_attention_core_xpu", gdn_attention_core_fake, lib=_lib)


def register_vllm_namespace_alias(lib: torch.library.Library) -> bool:
    """Define vllm::gdn_attention_core_xpu in `lib` as this package's layer op, unless the name
    is already defined (vLLM's own XPU build registers it): then vLLM's stays."""
    if has_schema("vllm::gdn_attention_core_xpu"):
        return False
    lib.define(GDN_ATTENTION_CORE_SCHEMA)
    torch.library.impl("vllm::gdn_attention_core_xpu", "CompositeExplicitAutograd",
                       gdn_attention_core_impl, lib=lib)
    torch.library.register_fake("vllm::gdn_attention_core_xpu", gdn_attention_core_fake, lib=lib)
    return True


def has_schema(qualname: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(qualname, "")
        return True
    except RuntimeError:
        return False


if importlib.util.find_spec("vllm") is None:
    _vllm_lib = torch.library.Library("vllm", "FRAGMENT")
    register_vllm_namespace_alias(_vllm_lib)
