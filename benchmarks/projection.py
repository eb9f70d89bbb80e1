"""The GPU projection: what gdn_xpu's kernels could take on Intel GPUs, calibrated on what a
tuned GPU kernel reaches on hardware, and the kernels' Intel GPU ISA (IGC's own compile for
pvc and acm-g10, from the ISA check) against each target's bandwidth. A projection, not a
measurement: no Intel GPU was run.

    python benchmarks/projection.py            writes PROJECTION.md (the repository's root, kept
                                               in git) from the ISA check's last results
                                               (benchmarks/results/gpu_isa.json, written by
                                               make test-isa); run_all.py too
    python benchmarks/projection.py --run-isa  runs the ISA check first (make ocloc; ~4 min)
"""

import json
import pathlib
import sys

RESULTS = pathlib.Path(__file__).parent / "results"
PROJECTION = pathlib.Path(__file__).resolve().parent.parent / "PROJECTION.md"
HEADS, K, V = 32, 128, 128  # Qwen3-Next per-rank shape at tp 1: Hk 16 / Hv 32

# The reference point, measured by the project on an NVIDIA H100 with FLA 0.6.0's Triton
# kernels (the ones vLLM's CUDA path runs), CUDA-graph timing, Hk16/Hv32, K=V=128, bf16
# activations, fp32 state.
H100_COPY_BANDWIDTH = 3.0e12  # device-to-device copy, bytes/s
H100_DECODE_US = {1: 3.6, 8: 14.4, 32: 58.8, 128: 219.0}  # batch -> µs per step
H100_PREFILL_US = {(2048, 1): 158.0, (2048, 4): 172.0, (8192, 1): 570.0}  # (tokens, seqs) -> µs

# Published peaks (vendor spec sheets): memory bandwidth, FP32 vector rate, FP32 lanes.
GPUS = {
    "Intel Arc B580": dict(bandwidth=456e9, fp32=13.7e12, lanes=20 * 8 * 16),
    "Intel Data Center GPU Max 1550": dict(bandwidth=3.2768e12, fp32=52.4e12, lanes=128 * 8 * 16),
}

# The ISA check's targets: what IGC compiled for (ocloc -device) and the product the decode
# projection judges it on. Published figures (Intel ARK / product briefs): vector engines
# (XVE, "EUs"), their clock, FP32 lanes per engine per clock, memory bandwidth.
# Max 1550: 128 Xe-cores x 8 XVE of 512 bits, 1.6 GHz, HBM2e 3.2768 TB/s.
# Arc A770 16 GB: 32 Xe-cores x 16 XVE of 256 bits, 2.1 GHz graphics clock, GDDR6 560 GB/s.
ISA_TARGETS = {
    "pvc": dict(product="Data Center GPU Max 1550", engines=1024, clock=1.6e9, lanes=16,
                bandwidth=3.2768e12),
    "acm-g10": dict(product="Arc A770", engines=512, clock=2.1e9, lanes=8, bandwidth=560e9),
}
ISA_JSON = RESULTS / "gpu_isa.json"
STATE_BYTES = {"f32": 4, "bf16": 2, "f16": 2}

# gdn_chunked_prefill's tiling (csrc/kernels/gdn_kernels.sycl): chunks of 64 tokens, one
# work-group per (sequence, v-head, block of 64 state rows), one work-item per state row.
CHUNK, BV = 64, 64


def state_bytes(batch: int) -> float:
    """Decode moves each sequence's fp32 state once in and once out."""
    return 2 * batch * HEADS * K * V * 4


def h100_decode_fraction(batch: int) -> float:
    """The fraction of its copy bandwidth FLA's decode reaches on the H100 in state traffic, at
    the largest measured batch not above `batch` (smaller batches reach less)."""
    measured = max(b for b in H100_DECODE_US if b <= batch)
    return state_bytes(measured) / (H100_DECODE_US[measured] * 1e-6) / H100_COPY_BANDWIDTH


def chunked_prefill_flops(tokens: int) -> float:
    """FP32 FLOPs of gdn_chunked_prefill for `tokens` tokens, per v-head summed over heads.

    Per chunk of C tokens and v-head: the C x C products k.k and q.k over K and the forward
    substitution for w (C^2/2 x K MACs each), all three redone by each of the V/BV row blocks;
    u and the decayed q.k times v' (C^2/2 x V MACs each); v' = u - w S0, the output's S0 q and
    the state update (C x K x V MACs each)."""
    chunks = tokens / CHUNK
    per_chunk = (3 * CHUNK ** 2 * K * (V // BV) + 2 * CHUNK ** 2 * V + 6 * CHUNK * K * V)
    return chunks * per_chunk * HEADS


def instruction_rate(target: str, simd: int) -> float:
    """SIMD-`simd` instructions per second the whole GPU issues: one instruction per vector
    engine per clock, an instruction wider than the engine's FP32 lanes taking simd / lanes
    clocks. No dual issue, no stalls: an optimistic rate, so a budget from it is generous."""
    t = ISA_TARGETS[target]
    return t["engines"] * t["clock"] * min(1.0, t["lanes"] / simd)


def decode_budget(target: str, simd: int, head_k_dim: int, state: str) -> float:
    """Instructions per token and state row (per hardware thread holding that row) that a
    decode step can issue in the time its state traffic takes at the target's bandwidth: the
    row (K values) is read and written once."""
    row_bytes = 2 * head_k_dim * STATE_BYTES[state]
    return row_bytes / ISA_TARGETS[target]["bandwidth"] * instruction_rate(target, simd)


def load_isa(path: pathlib.Path = ISA_JSON):
    return json.loads(path.read_text()) if path.is_file() else None


def isa_markdown(isa) -> list:
    """The ISA section of PROJECTION.md from the ISA check's results (gpu_isa.json)."""
    lines = ["", "## Intel GPU ISA (IGC's compile; the ISA check)", ""]
    if not isa:
        return lines + [f"No ISA results ({ISA_JSON.name} missing): run `make test-isa` or "
                        "`python benchmarks/projection.py --run-isa`.", ""]
    options = sorted({f"{r['target']}: `{r['options'] or '(none)'}`" for r in isa})
    lines += [
        "Every kernel set's SPIR-V, built with the options the SYCL runtime passes on a Level "
        "Zero GPU (" + "; ".join(options) + "), compiled by ocloc (Debian's intel-opencl-icd "
        "22.43, IGC 1.0.12504) for each target; from IGC's shader dumps and the zebin. Spill "
        "and instructions list every IGC attempt (first / retry: IGC recompiles a kernel that "
        "spilled, and the binary holds the last). GRF mode: 128 registers is the default, 256 "
        "the large register file.", "",
        "Shape of the projection (bf16 activations, fp32 state, K = V = 128):", "",
        "| kernel | target | GRF mode | spill B | SLM B | SIMD | instructions |",
        "|---|---|---|---|---|---|---|"]
    for r in isa:
        if r["config"] != "bf16_f32_k128_v128_w4":
            continue
        mode = {128: "128 (default)", 256: "256 (large)"}.get(r["grf"], str(r["grf"]))
        lines.append(f"| {r['kernel']} | {r['target']} | {mode} | "
                     f"{' / '.join(str(a['spill']) for a in r['attempts'])} | {r['slm']} | "
                     f"{r['simd']} | {' / '.join(str(a['instructions']) for a in r['attempts'])} |")
    spills = sorted({f"{r['kernel']} ({r['target']})" for r in isa if r["spill"]})
    lines += ["", "Spills in any configuration: " + (", ".join(spills) if spills else "none") + ".",
              ""]

    lines += [
        "### Decode: does the instruction count keep it memory-bound?", "",
        "gdn_recurrent holds each state row in one hardware thread (a sub-group) for the whole "
        "sequence; a decode step reads and writes the row once (2 x K x state bytes). The "
        "**budget** is the instructions per token and row the GPU can issue in the time that "
        "traffic takes at the published bandwidth (`decode_budget`: one instruction per vector "
        "engine per clock, a SIMD16 instruction taking 2 clocks on Xe-HPG's 8-lane engines; "
        "no dual issue, no stalls, so generous). The kernel's counts per row divide by the "
        "rows a thread updates (`tests/gpu_isa.py`, `decode_loop`): the **token step** (the "
        "loop over a tile's tokens: S^T k, the update, S^T q, the state store), which every "
        "thread runs once per token, is a lower bound of a decode step's work; the **tile** "
        "(what a one-token tile lays out: the conv's alternative paths, gates and q/k norms, "
        "which one sub-group alone computes in decode, the state load and the token step) "
        "counts every instruction once; the **whole kernel** is an upper bound. Memory-bound "
        "when the whole kernel is under the budget; compute-bound when the token step is over "
        "it; in between, only hardware can tell.", "",
        "| act/state K=V | target | rows / thread | token step / row | tile / row | "
        "whole kernel / row | budget / row | verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in isa:
        d = r.get("decode_loop")
        if r["kernel"] != "gdn_recurrent" or not d:
            continue
        act, state, k = r["config"].split("_")[:3]
        budget = decode_budget(r["target"], r["simd"], int(k[1:]), state)
        low, high = d["token_step_per_row"], d["kernel_per_row"]
        verdict = ("memory-bound" if high <= budget else "compute-bound" if low > budget
                   else "between: hardware decides")
        lines.append(f"| {act}/{state} {k[1:]} | {r['target']} | {d['rows_per_thread']:g} | "
                     f"{low:.0f} | {d['tile_per_row']:.0f} | {high:.0f} | {budget:.0f} | "
                     f"{verdict} |")
    lines += ["", "Targets: " + "; ".join(
        f"{name} = {t['product']} ({t['engines']} vector engines x {t['clock'] / 1e9:.1f} GHz, "
        f"{t['lanes']} FP32 lanes each, {t['bandwidth'] / 1e9:.0f} GB/s)"
        for name, t in ISA_TARGETS.items()) + ". Xe2 (Arc B580, Lunar Lake) is not in this "
        "ocloc: unchecked.", ""]
    return lines


def projection_markdown(isa=None) -> str:
    lines = [
        "# PROJECTION (not a measurement)", "",
        "Nothing here ran on an Intel GPU. The times are what gdn_xpu's kernels would take on "
        "the GPUs below **if** they reached the stated fractions of the published peaks; they "
        "are calibrated on what a tuned kernel measurably reaches on a real GPU.", "",
        "## Reference point: FLA on an NVIDIA H100 (measured)", "",
        "FLA 0.6.0's Triton kernels (vLLM's CUDA path), CUDA-graph timing, Hk16/Hv32, K=V=128, "
        "bf16 activations, fp32 state; device copy bandwidth "
        f"{H100_COPY_BANDWIDTH / 1e12:.1f} TB/s.", "",
        "| shape | H100 time | state traffic / copy bandwidth |", "|---|---|---|"]
    for batch, us in H100_DECODE_US.items():
        lines.append(f"| decode B={batch} | {us:.1f} µs | {100 * h100_decode_fraction(batch):.0f}% |")
    for (tokens, seqs), us in H100_PREFILL_US.items():
        lines.append(f"| chunked prefill {tokens} tokens, {seqs} seq | {us:.0f} µs "
                     f"({tokens / us:.1f} Mtok/s) | - |")

    lines += [
        "", "## Decode: bandwidth-bound", "",
        "A decode step reads and writes every sequence's fp32 state (2 x B x 32 x 128 x 128 x 4 "
        "bytes). Projected at **no more than the H100's measured fraction** of bandwidth for the "
        "same batch, applied to the Intel GPUs' *published* peak (a copy on real hardware "
        "reaches less than the peak, so these are optimistic).", "",
        "| batch | state traffic | fraction | " + " | ".join(GPUS) + " |",
        "|---|---|---|" + "---|" * len(GPUS)]
    for batch in (1, 8, 32, 128):
        frac = h100_decode_fraction(batch)
        cells = [f"{state_bytes(batch) / (frac * gpu['bandwidth']) * 1e6:.0f} µs"
                 for gpu in GPUS.values()]
        lines.append(f"| B={batch} | {state_bytes(batch) / 1e6:.0f} MB | {100 * frac:.0f}% | "
                     + " | ".join(cells) + " |")

    lines += [
        "", "## Prefill: compute-bound, on vector units", "",
        "gdn_chunked_prefill does all its products in FP32 on the vector units (no XMX/DPAS "
        "matrix instructions; FLA on the H100 runs its chunk products on tensor cores, so its "
        "time does not transfer). Its arithmetic, counted from the kernel "
        "(`chunked_prefill_flops`): "
        f"{chunked_prefill_flops(1) / HEADS / 1e3:.0f} kFLOP per token and v-head at K=V=128 "
        "(the recurrent form needs 131). Its parallelism is one work-item per state row, "
        f"{HEADS * V} per sequence, each walking the chunks in order: a GPU with more FP32 lanes "
        "than that idles the rest. Lower bound = FLOPs / (FP32 peak x min(1, work-items / "
        "lanes)); a vector kernel's real efficiency (commonly 30-60% of peak) is unmeasured.", "",
        "| prefill | GFLOP | " + " | ".join(f"{name} (lower bound)" for name in GPUS) + " |",
        "|---|---|" + "---|" * len(GPUS)]
    for tokens, seqs in H100_PREFILL_US:
        flops = chunked_prefill_flops(tokens)
        cells = []
        for gpu in GPUS.values():
            busy = min(1.0, seqs * HEADS * V / gpu["lanes"])
            t = flops / (gpu["fp32"] * busy)
            cells.append(f"{t * 1e6:.0f} µs ({tokens / (t * 1e6):.1f} Mtok/s, "
                         f"{100 * busy:.0f}% of lanes busy)")
        lines.append(f"| {tokens} tokens, {seqs} seq | {flops / 1e9:.1f} | " + " | ".join(cells) + " |")

    lines += isa_markdown(isa)
    lines += [
        "", "## What only hardware can tell", "",
        "- The decode kernel's achieved bandwidth on Xe2/Xe-HPC (state held in registers per "
        "sub-group, as on the CPU device), against a device copy on the same GPU.",
        "- The chunked kernel's FP32 efficiency, its shared-local-memory bank conflicts and "
        "barriers, and whether the 64-token chunk fits shared local memory at full occupancy.",
        "- Whether XMX (DPAS) for the chunk products pays, as tensor cores do for FLA.",
        "- The run-time compile and the AOT build (`GDN_XPU_AOT=1`, needs icpx) on the GPU "
        "driver, and torch's XPU queue interop (`torch.xpu.current_stream().sycl_queue`).",
        "- vLLM end to end on XPU: time to first token and decode tokens/s.",
        "- Whether the decode kernel's instruction issue, occupancy and memory latency hiding "
        "match the ISA section's counts, and the Xe2 ISA (no Xe2 in this ocloc).",
    ]
    return "\n".join(lines) + "\n"


def write_projection(run_isa: bool = False) -> pathlib.Path:
    RESULTS.mkdir(exist_ok=True)
    if run_isa:
        import tempfile
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
        import gpu_isa
        with tempfile.TemporaryDirectory(prefix="gdn_gpu_isa_") as work:
            gpu_isa.write_results(gpu_isa.run_check(pathlib.Path(work)), RESULTS)
    PROJECTION.write_text(projection_markdown(load_isa()))
    return PROJECTION


if __name__ == "__main__":
    print(write_projection(run_isa="--run-isa" in sys.argv[1:]).read_text())
