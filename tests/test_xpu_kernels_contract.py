"""The contract of vllm-xpu-kernels' fused torch.ops._xpu_C.gdn_attention, which our raw op
replaces: the case families of that project's own tests (tests/gdn_attn/test_gdn_attn.py and
test_gdn_attn_padded.py of vllm-project/vllm-xpu-kernels), written here against our float64
reference. What those tests do that our other tests do not:

- Qwen3-Next-sized heads (16 k, 32 v, 128 dims), fp16 and bf16 activations, the SSM state in
  fp32 or in the activation dtype (fp16 included);
- decodes and prefills in any order, with the one-token sequences *without* an initial state;
- the spec conv history in W-1 rows per slot (never W-1+num_spec), every spec row num_spec+1
  tokens, num_accepted_tokens from 0 (read as column max(acc-1, 0)) to num_spec+1, spec tokens
  in shuffled rows after the non-spec ones (spec_token_indx), an identity non_spec_token_indx;
- GQA ratio 3 and 48 v-heads, tp 4 with global head counts, a conv width of 2;
- leading dimensions padded past num_actual_tokens, whose rows must stay exactly as they were.
"""

import random

import pytest
import torch

import gdn_xpu  # noqa: F401

from batches import GDNConfig, assert_close, clone_args, make_batch, run_against_reference


@pytest.fixture(autouse=True)
def chunked_prefill_from_64_tokens(monkeypatch):
    monkeypatch.setenv("GDN_XPU_CHUNKED_FROM", "64")  # as on GPUs (test_gdn_attention.py)


def upstream_style_batch(cfg: GDNConfig, *, num_tokens=0, mode="prefill", num_spec_decodes=0,
                         seed=0) -> dict:
    """A batch built the way those tests build theirs: num_tokens non-spec tokens in
    min(32, num_tokens) sequences (decode mode: all one-token; prefill: all prefills of >= 1
    token; mix: some of each), in a random order, the one-token decodes without an initial
    state; then num_spec_decodes spec sequences of num_spec+1 tokens each."""
    rng = random.Random(seed)
    batch = min(32, num_tokens)
    num_prefills = {"prefill": batch, "decode": 0, "mix": max(1, rng.randint(1, max(1, batch - 1)))
                    }[mode] if batch else 0
    num_decodes = batch - num_prefills
    assert mode != "decode" or num_tokens == batch, "decode mode: one token per sequence"
    prefill_lens = [1] * num_prefills
    for _ in range(num_tokens - batch):  # the remaining tokens go to random prefills
        prefill_lens[rng.randrange(num_prefills)] += 1
    lens = [1] * num_decodes + prefill_lens
    rng.shuffle(lens)
    args = make_batch(cfg, prefill_lens=lens, spec_lens=[cfg.num_spec + 1] * num_spec_decodes,
                      interleave_groups=False, seed=seed)
    # make_batch counts every non-spec sequence as a prefill; only the counts' sum matters.
    args["num_decodes"], args["num_prefills"] = num_decodes, num_prefills
    if batch:
        args["has_initial_state"] = torch.tensor([L > 1 for L in lens]) if mode != "prefill" \
            else torch.ones(batch, dtype=torch.bool)
    if batch and num_spec_decodes:
        n_non_spec = sum(lens)
        spec_rows = num_spec_decodes * (cfg.num_spec + 1)
        gen = torch.Generator().manual_seed(seed)
        args["non_spec_token_indx"] = torch.arange(n_non_spec, dtype=torch.int32)
        args["spec_token_indx"] = (n_non_spec + torch.randperm(spec_rows, generator=gen)).int()
    return args


def one_prefill_with_state(cfg: GDNConfig, num_tokens: int) -> dict:
    args = make_batch(cfg, prefill_lens=(num_tokens,), seed=num_tokens)
    args["has_initial_state"] = torch.ones(1, dtype=torch.bool)
    return args


DTYPES = [(torch.float16, torch.float16), (torch.float16, torch.float32),
          (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32)]
DTYPE_IDS = ["f16-f16state", "f16-f32state", "bf16-bf16state", "bf16-f32state"]


def qwen3_next_heads(dtype, state_dtype, reorder_input, has_bias, num_slots, **kw) -> GDNConfig:
    return GDNConfig(num_k_heads=16, num_v_heads=32, head_k_dim=128, head_v_dim=128,
                     dtype=dtype, state_dtype=state_dtype, reorder_input=reorder_input,
                     has_bias=has_bias, num_slots=num_slots, **kw)


# Upstream's token counts are 1, 32, 1024 and 8192; 100 here (prefills past 64 tokens take the
# chunked kernel, with a ragged last chunk) keeps the float64 reference's time in bounds.
@pytest.mark.parametrize("num_tokens,mode", [(1, "prefill"), (1, "decode"), (32, "decode"),
                                             (32, "mix"), (100, "prefill"), (100, "mix")])
@pytest.mark.parametrize("reorder_input", [True, False], ids=["flat", "interleaved"])
@pytest.mark.parametrize("dtype,state_dtype", DTYPES, ids=DTYPE_IDS)
def test_legacy_fused_grid(num_tokens, mode, reorder_input, dtype, state_dtype):
    seed = hash((num_tokens, mode, reorder_input, str(dtype), str(state_dtype))) % 1000
    cfg = qwen3_next_heads(dtype, state_dtype, reorder_input, has_bias=seed % 2 == 0,
                           num_slots=min(32, num_tokens) + 2)
    run_against_reference(upstream_style_batch(cfg, num_tokens=num_tokens, mode=mode, seed=seed))


@pytest.mark.parametrize("num_spec_decodes", [1, 4])
@pytest.mark.parametrize("num_spec", [1, 2])
@pytest.mark.parametrize("num_tokens", [1, 100])
@pytest.mark.parametrize("reorder_input", [True, False], ids=["flat", "interleaved"])
@pytest.mark.parametrize("dtype,state_dtype", DTYPES[::3], ids=DTYPE_IDS[::3])
def test_mixed_spec_and_non_spec(num_spec_decodes, num_spec, num_tokens, reorder_input, dtype,
                                 state_dtype):
    seed = hash((num_spec_decodes, num_spec, num_tokens, reorder_input, str(dtype))) % 1000
    cfg = qwen3_next_heads(dtype, state_dtype, reorder_input, has_bias=seed % 2 == 0,
                           num_slots=min(32, num_tokens) + num_spec_decodes * (num_spec + 1) + 2,
                           num_spec=num_spec, spec_conv_per_slot=True)
    args = upstream_style_batch(cfg, num_tokens=num_tokens, mode="mix",
                                num_spec_decodes=num_spec_decodes, seed=seed)
    args["num_accepted_tokens"][0] = 0  # legal in this layout: read as column 0
    run_against_reference(args)


@pytest.mark.parametrize("reorder_input", [True, False], ids=["flat", "interleaved"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gqa_ratio_3_prefill(reorder_input, dtype):
    cfg = GDNConfig(num_k_heads=2, num_v_heads=6, head_k_dim=128, head_v_dim=128, dtype=dtype,
                    state_dtype=dtype, reorder_input=reorder_input, num_slots=4)
    run_against_reference(one_prefill_with_state(cfg, 16))


@pytest.mark.parametrize("tp_size", [1, 4])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_48_v_heads_and_tp_4(tp_size, dtype):
    # Qwen3.6-27B's heads: 48 v-heads (ratio 3); under tp 4, 4 k- and 12 v-heads per rank, so
    # 2560 conv channels, not a multiple of any work-group size.
    cfg = GDNConfig(num_k_heads=16, num_v_heads=48, head_k_dim=128, head_v_dim=128, dtype=dtype,
                    state_dtype=dtype, reorder_input=False, tp_size=tp_size, num_slots=4)
    run_against_reference(one_prefill_with_state(cfg, 64))


@pytest.mark.parametrize("num_actual_tokens,padded_size", [(1, 4), (3, 4), (5, 8)])
def test_padded_leading_dimension(num_actual_tokens, padded_size):
    # Decodes in tensors of padded_size rows: the result equals a run on exactly-sized tensors,
    # and the padding rows of core_attn_out and z stay zero.
    cfg = GDNConfig(num_k_heads=1, num_v_heads=1, head_k_dim=32, head_v_dim=32, conv_width=2,
                    dtype=torch.bfloat16, has_bias=False, reorder_input=False)
    padded = make_batch(cfg, decode_lens=[1] * num_actual_tokens,
                        padding_rows=padded_size - num_actual_tokens, seed=num_actual_tokens)
    for name in ("projected_states_qkvz", "projected_states_ba", "core_attn_out", "z"):
        padded[name][num_actual_tokens:] = 0
    exact = clone_args(padded)
    for name in ("projected_states_qkvz", "projected_states_ba", "core_attn_out", "z"):
        exact[name] = exact[name][:num_actual_tokens].clone()
    torch.ops.gdn_xpu.gdn_attention(**exact)
    run_against_reference(padded)
    for name in ("core_attn_out", "z"):
        assert_close(name, padded[name][:num_actual_tokens], exact[name], cfg.dtype)
        assert not padded[name][num_actual_tokens:].any(), f"{name}: padding rows written"
    for name in ("conv_state", "ssm_state"):
        assert torch.equal(padded[name], exact[name]), name
