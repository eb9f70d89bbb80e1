"""Test helpers: random valid GDN batches (all raw-op arguments) and one closeness check."""

import dataclasses
import random

import torch

# (RMS(ref - out) / RMS(ref), max |ref - out|) allowed for values stored in each dtype; the
# kernels compute in fp32, the reference in fp64.
TOLERANCES = {
    torch.float32: (1e-5, 1e-4),
    torch.float16: (2e-3, 1e-2),
    torch.bfloat16: (1e-2, 6e-2),
}


def assert_close(name: str, out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """The FLA metric plus max-abs, against the tolerances of `dtype`. Non-finite values
    (NaN sentinels of rows nobody writes) must sit at the same places in both."""
    rms_tol, abs_tol = TOLERANCES[dtype]
    out, ref = out.double(), ref.double()
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(out)), f"{name}: non-finite values differ"
    out, ref = out[finite], ref[finite]
    diff = out - ref
    rms_ref = ref.pow(2).mean().sqrt().item()
    ratio = diff.pow(2).mean().sqrt().item() / max(rms_ref, 1e-12)
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    assert ratio <= rms_tol and max_abs <= abs_tol, (
        f"{name}: rms ratio {ratio:.2e} (tol {rms_tol:.0e}), max abs {max_abs:.2e} "
        f"(tol {abs_tol:.0e}) for {dtype}")


@dataclasses.dataclass
class GDNConfig:
    num_k_heads: int
    num_v_heads: int
    head_k_dim: int
    head_v_dim: int
    dtype: torch.dtype = torch.float32
    state_dtype: torch.dtype = torch.float32
    tp_size: int = 1
    conv_width: int = 4
    reorder_input: bool = True
    has_bias: bool = True
    activation: str = "silu"
    num_slots: int = 16
    num_spec: int = 0


def make_batch(cfg: GDNConfig, *, decode_lens=(), prefill_lens=(), spec_lens=(), seed=0,
               padding_rows=3, interleave_groups=True, reserve_slot_zero=False) -> dict:
    """All raw-op keyword arguments for one random, valid batch.

    Non-spec sequences are decodes (lens 1, with state) then prefills (random initial state);
    spec sequences have spec_lens tokens each (<= num_spec + 1). Slots are a random
    permutation, unused slots hold random values, and rows past the real tokens are padding
    filled with NaN so that untouched rows can be checked. With both kinds in one batch the
    two groups' tokens are shuffled together and token index arrays say which row is whose.
    reserve_slot_zero keeps slot 0 unused (vLLM's null block, which its own kernels skip).
    """
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    hk, hv = cfg.num_k_heads // cfg.tp_size, cfg.num_v_heads // cfg.tp_size
    K, V, W = cfg.head_k_dim, cfg.head_v_dim, cfg.conv_width
    C, vd = 2 * hk * K + hv * V, hv * V
    non_spec_lens = list(decode_lens) + list(prefill_lens)
    spec_lens = list(spec_lens)
    assert all(1 <= L <= cfg.num_spec + 1 for L in spec_lens)
    n = sum(non_spec_lens) + sum(spec_lens)
    T = n + padding_rows
    act = cfg.dtype

    def randn(*shape, scale=1.0, dtype=torch.float32):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    # Token rows: each group's sequences stay contiguous in their group's index array, but
    # the groups' rows interleave in the full token array.
    both = bool(spec_lens) and bool(non_spec_lens)
    order = list(range(n))
    if both and interleave_groups:
        rng.shuffle(order)
    non_spec_rows = torch.tensor(order[:sum(non_spec_lens)], dtype=torch.int64)
    spec_rows = torch.tensor(order[sum(non_spec_lens):], dtype=torch.int64)

    first_slot = 1 if reserve_slot_zero else 0
    slots = (torch.randperm(cfg.num_slots - first_slot, generator=g) + first_slot).tolist()
    needed = len(non_spec_lens) + len(spec_lens) * (cfg.num_spec + 1)
    assert needed <= len(slots), "not enough cache slots for the batch"

    def start_loc(lens):
        return torch.tensor([0] + list(torch.tensor(lens).cumsum(0).tolist()), dtype=torch.int32)

    args = dict(
        core_attn_out=torch.full((T, hv, V), float("nan"), dtype=act),
        z=torch.full((T, hv, V), float("nan"), dtype=act),
        projected_states_qkvz=randn(T, C + vd, dtype=act),
        projected_states_ba=randn(T, 2 * hv, dtype=act),
        num_k_heads=cfg.num_k_heads, num_v_heads=cfg.num_v_heads,
        head_k_dim=K, head_v_dim=V,
        conv_state=randn(cfg.num_slots, W - 1 + cfg.num_spec, C, dtype=act),
        ssm_state=randn(cfg.num_slots, hv, V, K, scale=0.1, dtype=cfg.state_dtype),
        conv_weights=randn(C, W, scale=0.5),
        conv_bias=randn(C, scale=0.1) if cfg.has_bias else None,
        activation=cfg.activation,
        A_log=torch.log(torch.rand(hv, generator=g) * 15 + 1),
        dt_bias=randn(hv, scale=0.5),
        num_prefills=len(prefill_lens), num_decodes=len(decode_lens),
        num_spec_decodes=len(spec_lens),
        has_initial_state=None, non_spec_query_start_loc=None, non_spec_token_indx=None,
        non_spec_state_indices_tensor=None, spec_query_start_loc=None, spec_token_indx=None,
        spec_state_indices_tensor=None, num_accepted_tokens=None,
        num_actual_tokens=n, tp_size=cfg.tp_size, reorder_input=cfg.reorder_input,
    )
    if non_spec_lens:
        args["non_spec_query_start_loc"] = start_loc(non_spec_lens)
        args["non_spec_state_indices_tensor"] = torch.tensor(
            slots[:len(non_spec_lens)], dtype=torch.int32)
        args["has_initial_state"] = torch.tensor(
            [True] * len(decode_lens) + [rng.random() < 0.5 for _ in prefill_lens])
        if both:
            args["non_spec_token_indx"] = non_spec_rows
    if spec_lens:
        first = len(non_spec_lens)
        table = slots[first:first + len(spec_lens) * (cfg.num_spec + 1)]
        args["spec_query_start_loc"] = start_loc(spec_lens)
        args["spec_state_indices_tensor"] = torch.tensor(table, dtype=torch.int32).view(
            len(spec_lens), cfg.num_spec + 1)
        args["num_accepted_tokens"] = torch.tensor(
            [rng.randint(1, L) for L in spec_lens], dtype=torch.int32)
        if both:
            args["spec_token_indx"] = spec_rows
    return args


def clone_args(args: dict) -> dict:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
