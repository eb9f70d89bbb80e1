"""vLLM plugin (entry point group vllm.general_plugins): vLLM calls register() at start in
every process. It

1. makes the layer op reachable as vllm::gdn_attention_core_xpu through vLLM's own
   direct_register_custom_op, unless vLLM already defines that name (its XPU build does, for
   vllm-xpu-kernels: then vLLM's op stays and this package's layer calls its own
   gdn_xpu::gdn_attention_core_xpu);
2. adds both layer-op names to CompilationConfig's attention (splitting) ops;
3. replaces vLLM's Qwen GDN layer (QwenGatedDeltaNetAttention, Qwen3-Next and Qwen3.5) with
   a subclass through PluggableLayer.register_oot, whose forward_xpu is one call of this
   package's layer op. On XPU that is the layer's path unless the user asked vLLM (0.33's
   --gdn-prefill-backend, additional_config["gdn_prefill_backend"]) for a backend other than
   "auto" or "sycl": then vLLM's own forward_xpu runs (Triton). On CPU it is taken only with
   GDN_XPU_VLLM_CPU=1 (the SYCL CPU device), else vLLM's own CPU kernels stay;
4. on XPU, when vllm-xpu-kernels is loaded but was built without its GDN op, defines
   _xpu_C::gdn_attention as this package's raw op (the schemas are identical), so vLLM 0.33's
   "sycl" backend and its own XPU layer run this kernel instead of refusing or falling back
   (GDN_XPU_PROVIDE_XPU_C=0 turns this off). Only into a namespace that is already loaded
   and lacks the op: a library loaded later could not define it again;
5. wraps the layer op's body in vLLM's eager_break_during_capture where vLLM provides it, as
   vLLM does for its own layer op (XPU graph capture);
6. marks the spec rows of requests that have no state yet: vLLM's scheduler pads a new
   one-token prompt to 1 + num_spec tokens (draft ids -1) when it joins running decodes, and
   vLLM's GDN metadata then makes it a spec row, which reads its freshly allocated, recycled
   slots as if they held its state. The plugin wraps GDNAttentionMetadataBuilder.build to list
   those rows (num_computed_tokens 0, from host-side counts: no device read), and the layer op
   zeroes their slots' SSM and conv states before the kernel: a zero state is exactly a new
   sequence's (README, "Known vLLM behaviour"). GDN_XPU_FRESH_SPEC_GUARD=0 turns it off.

Calling register() twice, or without vLLM installed, does nothing more.
"""

import importlib.util
import logging
import os

import torch

logger = logging.getLogger(__name__)

LAYER_OP_NAMES = ("vllm::gdn_attention_core_xpu", "gdn_xpu::gdn_attention_core_xpu")
CPU_SWITCH = "GDN_XPU_VLLM_CPU"
XPU_C_SWITCH = "GDN_XPU_PROVIDE_XPU_C"
FRESH_SPEC_SWITCH = "GDN_XPU_FRESH_SPEC_GUARD"
FRESH_SPEC_ROWS = "gdn_xpu_fresh_spec_rows"  # attribute set on vLLM's GDNAttentionMetadata
SYCL_BACKENDS = ("auto", "sycl")  # vLLM 0.33's gdn_prefill_backend values that ask for SYCL
_registered = False
_provided_libraries: list = []  # torch.library.Library objects must stay alive


def register() -> None:
    global _registered
    if _registered or importlib.util.find_spec("vllm") is None:
        return
    _registered = True
    _provide_xpu_c_gdn_attention()
    _register_vllm_layer_op()
    _wrap_layer_op_for_graph_capture()
    _add_splitting_ops()
    _register_layer()
    _mark_fresh_spec_rows()


def routes_cpu_to_sycl() -> bool:
    return os.environ.get(CPU_SWITCH, "0") == "1"


def sycl_backend_requested(vllm_config) -> bool:
    """Whether the user's GDN backend choice (vLLM 0.33: --gdn-prefill-backend, kept in
    additional_config["gdn_prefill_backend"], default "auto") lets the SYCL kernel serve."""
    extra = getattr(vllm_config, "additional_config", None)
    requested = extra.get("gdn_prefill_backend", "auto") if isinstance(extra, dict) else "auto"
    return str(requested).strip().lower() in SYCL_BACKENDS


def provide_raw_op(namespace: str) -> bool:
    """Define <namespace>::gdn_attention as this package's raw op if the namespace is loaded
    (some op of it is registered) and lacks it. Returns whether it did."""
    from gdn_xpu import ops

    loaded = any(name.startswith(namespace + "::") for name in torch._C._dispatch_get_all_op_names())
    if not loaded or ops.has_schema(f"{namespace}::gdn_attention"):
        return False
    lib = torch.library.Library(namespace, "FRAGMENT")
    ops.define_raw_op(lib)
    _provided_libraries.append(lib)
    return True


def _provide_xpu_c_gdn_attention() -> None:
    from vllm.platforms import current_platform

    if not current_platform.is_xpu() or os.environ.get(XPU_C_SWITCH, "1") == "0":
        return
    try:
        import vllm_xpu_kernels._xpu_C  # noqa: F401  (vLLM's XPU platform loads it too)
    except ImportError:
        return
    if provide_raw_op("_xpu_C"):
        logger.info("gdn_xpu: vllm-xpu-kernels has no gdn_attention; _xpu_C::gdn_attention "
                    "is gdn_xpu's kernel")


def _wrap_layer_op_for_graph_capture() -> None:
    from gdn_xpu import ops

    try:
        from vllm.compilation.breakable_cudagraph import eager_break_during_capture
    except ImportError:  # a vLLM without breakable graph capture
        return
    ops.layer_op_body = eager_break_during_capture(ops.run_layer)


def fresh_spec_rows(metadata, common, num_decode_draft_tokens_cpu):
    """Indices (among the spec rows of `metadata`) of non-empty spec rows whose request has no
    computed token yet, as a tensor on the metadata's device, or None. Host-side counts only
    (query_start_loc_cpu, seq_lens_cpu_upper_bound): an upper bound of the sequence length, so
    a row found here has no state for certain."""
    ns = getattr(metadata, "num_spec_decodes", 0)
    bound = getattr(common, "seq_lens_cpu_upper_bound", None)
    if not ns or num_decode_draft_tokens_cpu is None or bound is None:
        return None
    query_lens = common.query_start_loc_cpu.diff()
    rows = (num_decode_draft_tokens_cpu[:query_lens.numel()] >= 0).nonzero().flatten()[:ns]
    computed = bound[:query_lens.numel()].to(query_lens.dtype) - query_lens
    fresh = ((computed[rows] == 0) & (query_lens[rows] > 0)).nonzero().flatten()
    if not fresh.numel():
        return None
    return fresh.to(metadata.spec_state_indices_tensor.device, non_blocking=True)


def _mark_fresh_spec_rows() -> None:
    if os.environ.get(FRESH_SPEC_SWITCH, "1") == "0":
        return
    try:
        from vllm.v1.attention.backends.gdn_attn import GDNAttentionMetadataBuilder
    except ImportError:
        return
    build = GDNAttentionMetadataBuilder.build
    if getattr(build, "_gdn_xpu_marks_fresh_spec_rows", False):
        return

    def build_marking_fresh_spec_rows(self, common_prefix_len, common_attn_metadata,
                                      num_accepted_tokens=None,
                                      num_decode_draft_tokens_cpu=None, fast_build=False):
        metadata = build(self, common_prefix_len, common_attn_metadata, num_accepted_tokens,
                         num_decode_draft_tokens_cpu, fast_build)
        setattr(metadata, FRESH_SPEC_ROWS, fresh_spec_rows(
            metadata, common_attn_metadata, num_decode_draft_tokens_cpu))
        return metadata

    build_marking_fresh_spec_rows._gdn_xpu_marks_fresh_spec_rows = True
    GDNAttentionMetadataBuilder.build = build_marking_fresh_spec_rows


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
    from vllm.config import get_current_vllm_config
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
            if current_platform.is_xpu():
                self.served_by_gdn_xpu = sycl_backend_requested(get_current_vllm_config())
            else:
                self.served_by_gdn_xpu = current_platform.is_cpu() and routes_cpu_to_sycl()
            if self.served_by_gdn_xpu:
                self._forward_method = self.forward_xpu

        def forward_xpu(self, hidden_states: torch.Tensor) -> torch.Tensor:
            if not self.served_by_gdn_xpu:  # the user asked vLLM for another backend
                return super().forward_xpu(hidden_states)
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
