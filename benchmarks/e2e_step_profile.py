"""Where a decode step's time goes inside vLLM: the GDN core against the rest of the step, for
GDN routed through gdn_xpu and for vLLM-CPU's own GDN (in .venv-vllm):

    python benchmarks/e2e_step_profile.py [--batch 1] [--runs 3] [--new-tokens 64]

The checkpoint of benchmarks/e2e_vllm.py (run that once first: it writes it) and its decode
workload (--batch prompts of 16 tokens, --new-tokens each). One fresh engine per run, as vLLM
serves by default (the model in the engine core process), the paths alternating. Through
collective_rpc a timer wraps, in the engine core, the GDN core each path calls: gdn_xpu's layer
op body (lookup, validation, launch, kernels), or what vLLM's cpu_gdn_attention_core calls once
it has its layer (conv, gating, recurrence). Step time = wall time of the decode steps (every
request past its first token) over their number. Writes benchmarks/results/e2e_step_profile.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from e2e_vllm import CHECKPOINT, PROMPT_LEN_DECODE, RESULTS, VOCAB, cpu_model


class Timer:
    """Wraps a function; adds up the wall time of its calls."""

    def __init__(self, fn):
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


# Run in the process that runs the model (vLLM's engine core), through collective_rpc.
def install_timer(worker, routed: bool) -> None:
    if routed:
        from gdn_xpu import ops

        ops.layer_op_body = Timer(ops.layer_op_body)
    else:
        # What vLLM's op (cpu_gdn_attention_core) calls once it has its layer, without spec
        # decode: conv, gating and recurrence.
        from vllm.model_executor.layers.mamba.ops.cpu import gdn_attention as cpu_gdn

        cpu_gdn._cpu_gdn_attention_nonspec = Timer(cpu_gdn._cpu_gdn_attention_nonspec)


def read_timer(worker, routed: bool) -> tuple:
    if routed:
        from gdn_xpu import ops

        timer = ops.layer_op_body
    else:
        from vllm.model_executor.layers.mamba.ops.cpu import gdn_attention as cpu_gdn

        timer = cpu_gdn._cpu_gdn_attention_nonspec
    return timer.seconds, timer.calls


def worker(routed: bool, batch: int, new_tokens: int) -> dict:
    import random

    from vllm import LLM, SamplingParams

    llm = LLM(model=str(CHECKPOINT), skip_tokenizer_init=True, dtype="bfloat16",
              max_model_len=PROMPT_LEN_DECODE + new_tokens + 64, max_num_seqs=batch,
              enable_prefix_caching=False, seed=0)
    llm.collective_rpc(install_timer, args=(routed,))
    engine, rng = llm.llm_engine, random.Random(1234)
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True,
                            detokenize=False)
    result = {}
    for rep in range(2):  # rep 0 warms up
        for i in range(batch):
            engine.add_request(f"{rep}-{i}", {"prompt_token_ids": [
                rng.randrange(3, VOCAB) for _ in range(PROMPT_LEN_DECODE)]}, params)
        tokens, start = {}, None
        while engine.has_unfinished_requests():
            for o in engine.step():
                tokens[o.request_id] = len(o.outputs[0].token_ids)
            if start is None and len(tokens) == batch and min(tokens.values()) > 0:
                # Every request has its first token: decode steps from here on.
                start = (time.perf_counter(), sum(tokens.values()),
                         *llm.collective_rpc(read_timer, args=(routed,))[0])
        end = (time.perf_counter(), sum(tokens.values()),
               *llm.collective_rpc(read_timer, args=(routed,))[0])
        steps = (end[1] - start[1]) / batch
        result = {"steps": steps, "step_ms": (end[0] - start[0]) / steps * 1e3,
                  "gdn_ms": (end[2] - start[2]) / steps * 1e3,
                  "gdn_calls_per_step": (end[3] - start[3]) / steps}
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--worker", choices=["routed", "native"], help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.worker:
        res = worker(opts.worker == "routed", opts.batch, opts.new_tokens)
        print("RESULT " + json.dumps(res), flush=True)
        return
    if not CHECKPOINT.exists():
        raise SystemExit(f"no checkpoint at {CHECKPOINT}: run benchmarks/e2e_vllm.py once first")
    runs = {"routed": [], "native": []}
    for _ in range(opts.runs):
        for path in runs:
            # Functions go to the engine core pickled (collective_rpc).
            env = {**os.environ, "VLLM_ALLOW_INSECURE_SERIALIZATION": "1",
                   "GDN_XPU_VLLM_CPU": "1" if path == "routed" else "0",
                   "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
            out = subprocess.run([sys.executable, __file__, "--worker", path, "--batch",
                                  str(opts.batch), "--new-tokens", str(opts.new_tokens)],
                                 capture_output=True, text=True, env=env, timeout=1800)
            line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
            if out.returncode != 0 or not line:
                raise SystemExit(f"{path}: engine run failed\n{out.stderr[-4000:]}")
            runs[path].append(json.loads(line[0][len("RESULT "):]))
            print(path, runs[path][-1], flush=True)
    lines = [f"# Decode step profile inside vLLM, B={opts.batch}", "",
             f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs (shared machine). "
             f"{time.strftime('%Y-%m-%d %H:%M')}. The e2e checkpoint (3 GDN layers, Hk 16 / Hv 32, "
             f"K=V=128, bf16); vLLM's default engines, {opts.runs} per path, alternating; medians "
             "of the per-engine means over the decode steps.", "",
             "| path | step | GDN core | rest of the step | GDN calls per step |",
             "| --- | --- | --- | --- | --- |"]
    for path, rs in runs.items():
        step = statistics.median(r["step_ms"] for r in rs)
        gdn = statistics.median(r["gdn_ms"] for r in rs)
        rest = statistics.median(r["step_ms"] - r["gdn_ms"] for r in rs)
        lines.append(f"| {path} | {step:.3f} ms | {gdn:.3f} ms | {rest:.3f} ms | "
                     f"{rs[0]['gdn_calls_per_step']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "e2e_step_profile.md").write_text(text)


if __name__ == "__main__":
    main()
