"""Test helpers shared by every test file: random valid GDN batches (all raw-op arguments),
deep copies of them, and the one closeness check with its tolerances per dtype."""

import dataclasses
import itertools
import math

import torch

from gdn_xpu.reference import gdn_attention_reference

# (RMS(ref - out) / RMS(ref), max |ref - out|) allowed for values stored in each dtype: the
# kernels compute in fp32, the reference in fp64, and both round the result to the dtype of
# the tensor it lands in (so states stored in bf16 take the bf16 row).
TOLERANCES = {
    torch.float32: (1e-5, 1e-4),
    torch.float16: (2e-3, 1e-2),
    torch.bfloat16: (1e-2, 5e-2),
}


def assert_close(name: str, out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """FLA's metric, RMS(ref - out) / RMS(ref), plus max |ref - out|, against the tolerances
    of `dtype`. Non-finite values (the NaN sentinel of rows nobody writes) must sit at the same
    places in both and are left out of the numbers."""
    rms_tol, abs_tol = TOLERANCES[dtype]
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    out, ref = out.double(), ref.double()
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(out)), (
        f"{name}: non-finite values differ ({int((~torch.isfinite(out)).sum())} in out, "
        f"{int((~finite).sum())} in ref)")
    out, ref = out[finite], ref[finite]
    if ref.numel() == 0:
        return
    diff = out - ref
    rms_ref = ref.pow(2).mean().sqrt().item()
    # An all-zero reference has no scale: then the RMS of the difference itself is compared.
    ratio = diff.pow(2).mean().sqrt().item() / (rms_ref if rms_ref > 0 else 1.0)
    max_abs = diff.abs().max().item()
    assert ratio <= rms_tol and max_abs <= abs_tol, (
        f"{name}: rms ratio {ratio:.2e} (tol {rms_tol:.0e}), max abs {max_abs:.2e} "
        f"(tol {abs_tol:.0e}) for {dtype}")


@dataclasses.dataclass
class GDNConfig:
    """One GDN layer's shape and dtypes. Head counts are global; each rank holds 1/tp_size."""
    num_k_heads: int
    num_v_heads: int
    head_k_dim: int
    head_v_dim: int
    tp_size: int = 1
    conv_width: int = 4
    dtype: torch.dtype = torch.float32  # activations, conv cache and conv parameters
    state_dtype: torch.dtype = torch.float32  # ssm_state
    reorder_input: bool = True  # True: flat Qwen3.5 layout; False: Qwen3-Next interleaved
    has_bias: bool = True
    activation: str = "silu"
    num_slots: int = 16
    num_spec: int = 0  # draft tokens per spec step
    # Spec conv history: vLLM's rolling buffer (conv_state has W-1+num_spec rows) or
    # vllm-xpu-kernels' per-slot layout (W-1 rows in every slot of a sequence).
    spec_conv_per_slot: bool = False

    @property
    def conv_state_rows(self) -> int:
        return self.conv_width - 1 + (0 if self.spec_conv_per_slot else self.num_spec)


def make_batch(cfg: GDNConfig, *, decode_lens=(), prefill_lens=(), spec_lens=(), seed=0,
               padding_rows=3, interleave_groups=True, reserve_slot_zero=False) -> dict:
    """All keyword arguments of the raw op (and of gdn_attention_reference) for one random,
    valid batch.

    Sequences: decodes (decode_lens, all 1, always with an initial state, as in vLLM), then
    prefills (prefill_lens, each with or without an initial state at random), both non-spec;
    then spec-decode sequences of spec_lens tokens each (1..num_spec+1), with
    num_accepted_tokens (the previous step's count, independent of this step's length) drawn
    from 1..num_spec+1 (0..num_spec+1 in the per-slot layout). Every sequence gets distinct random cache
    slots (a spec sequence num_spec+1 of them); slots nobody uses hold random values too.

    Tokens: each sequence's tokens are contiguous. When both groups are present, their
    sequences are interleaved in a random order (each group keeping its own order) and
    spec_token_indx / non_spec_token_indx (int64, ascending) give each group's rows, as vLLM
    builds them; interleave_groups=False puts the non-spec group first. padding_rows rows
    follow the num_actual_tokens real ones. core_attn_out and z start as NaN everywhere, so a
    row nobody writes stays NaN.

    Gates are realistic: A_log = log(U(1, 16)) and dt_bias = softplus^-1(dt) with dt
    log-uniform in [1e-3, 1e-1] (the Mamba/FLA initialisation), a, b ~ N(0, 1); so decays
    exp(g) span about 0.02..1 and states carry over many tokens.
    reserve_slot_zero keeps slot 0 unused (vLLM's null block, which its own kernels skip).
    """
    assert all(L == 1 for L in decode_lens), "decodes have one token each"
    assert all(L >= 0 for L in prefill_lens)
    assert all(1 <= L <= cfg.num_spec + 1 for L in spec_lens), "spec lengths are 1..num_spec+1"
    gen = torch.Generator().manual_seed(seed)
    hk, hv = cfg.num_k_heads // cfg.tp_size, cfg.num_v_heads // cfg.tp_size
    K, V, W = cfg.head_k_dim, cfg.head_v_dim, cfg.conv_width
    C, vd = 2 * hk * K + hv * V, hv * V
    non_spec_lens = list(decode_lens) + list(prefill_lens)
    spec_lens = list(spec_lens)
    n = sum(non_spec_lens) + sum(spec_lens)
    T = n + padding_rows

    def randn(*shape, scale=1.0, dtype=torch.float32):
        return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).to(dtype)

    def uniform(shape, low, high):
        return torch.rand(shape, generator=gen, dtype=torch.float32) * (high - low) + low

    # Token rows: lay the sequences out in a random merge of the two groups' orders.
    groups = [0] * len(non_spec_lens) + [1] * len(spec_lens)
    if interleave_groups:
        groups = [groups[i] for i in torch.randperm(len(groups), generator=gen).tolist()]
    group_rows, lens, next_row = ([], []), (iter(non_spec_lens), iter(spec_lens)), 0
    for group in groups:
        length = next(lens[group])
        group_rows[group].extend(range(next_row, next_row + length))
        next_row += length
    both = bool(non_spec_lens) and bool(spec_lens)

    first_slot = 1 if reserve_slot_zero else 0
    slots = (torch.randperm(cfg.num_slots - first_slot, generator=gen) + first_slot).tolist()
    needed = len(non_spec_lens) + len(spec_lens) * (cfg.num_spec + 1)
    assert needed <= len(slots), f"the batch needs {needed} cache slots, cfg has {len(slots)}"

    def start_loc(seq_lens):
        return torch.tensor([0] + list(itertools.accumulate(seq_lens)), dtype=torch.int32)

    dt = torch.exp(uniform(hv, math.log(1e-3), math.log(1e-1)))
    args = dict(
        core_attn_out=torch.full((T, hv, V), float("nan"), dtype=cfg.dtype),
        z=torch.full((T, hv, V), float("nan"), dtype=cfg.dtype),
        projected_states_qkvz=randn(T, C + vd, dtype=cfg.dtype),
        projected_states_ba=randn(T, 2 * hv, dtype=cfg.dtype),
        num_k_heads=cfg.num_k_heads, num_v_heads=cfg.num_v_heads,
        head_k_dim=K, head_v_dim=V,
        conv_state=randn(cfg.num_slots, cfg.conv_state_rows, C, dtype=cfg.dtype),
        # State entries of size ~1/sqrt(K): what unit-norm keys and O(1) values build up.
        ssm_state=randn(cfg.num_slots, hv, V, K, scale=K ** -0.5, dtype=cfg.state_dtype),
        # Depthwise weights of size ~1/sqrt(W) keep the conv output O(1).
        conv_weights=randn(C, W, scale=W ** -0.5, dtype=cfg.dtype),
        conv_bias=randn(C, scale=0.1, dtype=cfg.dtype) if cfg.has_bias else None,
        activation=cfg.activation,
        A_log=torch.log(uniform(hv, 1.0, 16.0)),
        dt_bias=dt + torch.log(-torch.expm1(-dt)),  # softplus(dt_bias) = dt
        num_prefills=len(prefill_lens), num_decodes=len(decode_lens),
        num_spec_decodes=len(spec_lens),
        has_initial_state=None, non_spec_query_start_loc=None, non_spec_token_indx=None,
        non_spec_state_indices_tensor=None, spec_query_start_loc=None, spec_token_indx=None,
        spec_state_indices_tensor=None, num_accepted_tokens=None,
        num_actual_tokens=n, tp_size=cfg.tp_size, reorder_input=cfg.reorder_input,
    )
    if non_spec_lens:
        with_state = torch.rand(len(prefill_lens), generator=gen) < 0.5
        args["non_spec_query_start_loc"] = start_loc(non_spec_lens)
        args["non_spec_state_indices_tensor"] = torch.tensor(
            slots[:len(non_spec_lens)], dtype=torch.int32)
        args["has_initial_state"] = torch.cat(
            [torch.ones(len(decode_lens), dtype=torch.bool), with_state])
        if both:
            args["non_spec_token_indx"] = torch.tensor(group_rows[0], dtype=torch.int64)
    if spec_lens:
        table = slots[len(non_spec_lens):needed]
        args["spec_query_start_loc"] = start_loc(spec_lens)
        args["spec_state_indices_tensor"] = torch.tensor(table, dtype=torch.int32).view(
            len(spec_lens), cfg.num_spec + 1)
        low = 0 if cfg.spec_conv_per_slot else 1
        args["num_accepted_tokens"] = torch.randint(
            low, cfg.num_spec + 2, (len(spec_lens),), generator=gen, dtype=torch.int32)
        if both:
            args["spec_token_indx"] = torch.tensor(group_rows[1], dtype=torch.int64)
    return args


def clone_args(args: dict) -> dict:
    """A deep copy of a batch's arguments (tensors cloned), so a kernel and the reference can
    run on identical inputs and caches."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in args.items()}


def run_against_reference(args: dict) -> tuple[dict, dict]:
    """Run the raw op on `args` and the float64 reference on a copy; compare all four outputs
    with the tolerances of their dtypes, and check that rows past num_actual_tokens and cache
    slots no sequence names are untouched. Returns (kernel args, reference args)."""
    import gdn_xpu  # noqa: F401  (registers the op)

    ref_args, before = clone_args(args), clone_args(args)
    torch.ops.gdn_xpu.gdn_attention(**args)
    gdn_attention_reference(**ref_args)

    n, act, state = args["num_actual_tokens"], args["core_attn_out"].dtype, args["ssm_state"].dtype
    assert_close("core_attn_out", args["core_attn_out"][:n], ref_args["core_attn_out"][:n], act)
    assert_close("z", args["z"][:n], ref_args["z"][:n], act)
    assert_close("conv_state", args["conv_state"], ref_args["conv_state"], act)
    assert_close("ssm_state", args["ssm_state"], ref_args["ssm_state"], state)
    # Rows past num_actual_tokens keep their sentinel; slots no sequence uses are bit-identical.
    for name in ("core_attn_out", "z"):
        assert torch.equal(args[name][n:].nan_to_num(7.0), before[name][n:].nan_to_num(7.0)), name
    used = set()
    for name in ("non_spec_state_indices_tensor", "spec_state_indices_tensor"):
        if args[name] is not None:
            used |= set(args[name].flatten().tolist())
    for slot in range(args["ssm_state"].shape[0]):
        if slot not in used:
            assert torch.equal(args["ssm_state"][slot], before["ssm_state"][slot]), slot
            assert torch.equal(args["conv_state"][slot], before["conv_state"][slot]), slot
    return args, ref_args
