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
