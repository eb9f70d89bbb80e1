"""Greedy generation with vLLM's offline LLM on a checkpoint directory; prints one JSON line.

    python vllm_generate.py CHECKPOINT_DIR   (GDN_XPU_VLLM_CPU=1: GDN layers on gdn_xpu's op)

Used by test_vllm_e2e.py in a fresh process per engine. Besides tokens and logprobs it reports
how often the raw op ran and whether the graph vLLM compiled names the layer op.
"""

import json
import os
import pathlib
import sys

PROMPTS = [[1, 2, 3, 4, 5], list(range(10, 40)), [7] * 12, [300]]
MAX_TOKENS = 8


def main() -> None:
    from vllm import LLM, SamplingParams

    from gdn_xpu import _runtime

    calls = {"raw_op": 0}
    real_extension = _runtime.extension

    def counting_extension():  # counts kernel launches of the raw op in this process
        ext = real_extension()

        class Counting:
            def __getattr__(self, name):
                if name == "gdn_attention":
                    calls["raw_op"] += 1
                return getattr(ext, name)
        return Counting()

    _runtime.extension = counting_extension
    llm = LLM(model=sys.argv[1], skip_tokenizer_init=True, dtype="bfloat16", max_model_len=256,
              max_num_seqs=len(PROMPTS), seed=0)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, logprobs=0, detokenize=False)
    outputs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params)
    cache = pathlib.Path(os.environ["VLLM_CACHE_ROOT"])
    graph_code = "\n".join(p.read_text(errors="ignore") for p in cache.rglob("*.py"))
    print(json.dumps({
        "tokens": [list(o.outputs[0].token_ids) for o in outputs],
        "logprobs": [[lp[t].logprob for t, lp in zip(o.outputs[0].token_ids, o.outputs[0].logprobs)]
                     for o in outputs],
        "raw_op_calls": calls["raw_op"],
        "layer_op_in_compiled_graph": "gdn_attention_core_xpu" in graph_code,
        "compiled_graph_files": len(list(cache.rglob("*.py"))),
    }))


if __name__ == "__main__":
    main()
