"""Engine runs for the vLLM end-to-end tests: vllm_generate.py in a fresh process, and the
comparison of two greedy generations of a random tiny bf16 model."""

import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).parent
# Top logprobs per generated token (vllm_generate.py --logprobs) of a reference generation: a
# random tiny model's near-ties may be three-way, and the tie rule of check_same_greedy_generation
# must see the whole tie (with 2, CI once failed where the spec run took the reference's third
# token, tied with its second and one bf16 step behind its first).
REFERENCE_TOP_LOGPROBS = "5"


def write_tiny_qwen3_next(path, *, linear_num_value_heads: int = 4,
                          max_position_embeddings: int = 512):
    """A random tiny bf16 Qwen3-Next checkpoint at `path` (seed 0): 3 GDN layers (2 k-heads,
    K = V = 128) and a full-attention layer, the last and only MoE layer (vLLM's Qwen3-Next
    needs one)."""
    import torch
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3NextConfig(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        layer_types=["linear_attention"] * 3 + ["full_attention"], num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, linear_num_key_heads=2,
        linear_num_value_heads=linear_num_value_heads, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_conv_kernel_dim=4, num_experts=4,
        num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=64,
        decoder_sparse_step=1, mlp_only_layers=[0, 1, 2],
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=False)
    cfg.architectures = ["Qwen3NextForCausalLM"]
    Qwen3NextForCausalLM(cfg).to(torch.bfloat16).save_pretrained(path)
    return path


def generate(checkpoint, tmp_path, route_to_gdn_xpu: bool, *options: str, env=None,
             timeout: int = 900) -> dict:
    """vllm_generate.py in a fresh process (options: its command-line flags; env: the process
    environment, os.environ by default), with GDN layers on gdn_xpu's op or vLLM's own."""
    name = ("gdn_xpu" if route_to_gdn_xpu else "vllm") + ("_spec" if "--spec" in options else "")
    env = {**(os.environ if env is None else env), "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CACHE_ROOT": str(tmp_path / name),
           "GDN_XPU_VLLM_CPU": "1" if route_to_gdn_xpu else "0"}
    result = subprocess.run(
        [sys.executable, str(HERE / "vllm_generate.py"), str(checkpoint), *options],
        capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-6000:]
    # vLLM's worker processes log to stdout too, before and after the result line.
    return json.loads(next(line for line in reversed(result.stdout.splitlines())
                           if line.startswith('{"prompts"')))


def check_same_greedy_generation(ours: dict, ref: dict, tol: float, label: str) -> dict:
    """`ours` generated what `ref` did: tokens identical, or the first divergence at a near-tie
    of the reference (ours took one of its top tokens, at most `tol` below its choice: a random
    tiny model's distribution is nearly flat, its top-2 gaps often 0 to 2 bf16 steps; after it
    the sequences differ freely); the logprobs of the agreeing tokens and of the prompt tokens
    within `tol`. Both runs need top logprobs, the reference REFERENCE_TOP_LOGPROBS of them;
    prompt logprobs are compared when both have them. Returns the tokens compared, those
    identical, and the largest logprob differences."""
    summary = {"tokens": 0, "identical": 0, "max_logprob_diff": 0.0,
               "max_prompt_logprob_diff": 0.0, "divergences": 0}
    for i, (a, b) in enumerate(zip(ours["tokens"], ref["tokens"])):
        assert a and b, f"prompt {i}: nothing generated"
        agree = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        diffs = [abs(x - y)
                 for x, y in zip(ours["logprobs"][i][:agree], ref["logprobs"][i][:agree])]
        prompt_diffs = [0.0]  # a one-token prompt has no prompt logprob to compare
        if "prompt_logprobs" in ours and "prompt_logprobs" in ref:
            prompt_diffs += [abs(x - y) for x, y in zip(ours["prompt_logprobs"][i][1:],
                                                        ref["prompt_logprobs"][i][1:])]
        print(f"prompt {i} ({len(ours['prompts'][i])} tokens): {agree}/{len(a)} tokens "
              f"identical, max |logprob diff| {max(diffs, default=0):.4f}, prompt logprobs "
              f"{max(prompt_diffs):.4f}")
        summary["tokens"] += len(a)
        summary["identical"] += agree
        summary["max_logprob_diff"] = max(summary["max_logprob_diff"], max(diffs, default=0))
        summary["max_prompt_logprob_diff"] = max(summary["max_prompt_logprob_diff"],
                                                 max(prompt_diffs))
        summary["divergences"] += agree < len(a)
        assert max(diffs, default=0) <= tol, f"prompt {i}: logprob diffs {diffs}"
        assert max(prompt_diffs) <= tol, f"prompt {i}: prompt logprobs {prompt_diffs}"
        if agree < len(a):
            top = {t: lp for t, lp, _ in ref["top_logprobs"][i][agree]}
            print(f"  diverged at token {agree}: {a[agree]} vs {b[agree]}, reference top "
                  f"{ref['top_logprobs'][i][agree]}")
            assert a[agree] in top and top[b[agree]] - top[a[agree]] <= tol, (
                f"prompt {i}: diverged at token {agree} ({a[agree]} vs {b[agree]}) without a "
                f"near-tie: reference top {ref['top_logprobs'][i][agree]}, "
                f"{label} {ours['top_logprobs'][i][agree]}")
    return summary
