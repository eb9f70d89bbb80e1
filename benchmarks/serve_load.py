"""Record (not a test): a served engine under load, GDN routed through gdn_xpu vs vLLM-CPU's own
GDN, the same load for both.

    .venv-vllm/bin/python benchmarks/serve_load.py [--rounds 3] [--requests 64]
        [--concurrency 16] [--out benchmarks/results/serve_load.json]

`vllm serve` (tests/vllm_serve.py: loopback, a tiny random Qwen3-Next checkpoint, bf16, no
tokenizer) is started once per side, alternately; each round sends the same requests (prompts
of 1 to 400 tokens, 4 to 24 new tokens, greedy, logprobs 2, every other one streamed) with
`concurrency` clients. Reported per side: start-up time, requests/s and generated tokens/s per
round (median over rounds), resident memory of the server's processes after each round.
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from vllm_runs import write_tiny_qwen3_next  # noqa: E402
from vllm_serve import Server, make_requests, run_load  # noqa: E402




def run_side(ckpt, work: pathlib.Path, routed: bool, load, rounds: int, concurrency: int) -> dict:
    name = "gdn_xpu" if routed else "native"
    server = Server(ckpt, work / f"{name}.log", routed, cache_root=work / f"cache_{name}")
    try:
        startup = server.wait_ready()
        out = {"startup_s": startup, "rounds": []}
        for _ in range(rounds):
            results, wall = run_load(server.url, load, concurrency)
            tokens = sum(len(r["tokens"]) for r in results)
            out["rounds"].append({
                "wall_s": wall, "requests_per_s": len(load) / wall, "tokens_per_s": tokens / wall,
                "ok": sum(r["status"] == 200 for r in results), "rss_mib": server.rss_bytes() / 2**20})
            print(name, out["rounds"][-1], flush=True)
            errors = [r["body"] for r in results if r["status"] != 200]
            if errors:
                print(f"{name}: {len(errors)} failed requests, e.g. {errors[0][:500]}", flush=True)
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", default=str(HERE / "results" / "serve_load.json"))
    parser.add_argument("--work", default=None, help="keep checkpoint and server logs here")
    opts = parser.parse_args()
    load = make_requests(opts.requests, seed=1)
    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        work = pathlib.Path(opts.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        ckpt = write_tiny_qwen3_next(work / "ckpt", max_position_embeddings=1024)
        record = {"requests": opts.requests, "concurrency": opts.concurrency,
                  "prompt_tokens": sum(len(r["prompt"]) for r in load),
                  "max_new_tokens": sum(r["max_tokens"] for r in load)}
        for routed in (True, False):
            record["gdn_xpu" if routed else "native"] = run_side(
                ckpt, work, routed, load, opts.rounds, opts.concurrency)
    print("| side | start-up | requests/s | tokens/s | RSS after rounds (MiB) |")
    print("| --- | --- | --- | --- | --- |")
    for side in ("gdn_xpu", "native"):
        r = record[side]
        print(f"| {side} | {r['startup_s']:.0f} s | "
              f"{statistics.median(x['requests_per_s'] for x in r['rounds']):.1f} | "
              f"{statistics.median(x['tokens_per_s'] for x in r['rounds']):.0f} | "
              + ", ".join(f"{x['rss_mib']:.0f}" for x in r["rounds"]) + " |")
    pathlib.Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(opts.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
