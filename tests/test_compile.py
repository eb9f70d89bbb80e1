"""The layer op, the forward context, the GDN layer and the tiny Qwen3.5-style model under
torch.compile(fullgraph=True): one opaque node per GDN layer, no graph break, compiled ==
eager, both close to the float64 reference."""

import pytest
import torch

import gdn_xpu  # noqa: F401
from gdn_xpu.compile_report import capture
from gdn_xpu.forward_context import set_forward_context
from gdn_xpu.layer import GatedDeltaNet
from gdn_xpu.metadata import build_metadata
from gdn_xpu.model import TinyQwen35, TinyQwen35Config, forward_batch, generate, make_batch

from batches import assert_close

PROMPTS = [[3, 14, 15, 92, 65], [35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79, 50], [2, 71]]


@pytest.fixture(scope="module")
def model():
    return TinyQwen35(TinyQwen35Config(), seed=0).eval()


def prefill_logits(model, forward):
    model.allocate_caches(len(PROMPTS), 32)
    with torch.no_grad():
        return forward_batch(model, forward, PROMPTS, [0] * len(PROMPTS), "cpu")


def test_whole_model_traces_with_one_layer_op_per_gdn_layer(model):
    model.allocate_caches(len(PROMPTS), 32)
    batch = make_batch(PROMPTS, [0] * len(PROMPTS), "cpu")
    with torch.no_grad(), batch.forward_context(model):
        report = capture(model, *batch.inputs)
    assert report.graph_break_count == 0, report.break_reasons
    assert report.graph_count == 1
    # The only opaque nodes are the layer ops: everything else is for Inductor.
    assert report.custom_op_calls == {"gdn_xpu.gdn_attention_core_xpu": len(model.gdn_layers())}


def test_compiled_equals_eager_and_reference(model):
    eager = prefill_logits(model, model)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    out = prefill_logits(model, compiled)
    # Same kernels; Inductor may reassociate the float32 code around them.
    assert_close("compiled vs eager logits", out, eager, torch.float32)
    model.use_reference(True)
    try:
        ref = prefill_logits(model, model)
    finally:
        model.use_reference(False)
    assert_close("kernel vs reference logits", eager, ref, torch.float32)


def test_token_count_changes_recompile_once(model):
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    model.allocate_caches(3, 64)
    with torch.no_grad():
        for tokens in ([[1, 2, 3]], [[1, 2, 3, 4, 5, 6, 7]], [[4] * 11, [5] * 2], [[9]] * 3):
            forward_batch(model, compiled, tokens, [0] * len(tokens), "cpu")
    # The first call compiles static shapes, the second marks the token count dynamic.
    assert counter.frame_count == 2


def test_inductor_compiles_around_the_op(model):
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    _, codes = run_and_get_code(prefill_logits, model, compiled)
    code = "\n".join(codes)
    # Inductor generated fused kernels for the rest and calls the layer op once per GDN layer.
    assert "cpp_fused" in code
    assert code.count("torch.ops.gdn_xpu.gdn_attention_core_xpu.default(") == len(model.gdn_layers())


def test_generate_compiled_matches_eager(model):
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    eager_tokens = generate(model, PROMPTS, 6)
    compiled_tokens = generate(model, PROMPTS, 6, forward=compiled)
    assert compiled_tokens == eager_tokens
    model.use_reference(True)
    try:
        assert generate(model, PROMPTS, 6) == eager_tokens
    finally:
        model.use_reference(False)


def make_layer(layout="flat"):
    torch.manual_seed(0)
    layer = GatedDeltaNet(64, 2, 4, 64, 64, layout=layout, prefix="layers.0.linear_attn")
    layer.allocate_cache(4)
    return layer


def test_profiling_run_without_metadata_zeroes_outputs_and_keeps_state():
    layer = make_layer()
    conv, ssm = (t.clone() for t in layer.kv_cache)
    core = torch.full((5, 4, 64), float("nan"))
    z = torch.full((5, 4, 64), float("nan"))
    x = torch.randn(5, 64)
    with set_forward_context(None, {layer.prefix: layer}):
        torch.ops.gdn_xpu.gdn_attention_core_xpu(core, z, layer.in_proj_qkvz(x),
                                                 layer.in_proj_ba(x), layer.prefix)
        out = layer(x)
    assert torch.equal(core, torch.zeros_like(core)) and torch.equal(z, torch.zeros_like(z))
    assert torch.isfinite(out).all()
    assert torch.equal(layer.kv_cache[0], conv) and torch.equal(layer.kv_cache[1], ssm)


@pytest.mark.parametrize("layout", ["flat", "interleaved"])
def test_layer_kernel_path_matches_reference_path(layout):
    layer = make_layer(layout)
    plan = build_metadata([1, 6, 3], [4, 0, 2], [2, 0, 3])
    x = torch.randn(10, 64)
    layers = {layer.prefix: layer}
    for t in layer.kv_cache:
        t.normal_()
    cache = [t.clone() for t in layer.kv_cache]
    with set_forward_context({layer.prefix: plan.metadata}, layers), torch.no_grad():
        out = layer.forward_xpu(x)
        kernel_cache, layer.kv_cache = layer.kv_cache, cache
        ref = layer.forward_native(x)
    assert_close("layer output", out, ref, torch.float32)
    assert_close("ssm_state", kernel_cache[1], layer.kv_cache[1], torch.float32)


def test_clear_errors_for_missing_context_and_unknown_layer():
    layer = make_layer()
    x = torch.randn(2, 64)
    with pytest.raises((RuntimeError, AssertionError), match="orward context"):
        layer(x)
    with set_forward_context(None, {}):
        with pytest.raises(KeyError, match="not in the forward context"):
            layer(x)


def test_layer_op_opcheck():
    layer = make_layer()
    plan = build_metadata([1, 4], [3, 0], [1, 2])
    x = torch.randn(5, 64)
    with set_forward_context({layer.prefix: plan.metadata}, {layer.prefix: layer}):
        args = (torch.zeros(5, 4, 64), torch.zeros(5, 4, 64), layer.in_proj_qkvz(x).detach(),
                layer.in_proj_ba(x).detach(), layer.prefix)
        torch.library.opcheck(torch.ops.gdn_xpu.gdn_attention_core_xpu.default, args,
                              test_utils=("test_schema", "test_faketensor",
                                          "test_aot_dispatch_dynamic"))


def test_vllm_namespace_alias_without_vllm():
    import importlib.util
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("with vLLM installed the plugin registers the vllm-namespace op")
    assert torch.ops.vllm.gdn_attention_core_xpu.default._schema.name == "vllm::gdn_attention_core_xpu"


def test_vllm_plugin_without_vllm_is_harmless():
    import importlib.util

    from gdn_xpu import vllm_plugin

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed: see test_vllm_plugin.py")
    vllm_plugin.register()
    vllm_plugin.register()


def test_hf_qwen35_weight_names_load_into_the_model():
    from gdn_xpu.model import load_hf_weights

    source = TinyQwen35(TinyQwen35Config(), seed=1)
    hf = {}
    for name, tensor in source.state_dict().items():
        name = name if name.startswith("lm_head") else "model.language_model." + name
        if name.endswith("in_proj_qkvz.weight"):  # HF Qwen3.5 keeps the four projections apart
            layer = source.get_submodule(name.split("model.language_model.")[1].rsplit(".", 2)[0])
            qkv, z = tensor.split([layer.conv_dim, layer.value_dim])
            hf[name.replace("in_proj_qkvz", "in_proj_qkv")] = qkv
            hf[name.replace("in_proj_qkvz", "in_proj_z")] = z
        elif name.endswith("in_proj_ba.weight"):
            b, a = tensor.chunk(2)
            hf[name.replace("in_proj_ba", "in_proj_b")] = b
            hf[name.replace("in_proj_ba", "in_proj_a")] = a
        else:
            hf[name] = tensor
    target = TinyQwen35(TinyQwen35Config(), seed=2)
    load_hf_weights(target, hf)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="unexpected"):
        load_hf_weights(target, {**hf, "model.layers.0.bogus.weight": torch.zeros(1)})
