"""The vLLM plugin at unit level: entry point, idempotent registration, the vllm-namespace layer
op, splitting ops under piecewise compilation, and the out-of-tree GDN layer."""

from importlib.metadata import entry_points

import pytest
import torch

pytest.importorskip("vllm")

from gdn_xpu import vllm_plugin  # noqa: E402


def test_entry_point_is_declared():
    names = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert names.get("gdn_xpu") == "gdn_xpu.vllm_plugin:register"


def test_register_twice_is_harmless():
    vllm_plugin.register()
    vllm_plugin.register()
    schema = torch.ops.vllm.gdn_attention_core_xpu.default._schema
    assert [a.name for a in schema.arguments] == [
        "core_attn_out", "z", "projected_states_qkvz", "projected_states_ba", "layer_name"]


def test_layer_op_is_a_splitting_op_under_piecewise_compilation():
    from vllm.config.compilation import CompilationConfig, CompilationMode

    vllm_plugin.register()
    config = CompilationConfig(mode=CompilationMode.VLLM_COMPILE)
    config.set_splitting_ops_for_v1("allgather_reducescatter")  # what an XPU/CUDA platform does
    for name in vllm_plugin.LAYER_OP_NAMES:
        assert name in config.splitting_ops


def test_qwen_gdn_layer_is_replaced_out_of_tree():
    from vllm.model_executor.custom_op import op_registry_oot
    from vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn import (
        QwenGatedDeltaNetAttention)

    vllm_plugin.register()
    replacement = op_registry_oot["QwenGatedDeltaNetAttention"]
    assert issubclass(replacement, QwenGatedDeltaNetAttention)
    assert replacement.forward_xpu is not QwenGatedDeltaNetAttention.forward_xpu


# vLLM 0.33's XPU backend choice, simulated with 0.32 installed (README, "Use with vLLM").

@pytest.mark.parametrize("additional_config,served", [
    ({}, True), (None, True), ({"gdn_prefill_backend": "auto"}, True),
    ({"gdn_prefill_backend": " SYCL "}, True), ({"gdn_prefill_backend": "triton"}, False),
    ({"gdn_prefill_backend": "flashinfer"}, False)])
def test_the_users_gdn_backend_choice_is_honoured(additional_config, served):
    import types

    config = types.SimpleNamespace(additional_config=additional_config)
    assert vllm_plugin.sycl_backend_requested(config) is served


def test_an_explicit_triton_choice_keeps_vllms_forward_xpu(monkeypatch):
    from vllm.model_executor.custom_op import op_registry_oot
    from vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn import (
        QwenGatedDeltaNetAttention)

    vllm_plugin.register()
    monkeypatch.setattr(QwenGatedDeltaNetAttention, "forward_xpu", lambda self, x: ("vllm", x))
    layer = object.__new__(op_registry_oot["QwenGatedDeltaNetAttention"])
    layer.__dict__["served_by_gdn_xpu"] = False
    assert layer.forward_xpu("hidden") == ("vllm", "hidden")


def test_raw_op_is_provided_only_to_a_loaded_namespace_that_lacks_it():
    from batches import GDNConfig, clone_args, make_batch

    loaded = torch.library.Library("_gdn_xpu_test_ns", "DEF")  # stands in for vllm-xpu-kernels
    loaded.define("other(Tensor x) -> Tensor")
    assert not vllm_plugin.provide_raw_op("_gdn_xpu_test_absent_ns")
    assert vllm_plugin.provide_raw_op("_gdn_xpu_test_ns")
    assert not vllm_plugin.provide_raw_op("_gdn_xpu_test_ns")  # already there: left alone
    # The same schema and the same kernel as torch.ops.gdn_xpu.gdn_attention.
    assert str(torch.ops._gdn_xpu_test_ns.gdn_attention.default._schema).split("::")[1] == \
        str(torch.ops.gdn_xpu.gdn_attention.default._schema).split("::")[1]
    args = make_batch(GDNConfig(2, 4, 64, 64, num_spec=1), decode_lens=(1,), spec_lens=(2,))
    ours = clone_args(args)
    torch.ops._gdn_xpu_test_ns.gdn_attention(**args)
    torch.ops.gdn_xpu.gdn_attention(**ours)
    for name in ("core_attn_out", "z", "conv_state", "ssm_state"):
        assert torch.equal(args[name].nan_to_num(7.0), ours[name].nan_to_num(7.0)), name


def test_layer_op_body_is_wrapped_for_graph_capture(monkeypatch):
    import sys
    import types

    from gdn_xpu import ops

    wrapped = []
    fake = types.ModuleType("vllm.compilation.breakable_cudagraph")
    fake.eager_break_during_capture = lambda fn: wrapped.append(fn) or (lambda *a: ("eager", fn))
    monkeypatch.setitem(sys.modules, "vllm.compilation.breakable_cudagraph", fake)
    monkeypatch.setattr(ops, "layer_op_body", ops.layer_op_body)
    vllm_plugin._wrap_layer_op_for_graph_capture()
    assert wrapped == [ops.run_layer]
    assert ops.layer_op_body() == ("eager", ops.run_layer)
