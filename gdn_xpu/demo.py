"""The main job: build the tiny Qwen3.5-style model, compile it with torch.compile
(fullgraph), generate greedily for a few prompts with the SYCL kernels, and report graph breaks,
layer-op nodes, eager-vs-compiled agreement and tokens per second.

    python -m gdn_xpu.demo [--new-tokens 24] [--device cpu|xpu]
"""

import argparse
import sys
import time

import torch
from tqdm import tqdm

import gdn_xpu  # noqa: F401  (registers the ops)
from gdn_xpu.compile_report import capture
from gdn_xpu.model import TinyQwen35, TinyQwen35Config, forward_batch, generate, make_batch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--device", default="xpu" if torch.xpu.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    cfg = TinyQwen35Config()
    model = TinyQwen35(cfg, seed=args.seed).to(device).eval()
    gen = torch.Generator().manual_seed(args.seed)
    prompts = [torch.randint(cfg.vocab_size, (n,), generator=gen).tolist() for n in (5, 17, 33, 9)]
    print(f"gdn-xpu demo on {device} ({'SYCL CPU device' if device.type == 'cpu' else 'XPU'}): "
          f"{cfg.num_hidden_layers} layers ({len(model.gdn_layers())} GDN), "
          f"{len(prompts)} prompts of {[len(p) for p in prompts]} tokens")

    t0 = time.perf_counter()
    model.allocate_caches(len(prompts), 64)
    start = time.perf_counter()  # the first kernel call compiles the SYCL kernels
    with torch.no_grad():
        forward_batch(model, model, prompts, [0] * len(prompts), device)
    print(f"  kernel set-up (run-time SYCL compile, first call): {time.perf_counter() - start:.1f} s")
    batch = make_batch(prompts, [0] * len(prompts), device)
    with torch.no_grad(), batch.forward_context(model):
        report = capture(model, *batch.inputs)
    print(f"  dynamo: {report.graph_count} graph(s), {report.graph_break_count} graph break(s), "
          f"{report.layer_op_calls} gdn_attention_core_xpu node(s) for "
          f"{len(model.gdn_layers())} GDN layers; custom ops in graph: {report.custom_op_calls}")

    compiled = torch.compile(model, fullgraph=True)
    steps = args.new_tokens

    def run(label, forward):
        start = time.perf_counter()
        with tqdm(total=steps, desc=f"  {label}", unit="step", file=sys.stdout) as bar:
            out = generate(model, prompts, steps, forward=forward, on_step=lambda s: bar.update())
        return out, time.perf_counter() - start

    eager_tokens, eager_s = run("eager (SYCL kernels)", model)
    compiled_first, compile_s = run("compile + generate", compiled)
    compiled_tokens, compiled_s = run("compiled (warm)", compiled)
    model.use_reference(True)
    reference_tokens, _ = run("reference (float64)", model)
    model.use_reference(False)

    with torch.no_grad():
        model.allocate_caches(len(prompts), 64)
        eager_logits = forward_batch(model, model, prompts, [0] * len(prompts), device)
        model.allocate_caches(len(prompts), 64)
        compiled_logits = forward_batch(model, compiled, prompts, [0] * len(prompts), device)
    diff = (eager_logits - compiled_logits).abs().max().item()
    total = steps * len(prompts)
    print(f"  prefill logits, eager vs compiled: max |diff| = {diff:.2e}")
    print(f"  tokens: compiled == eager: {compiled_tokens == eager_tokens and compiled_first == eager_tokens}, "
          f"kernel == float64 reference: {eager_tokens == reference_tokens}")
    print(f"  generation: eager {total / eager_s:.1f} tok/s, compiled {total / compiled_s:.1f} tok/s "
          f"(first compiled run incl. compile: {compile_s:.1f} s); total {time.perf_counter() - t0:.1f} s")
    for i, toks in enumerate(compiled_tokens):
        print(f"  prompt {i} ({len(prompts[i])} tokens) -> {toks[:12]}{' ...' if len(toks) > 12 else ''}")
    ok = report.graph_break_count == 0 and compiled_tokens == eager_tokens
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
