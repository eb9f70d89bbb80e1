"""Property-based tests (hypothesis, fixed budget, derandomised for CI): random valid batches
match the reference; randomly corrupted index tensors are either refused with nothing written
or, when still valid, give exactly what the reference gives."""

import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import gdn_xpu  # noqa: F401
from gdn_xpu.reference import gdn_attention_reference

from batches import GDNConfig, assert_close, clone_args, make_batch

FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def batches(draw):
    num_spec = draw(st.sampled_from([0, 2]))
    cfg = GDNConfig(num_k_heads=2, num_v_heads=2 * draw(st.sampled_from([1, 2])),
                    head_k_dim=64, head_v_dim=64,
                    dtype=draw(st.sampled_from([torch.float32, torch.bfloat16])),
                    reorder_input=draw(st.booleans()), has_bias=draw(st.booleans()),
                    num_spec=num_spec, num_slots=16)
    shape = dict(
        decode_lens=(1,) * draw(st.integers(0, 3)),
        prefill_lens=tuple(draw(st.lists(st.integers(1, 24), max_size=3))),
        spec_lens=tuple(draw(st.lists(st.integers(1, num_spec + 1), max_size=2)))
        if num_spec else (),
        seed=draw(st.integers(0, 2 ** 16)),
        padding_rows=draw(st.integers(0, 3)),
    )
    assume(shape["decode_lens"] or shape["prefill_lens"] or shape["spec_lens"])
    return cfg, shape


def compare_all(args, ref, cfg):
    n = args["num_actual_tokens"]
    assert_close("core_attn_out", args["core_attn_out"][:n], ref["core_attn_out"][:n], cfg.dtype)
    assert_close("z", args["z"][:n], ref["z"][:n], cfg.dtype)
    assert_close("conv_state", args["conv_state"], ref["conv_state"], cfg.dtype)
    assert_close("ssm_state", args["ssm_state"], ref["ssm_state"], cfg.state_dtype)


@FUZZ
@given(batches())
def test_random_valid_batches_match_the_reference(batch):
    cfg, shape = batch
    args = make_batch(cfg, **shape)
    ref = clone_args(args)
    torch.ops.gdn_xpu.gdn_attention(**args)
    gdn_attention_reference(**ref)
    compare_all(args, ref, cfg)


INDEX_TENSORS = ["non_spec_query_start_loc", "non_spec_state_indices_tensor",
                 "non_spec_token_indx", "spec_query_start_loc", "spec_state_indices_tensor",
                 "spec_token_indx", "num_accepted_tokens"]


@FUZZ
@given(batches(), st.sampled_from(INDEX_TENSORS), st.integers(0, 64), st.integers(-3, 40))
def test_corrupted_indices_are_refused_or_exact(batch, name, position, value):
    cfg, shape = batch
    args = make_batch(cfg, **shape)
    assume(args[name] is not None and args[name].numel() > 0)
    corrupted = args[name].clone()
    corrupted.view(-1)[position % corrupted.numel()] = value
    args[name] = corrupted
    before = clone_args(args)
    try:
        torch.ops.gdn_xpu.gdn_attention(**args)
    except (ValueError, TypeError):
        for key, tensor in args.items():
            if isinstance(tensor, torch.Tensor):
                assert torch.equal(tensor.nan_to_num(7.0), before[key].nan_to_num(7.0)), key
        return
    # Accepted: the batch is still valid, so the result must be the reference's.
    gdn_attention_reference(**before)
    compare_all(args, before, cfg)
