"""The raw op torch.ops.gdn_xpu.gdn_attention (SYCL kernels on the CPU SYCL device) against
the float64 reference, over layouts, GQA, tensor parallel, batch kinds, dtypes and head dims.

Every comparison uses the FLA metric (RMS(ref - out) / RMS(ref)) plus max-abs, with
tolerances per dtype from batches.TOLERANCES, on all four outputs (core_attn_out, z,
conv_state, ssm_state), and checks that padding rows and unused cache slots are untouched.
"""

import pytest
import torch

import gdn_xpu  # noqa: F401
from batches import GDNConfig, assert_close, clone_args, make_batch, run_against_reference


@pytest.fixture(autouse=True)
def chunked_prefill_from_64_tokens(monkeypatch):
    # The launcher keeps every sequence on the recurrent kernel on the CPU device (faster there);
    # here prefills of 64+ tokens take the chunked kernel, as on GPUs.
    monkeypatch.setenv("GDN_XPU_CHUNKED_FROM", "64")


def run_and_compare(cfg: GDNConfig, **batch_kwargs):
    return run_against_reference(make_batch(cfg, **batch_kwargs))


BATCHES = {
    "decode": dict(decode_lens=(1,) * 5),
    "prefill": dict(prefill_lens=(7, 1, 23, 3)),
    "mixed": dict(decode_lens=(1, 1, 1), prefill_lens=(9, 2, 17)),
    "spec": dict(spec_lens=(3, 1, 2, 3)),
    "spec+prefill": dict(decode_lens=(1,), prefill_lens=(6, 11), spec_lens=(3, 2)),
    # 64+ tokens take the chunked prefill kernel: one whole chunk, two chunks and a ragged
    # third, next to a short prefill and decodes on the recurrent one.
    "long prefill": dict(decode_lens=(1, 1), prefill_lens=(64, 5, 130)),
    "spec+long prefill": dict(decode_lens=(1,), prefill_lens=(70,), spec_lens=(3, 2)),
}


@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("ratio", [1, 2, 4])
@pytest.mark.parametrize("reorder_input", [True, False], ids=["flat", "interleaved"])
def test_layouts_gqa_and_batch_kinds(batch, ratio, reorder_input):
    cfg = GDNConfig(num_k_heads=2, num_v_heads=2 * ratio, head_k_dim=64, head_v_dim=64,
                    dtype=torch.float32, reorder_input=reorder_input,
                    num_spec=2 if "spec" in batch else 0)
    run_and_compare(cfg, **BATCHES[batch], seed=hash((batch, ratio, reorder_input)) % 1000)


@pytest.mark.parametrize("batch", [b for b in BATCHES if "spec" in b])
@pytest.mark.parametrize("ratio", [1, 3])
@pytest.mark.parametrize("reorder_input", [True, False], ids=["flat", "interleaved"])
def test_spec_conv_per_slot_layout(batch, ratio, reorder_input):
    # W-1 conv rows per slot (vllm-xpu-kernels' layout): acc = 0 is legal there.
    cfg = GDNConfig(num_k_heads=2, num_v_heads=2 * ratio, head_k_dim=64, head_v_dim=64,
                    reorder_input=reorder_input, num_spec=2, spec_conv_per_slot=True)
    run_and_compare(cfg, **BATCHES[batch], seed=hash((batch, ratio, reorder_input)) % 1000)


@pytest.mark.parametrize("tp_size", [2, 4])
def test_tensor_parallel_rank_shapes(tp_size):
    # Global head counts as arguments, per-rank tensors.
    cfg = GDNConfig(num_k_heads=4, num_v_heads=8, head_k_dim=64, head_v_dim=64,
                    tp_size=tp_size, dtype=torch.float32, reorder_input=False)
    run_and_compare(cfg, **BATCHES["mixed"], seed=tp_size)


@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize("activation", ["silu", "identity"])
def test_conv_bias_and_activation(has_bias, activation):
    cfg = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64,
                    dtype=torch.float32, has_bias=has_bias, activation=activation)
    run_and_compare(cfg, **BATCHES["mixed"], seed=11)


@pytest.mark.parametrize("dtype,state_dtype", [
    (torch.bfloat16, torch.float32), (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.float32), (torch.float16, torch.float16), (torch.float16, torch.bfloat16),
    (torch.float32, torch.float32), (torch.float32, torch.bfloat16)])
def test_dtypes(dtype, state_dtype):
    cfg = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=128, head_v_dim=128, dtype=dtype,
                    state_dtype=state_dtype, num_spec=2)
    run_and_compare(cfg, decode_lens=(1, 1), prefill_lens=(13, 4, 100), spec_lens=(3,), seed=5)


# The kernels read conv weights, A_log and dt_bias fp32 or in the activation dtype, as the layer
# holds them (vLLM's bf16 model: bf16 weights and dt_bias, fp32 A_log); any other dtype is
# converted to fp32 first. Decodes, a recurrent prefill and a chunked one.
@pytest.mark.parametrize("param_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_parameter_dtypes(param_dtype):
    cfg = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64,
                    dtype=torch.bfloat16)
    args = make_batch(cfg, decode_lens=(1, 1, 1), prefill_lens=(9, 70), seed=21)
    for name in ("conv_weights", "conv_bias", "A_log", "dt_bias"):
        args[name] = args[name].to(param_dtype)
    run_against_reference(args)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_long_prefills_on_the_recurrent_kernel_too(dtype, monkeypatch):
    monkeypatch.setenv("GDN_XPU_CHUNKED_FROM", "0")  # never chunked
    cfg = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64, dtype=dtype)
    run_and_compare(cfg, **BATCHES["long prefill"], seed=12)


# (256, 96) and (256, 160): the CPU device's prefill takes 1 and 2 rows per lane (4 otherwise).
@pytest.mark.parametrize("head_k_dim,head_v_dim",
                         [(64, 64), (128, 128), (256, 256), (128, 64), (256, 96), (256, 160)])
def test_head_dims(head_k_dim, head_v_dim):
    cfg = GDNConfig(num_k_heads=1, num_v_heads=2, head_k_dim=head_k_dim, head_v_dim=head_v_dim,
                    dtype=torch.bfloat16)
    run_and_compare(cfg, **BATCHES["long prefill"], seed=3)


def test_many_heads():
    cfg = GDNConfig(num_k_heads=16, num_v_heads=32, head_k_dim=64, head_v_dim=64,
                    dtype=torch.bfloat16)
    run_and_compare(cfg, decode_lens=(1,) * 3, prefill_lens=(5,), seed=9)


def test_one_token_prefill_without_state():
    cfg = GDNConfig(num_k_heads=1, num_v_heads=2, head_k_dim=64, head_v_dim=64,
                    dtype=torch.float32)
    run_and_compare(cfg, prefill_lens=(1,), seed=1)


def test_16k_token_prefill():
    cfg = GDNConfig(num_k_heads=1, num_v_heads=1, head_k_dim=64, head_v_dim=64,
                    dtype=torch.bfloat16)
    args, _ = run_and_compare(cfg, prefill_lens=(16384,), seed=2, padding_rows=1)
    assert torch.isfinite(args["ssm_state"]).all()


@pytest.mark.parametrize("split", [(12, 8), (70, 90)], ids=["recurrent", "chunked"])
def test_prefill_in_two_calls_equals_one(split):
    # A prefill split in two calls (the second with has_initial_state) carries conv and SSM
    # state over exactly like one call: the kernel against itself across calls, and the reference.
    cfg = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64,
                    dtype=torch.float32, num_slots=1)
    head, tail = split
    whole = make_batch(cfg, prefill_lens=(head + tail,), seed=4, padding_rows=0)
    first = clone_args(whole)
    # The first `head` tokens, then the `tail` continuing from the cache.
    for name in ("projected_states_qkvz", "projected_states_ba", "core_attn_out", "z"):
        first[name] = whole[name][:head].clone()
    first["non_spec_query_start_loc"] = torch.tensor([0, head], dtype=torch.int32)
    first["num_actual_tokens"] = head
    second = dict(first)
    for name in ("projected_states_qkvz", "projected_states_ba", "core_attn_out", "z"):
        second[name] = whole[name][head:].clone()
    second["non_spec_query_start_loc"] = torch.tensor([0, tail], dtype=torch.int32)
    second["num_actual_tokens"] = tail
    second["has_initial_state"] = torch.ones(1, dtype=torch.bool)
    torch.ops.gdn_xpu.gdn_attention(**first)
    torch.ops.gdn_xpu.gdn_attention(**second)
    torch.ops.gdn_xpu.gdn_attention(**whole)
    out = torch.cat([first["core_attn_out"], second["core_attn_out"]])
    assert_close("core_attn_out", out, whole["core_attn_out"], cfg.dtype)
    assert_close("ssm_state", second["ssm_state"], whole["ssm_state"], cfg.state_dtype)
    assert_close("conv_state", second["conv_state"], whole["conv_state"], cfg.dtype)


def test_opcheck():
    cfg = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64,
                    dtype=torch.float32, num_spec=2)
    args = make_batch(cfg, decode_lens=(1,), prefill_lens=(5,), spec_lens=(2,), seed=6)
    for name in ("core_attn_out", "z"):
        args[name] = torch.zeros_like(args[name])  # opcheck compares outputs: no NaN sentinel
    torch.library.opcheck(torch.ops.gdn_xpu.gdn_attention.default, (), args)


def test_registered_for_cpu_and_xpu_with_the_vllm_xpu_kernels_schema():
    from gdn_xpu.ops import GDN_ATTENTION_SCHEMA

    for key in ("CPU", "XPU"):  # XPU: registered and compiled in, unverified on hardware here
        assert torch._C._dispatch_has_kernel_for_dispatch_key("gdn_xpu::gdn_attention", key)
    expected = torch._C.parse_schema("gdn_xpu::" + GDN_ATTENTION_SCHEMA)
    assert torch.ops.gdn_xpu.gdn_attention.default._schema == expected
    assert [a.name for a in expected.arguments if a.alias_info and a.alias_info.is_write] == [
        "core_attn_out", "z", "conv_state", "ssm_state"]
