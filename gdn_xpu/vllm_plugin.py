"""vLLM plugin (entry point group vllm.general_plugins): vLLM calls register() at start in
every process. It

1. makes the layer op reachable as vllm::gdn_attention_core_xpu through vLLM's own
   direct_register_custom_op, unless vLLM already defines that name (its XPU build does, for
   vllm-xpu-kernels: then vLLM's op stays and this package's layer calls its own
   gdn_xpu::gdn_attention_core_xpu);
2. adds both layer-op names to CompilationConfig's attention (splitting) ops;
3. replaces vLLM's Qwen GDN layer (QwenGatedDeltaNetAttention, Qwen3-Next and Qwen3.5) with
   a subclass through PluggableLayer.register_oot, whose forward_xpu is one call of this
   package's layer op. On XPU that is the layer's path; on CPU it is taken only with
   GDN_XPU_VLLM_CPU=1 (the SYCL CPU device), else vLLM's own CPU kernels stay.

Calling register() twice, or without vLLM installed, does nothing more.
"""

import importlib.util
import os

import torch

LAYER_OP_NAMES = ("vllm::gdn_attention_core_xpu", "gdn_xpu::gdn_attention_core_xpu")
CPU_SWITCH = "GDN_XPU_VLLM_CPU"
_registered = False


def register() -> None:
    global _registered
    if _registered or importlib.util.find_spec("vllm") is None:
        return
    _registered = True
    _register_vllm_layer_op()
    _add_splitting_ops()
    _register_layer()


def routes_cpu_to_sycl() -> bool:
    return os.environ.get(CPU_SWITCH, "0") == "1"


def _register_vllm_layer_op() -> None:
    from vllm.platforms import current_platform
    from vllm.utils.torch_utils import direct_register_custom_op

    from gdn_xpu import ops

    if current_platform.is_xpu() and importlib.util.find_spec("vllm_xpu_kernels") is not None:
        import vllm._xpu_ops  # noqa: F401  (defines vllm::gdn_attention_core_xpu itself)
    if ops.has_schema("vllm::gdn_attention_core_xpu"):
        return
    direct_register_custom_op(
        op_name="gdn_attention_core_xpu", op_func=ops.gdn_attention_core_impl,
        mutates_args=["core_attn_out", "z"], fake_impl=ops.gdn_attention_core_fake)


def _add_splitting_ops() -> None:
    from vllm.config.compilation import CompilationConfig

    for name in LAYER_OP_NAMES:
        if name not in CompilationConfig._attention_ops:
            CompilationConfig._attention_ops.append(name)


def _register_layer() -> None:
    from vllm.model_executor.custom_op import PluggableLayer, op_registry_oot
    from vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn import (
        QwenGatedDeltaNetAttention)
    from vllm.platforms import current_platform

    if QwenGatedDeltaNetAttention.__name__ in op_registry_oot:
        return

    class GdnXpuQwenGatedDeltaNetAttention(QwenGatedDeltaNetAttention):
        """vLLM's Qwen GDN layer whose attention core is gdn_xpu's SYCL kernel."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if current_platform.is_xpu() or (current_platform.is_cpu() and routes_cpu_to_sycl()):
                self._forward_method = self.forward_xpu

        def forward_xpu(self, hidden_states: torch.Tensor) -> torch.Tensor:
            projected_states_qkvz, _ = self.in_proj_qkvz(hidden_states)
            projected_states_ba, _ = self.in_proj_ba(hidden_states)
            shape = (hidden_states.shape[0], self.num_v_heads // self.tp_size, self.head_v_dim)
            # The layer op writes both (zeros in a profiling run without metadata).
            core_attn_out = hidden_states.new_empty(shape)
            z = hidden_states.new_empty(shape)
            torch.ops.gdn_xpu.gdn_attention_core_xpu(
                core_attn_out, z, projected_states_qkvz, projected_states_ba, self.prefix)
            return self._output_projection(core_attn_out, z)

    PluggableLayer.register_oot(GdnXpuQwenGatedDeltaNetAttention,
                                name=QwenGatedDeltaNetAttention.__name__)
