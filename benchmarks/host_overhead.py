"""Host overhead of one decode call (B=1, one Qwen3.5 layer: Hk 16, Hv 32, K=V=128, bf16
activations, state and dt_bias, as vLLM holds them), part by part, in one process, interleaved:

    python benchmarks/host_overhead.py [--reps 15] [--calls 200] [--sweep-mb 64]

- op: the public op torch.ops.gdn_xpu.gdn_attention (dispatch, validation, argument preparation,
  launcher);
- validation: gdn_xpu.validation.check_gdn_attention_args on the call's arguments;
- arguments: gdn_xpu.ops.launcher_args (int32 / fp32 conversions where needed, the conv
  workspace: room for the tap-major conv weights, one-token sequences' conv outputs, A_log and
  dt_bias in fp32);
- launch: the launcher on those arguments (kernel submission, execution, queue wait);
- empty launch: the launcher on an empty batch (no kernel is submitted);
- kernels = launch - empty launch; host overhead = op - kernels.
Run it under `taskset -c 0` with OMP_NUM_THREADS=1 for one core, as vLLM's CPU worker runs.
With --sweep-mb N every call is timed alone, after writing N MB of memory: inside a model the
other layers' work evicts the caches between two GDN layers (defaults then 5 x 40 calls).
Writes benchmarks/results/host_overhead.md (host_overhead_swept.md with a sweep).
"""

import argparse
import os
import pathlib
import statistics
import sys
import time
from importlib import metadata

import torch

from gdn_xpu import _runtime, ops
from gdn_xpu.validation import check_gdn_attention_args

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
from peers import Shape, raw_op_args  # noqa: E402


def empty_batch(launch_args: tuple) -> tuple:
    """The same launcher arguments with no sequence and no token."""
    a = list(launch_args)
    counts = [i for i, v in enumerate(a) if isinstance(v, int) and not isinstance(v, bool)]
    # The launcher's integer arguments, in order: head counts and dims (4), non-spec and spec
    # sequence counts, num_actual_tokens.
    non_spec, spec, tokens = counts[4], counts[5], counts[6]
    a[non_spec] = a[spec] = a[tokens] = 0
    return tuple(a)


def per_call(fn, calls: int, sweep=None) -> float:
    """Seconds per call: the mean of a loop of calls, or with a sweep (a tensor written before
    each call) the median of calls timed one by one."""
    if sweep is None:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls
    times = []
    for _ in range(calls):
        sweep.add_(1)
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--sweep-mb", type=int, default=0)
    opts = parser.parse_args()
    sweep = torch.zeros(opts.sweep_mb * 2**18) if opts.sweep_mb else None
    reps = opts.reps or (5 if sweep is not None else 15)
    calls = opts.calls or (40 if sweep is not None else 200)

    args = raw_op_args(Shape("decode", 16, 32, (1,)))
    args["ssm_state"] = args["ssm_state"].to(torch.bfloat16)  # what vLLM allocates for bf16
    args["dt_bias"] = args["dt_bias"].to(torch.bfloat16)  # as vLLM's bf16 model holds it
    extension, queue = _runtime.extension(), _runtime.queue_address(torch.device("cpu"))
    full = ops.launcher_args(args)
    empty = empty_batch(full)
    cases = {
        "op": lambda: torch.ops.gdn_xpu.gdn_attention(**args),
        "validation": lambda: check_gdn_attention_args(args),
        "arguments": lambda: ops.launcher_args(args),
        "launch": lambda: extension.gdn_attention(*full, queue),
        "empty launch": lambda: extension.gdn_attention(*empty, queue),
    }
    for fn in cases.values():  # warm-up, kernel builds
        per_call(fn, 5)
    samples = {key: [] for key in cases}
    order = list(cases)
    for rep in range(reps):
        for key in (order if rep % 2 == 0 else order[::-1]):
            samples[key].append(per_call(cases[key], calls, sweep))
    us = {key: statistics.median(v) * 1e6 for key, v in samples.items()}
    kernels = us["launch"] - us["empty launch"]

    affinity = len(os.sched_getaffinity(0))
    lines = ["# Host overhead of one decode call (B=1, one layer, Hk 16, Hv 32, K=V=128)", "",
             f"torch {torch.__version__}, intel-sycl-rt {metadata.version('intel-sycl-rt')}, "
             f"{affinity} CPU(s) allowed, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}"
             f"; medians of {reps} x {calls} calls, interleaved"
             + (f", {opts.sweep_mb} MB written before each call." if sweep is not None else "."),
             "",
             "| op | validation | arguments | launch | empty launch | kernels = launch - empty "
             "| host overhead = op - kernels |", "|---|---|---|---|---|---|---|",
             f"| {us['op']:.1f} us | {us['validation']:.1f} us | {us['arguments']:.1f} us "
             f"| {us['launch']:.1f} us | {us['empty launch']:.1f} us | {kernels:.1f} us "
             f"| {us['op'] - kernels:.1f} us |"]
    text = "\n".join(lines) + "\n"
    print(text)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / ("host_overhead_swept.md" if sweep is not None else "host_overhead.md")).write_text(text)


if __name__ == "__main__":
    main()
