"""Host overhead of one decode call (B=1, one layer), before and after the LibTorch Stable ABI
launcher, in one process, interleaved:

    python benchmarks/host_overhead.py [--before REV] [--reps 15] [--calls 200]

- "after": the installed gdn_xpu host library (torch.ops.gdn_xpu_C.gdn_attention, boxed by the
  stable ABI), as the package loads it.
- "before": the pybind11 launcher of git revision REV (default: the last one before the stable
  ABI), built here with torch.utils.cpp_extension.load (needs g++, ninja and the SYCL headers of
  the environment's intel-sycl-rt), handed the same kernel source.

Per implementation, medians per call of:
- op: the public op torch.ops.gdn_xpu.gdn_attention on a B=1 decode (Qwen3.5 layer: Hk 16,
  Hv 32, K=V=128, bf16 activations, fp32 state): validation, argument preparation, launcher;
- launch: the launcher alone on the prepared arguments of that call;
- empty: the launcher alone on the same arguments with an empty batch (no kernel is submitted);
- kernel = launch - empty (submission, execution and wait of the kernels);
- host overhead = op - kernel.
Writes benchmarks/results/host_overhead.md.
"""

import argparse
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import gdn_xpu  # noqa: E402
from gdn_xpu import _runtime  # noqa: E402

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from peers import Shape, raw_op_args  # noqa: E402

LAUNCHER_SOURCES = ("bindings.cpp", "gdn_attention.cpp", "kernel_cache.cpp", "kernel_library.cpp")


def last_pybind_revision() -> str:
    """The parent of the newest commit that changed whether csrc/bindings.cpp uses pybind11."""
    rev = subprocess.check_output(["git", "log", "-1", "--format=%H", "-S", "PYBIND11_MODULE",
                                   "--", "csrc/bindings.cpp"], cwd=ROOT, text=True).strip()
    return rev + "^"


def build_before(rev: str):
    from torch.utils.cpp_extension import load

    dist = metadata.distribution("intel-sycl-rt")
    header = next(pathlib.Path(dist.locate_file(f)).resolve() for f in dist.files
                  if str(f).endswith("include/sycl/sycl.hpp"))
    lib = next(pathlib.Path(dist.locate_file(f)).resolve().parent for f in dist.files
               if re.fullmatch(r"libsycl\.so\.\d+", f.name))
    commit = subprocess.check_output(["git", "rev-parse", rev], cwd=ROOT, text=True).strip()
    src = pathlib.Path(tempfile.gettempdir()) / f"gdn_xpu_before_{commit[:12]}"
    src.mkdir(exist_ok=True)
    for name in [f"csrc/{n}" for n in LAUNCHER_SOURCES] + ["csrc/gdn_attention.h",
                                                         "csrc/kernel_cache.h",
                                                         "csrc/kernel_library.h"]:
        text = subprocess.check_output(["git", "show", f"{rev}:{name}"], cwd=ROOT, text=True)
        (src / pathlib.Path(name).name).write_text(text)
    module = load(name="gdn_xpu_before", sources=[str(src / n) for n in LAUNCHER_SOURCES],
                  extra_include_paths=[str(header.parent.parent)],
                  extra_cflags=["-O2", "-DSYCL_DISABLE_FSYCL_SYCLHPP_WARNING",
                                "-Wno-deprecated-declarations"],
                  extra_ldflags=[f"-L{lib}", "-lsycl", f"-Wl,-rpath,{lib}"],
                  build_directory=str(src), verbose=False)
    module.set_kernel_source(
        (pathlib.Path(gdn_xpu.__file__).parent / "kernels" / "gdn_kernels.sycl").read_text())
    module.set_cache_dir(_runtime.kernel_cache_dir())
    return module


class Before:
    """The pybind11 module in the shape of _runtime.Extension."""

    def __init__(self, module):
        self.gdn_attention = module.gdn_attention


def launcher_args(args: dict, empty: bool) -> tuple:
    """The arguments gdn_xpu/ops.py hands the launcher for `args` (empty: no batch at all)."""
    captured = {}

    class Capture:
        def gdn_attention(self, *a):
            captured["args"] = a

    saved = _runtime._extension
    _runtime._extension = Capture()
    try:
        torch.ops.gdn_xpu.gdn_attention(**args)
    finally:
        _runtime._extension = saved
    a = list(captured["args"])
    if empty:
        a[15] = a[16] = 0   # num_non_spec_seqs, num_spec_seqs
        a[25] = 0           # num_actual_tokens
    return tuple(a)


def per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default=None, help="git revision of the pybind11 launcher")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    opts = parser.parse_args()
    torch.set_num_threads(1)

    rev = opts.before or last_pybind_revision()
    before_rev = subprocess.check_output(["git", "rev-parse", "--short", rev], cwd=ROOT,
                                         text=True).strip()
    after = _runtime.extension()
    impls = {"before (pybind11)": Before(build_before(rev)),
             "after (stable ABI)": after}
    args = raw_op_args(Shape("decode", 16, 32, (1,)))
    full, empty = launcher_args(args, False), launcher_args(args, True)

    def op_with(impl):
        def run():
            _runtime._extension = impl
            torch.ops.gdn_xpu.gdn_attention(**args)
        return run

    cases = {}
    for name, impl in impls.items():
        cases[(name, "op")] = op_with(impl)
        cases[(name, "launch")] = lambda impl=impl: impl.gdn_attention(*full)
        cases[(name, "empty")] = lambda impl=impl: impl.gdn_attention(*empty)
    for fn in cases.values():  # warm-up, kernel builds
        per_call(fn, 5)
    samples = {key: [] for key in cases}
    order = list(cases)
    for rep in range(opts.reps):
        for key in (order if rep % 2 == 0 else order[::-1]):  # alternate which side goes first
            samples[key].append(per_call(cases[key], opts.calls))
    _runtime._extension = after
    us = {key: statistics.median(v) * 1e6 for key, v in samples.items()}

    lines = [f"# Host overhead of one decode call (B=1, one layer, Hk 16, Hv 32, K=V=128)", "",
             f"torch {torch.__version__}, intel-sycl-rt {metadata.version('intel-sycl-rt')}, "
             f"before = {before_rev} (pybind11), after = this tree's installed host library "
             f"(gdn_xpu._C_sycl{after.libsycl_major}); medians of {opts.reps} x {opts.calls} "
             "calls, interleaved, one torch thread.", "",
             "| implementation | op (us) | launch (us) | empty launch (us) | kernel = launch - empty (us) "
             "| host overhead = op - kernel (us) |", "|---|---|---|---|---|---|"]
    for name in impls:
        op, launch, emp = us[(name, "op")], us[(name, "launch")], us[(name, "empty")]
        lines.append(f"| {name} | {op:.1f} | {launch:.1f} | {emp:.1f} | {launch - emp:.1f} | "
                     f"{op - (launch - emp):.1f} |")
    names = list(impls)
    b = us[(names[0], "op")] - (us[(names[0], "launch")] - us[(names[0], "empty")])
    a = us[(names[1], "op")] - (us[(names[1], "launch")] - us[(names[1], "empty")])
    lines += ["", f"Host overhead after - before: {a - b:+.1f} us per call "
              f"(empty launch: {us[(names[1], 'empty')] - us[(names[0], 'empty')]:+.1f} us)."]
    text = "\n".join(lines) + "\n"
    print(text)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "host_overhead.md").write_text(text)


if __name__ == "__main__":
    main()
