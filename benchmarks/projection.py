"""The GPU projection: what gdn_xpu's kernels could take on Intel GPUs, calibrated on what a
tuned GPU kernel reaches on hardware. A projection, not a measurement: no Intel GPU was run.

    python benchmarks/projection.py     (writes benchmarks/results/PROJECTION.md; run_all.py too)
"""

import pathlib

RESULTS = pathlib.Path(__file__).parent / "results"
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


def projection_markdown() -> str:
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
    ]
    return "\n".join(lines) + "\n"


def write_projection() -> pathlib.Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "PROJECTION.md"
    path.write_text(projection_markdown())
    return path


if __name__ == "__main__":
    print(write_projection().read_text())
