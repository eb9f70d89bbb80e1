"""End to end inside real vLLM (vllm-cpu): a tiny random Qwen3-Next checkpoint generated with
vLLM's default compilation (Dynamo + Inductor on CPU), once with the plugin routing the GDN
layers to gdn_xpu's op on the SYCL CPU device and once with vLLM's own CPU GDN kernels."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

pytest.importorskip("vllm")

HERE = pathlib.Path(__file__).parent
LOGPROB_TOL = 0.05  # bf16 model: |logprob(gdn_xpu) - logprob(vLLM-CPU)| per generated token


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3NextConfig(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        layer_types=["linear_attention"] * 3 + ["full_attention"], num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, linear_num_key_heads=2, linear_num_value_heads=4,
        linear_key_head_dim=128, linear_value_head_dim=128, linear_conv_kernel_dim=4,
        # vLLM's Qwen3-Next needs one MoE layer at least: only the last layer is MoE.
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
        shared_expert_intermediate_size=64, decoder_sparse_step=1, mlp_only_layers=[0, 1, 2],
        max_position_embeddings=512, tie_word_embeddings=False)
    cfg.architectures = ["Qwen3NextForCausalLM"]
    path = tmp_path_factory.mktemp("tiny_qwen3_next")
    Qwen3NextForCausalLM(cfg).to(torch.bfloat16).save_pretrained(path)
    return path


def generate(checkpoint, tmp_path, route_to_gdn_xpu: bool) -> dict:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           "VLLM_CACHE_ROOT": str(tmp_path / ("gdn_xpu" if route_to_gdn_xpu else "vllm")),
           "GDN_XPU_VLLM_CPU": "1" if route_to_gdn_xpu else "0"}
    result = subprocess.run([sys.executable, str(HERE / "vllm_generate.py"), str(checkpoint)],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_generation_matches_vllm_cpu_gdn(checkpoint, tmp_path):
    ours = generate(checkpoint, tmp_path, route_to_gdn_xpu=True)
    theirs = generate(checkpoint, tmp_path, route_to_gdn_xpu=False)
    # Routing: gdn_xpu's kernel ran in the plugin run only, and its layer op is a node of the
    # graph vLLM compiled.
    assert ours["raw_op_calls"] > 0 and theirs["raw_op_calls"] == 0
    assert ours["layer_op_in_compiled_graph"], ours
    for i, (a, b) in enumerate(zip(ours["tokens"], theirs["tokens"])):
        assert a[:4] == b[:4], f"prompt {i}: {a} vs {b}"
        agree = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        diffs = [abs(x - y) for x, y in zip(ours["logprobs"][i][:agree], theirs["logprobs"][i][:agree])]
        print(f"prompt {i}: {agree}/{len(a)} tokens identical, max |logprob diff| {max(diffs):.4f}")
        assert max(diffs) <= LOGPROB_TOL, f"prompt {i}: logprob diffs {diffs}"
