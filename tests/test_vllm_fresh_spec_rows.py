"""A new request in a spec row (README, "Known vLLM behaviour"): with speculative decoding,
vLLM 0.32's scheduler pads a new one-token prompt that joins running decodes to 1 + num_spec
tokens (draft ids -1, "to preserve full cudagraph"); its GDN metadata then makes the request a
spec row, and the spec path reads the request's freshly allocated (recycled) slots as if they
held its state. The plugin marks such rows in vLLM's metadata builder and the layer op zeroes
their slots first (gdn_xpu/vllm_plugin.py, point 6).

- unit: vLLM's own builder on a batch with such a row: the plugin marks exactly that row,
  and zeroing its slots then running the op equals the reference of a new sequence;
- engine: 4 long prompts and 8 one-token prompts at max_num_seqs 4 with ngram speculation,
  routed, against plain greedy decoding (the near-tie rule; measured: every token identical),
  and the guard fired on every one-token prompt in every GDN layer.
"""

import json

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from batches import GDNConfig, assert_close, clone_args, make_batch  # noqa: E402
from gdn_xpu.reference import gdn_attention_reference  # noqa: E402
from test_vllm_padded_batches import (  # noqa: E402, F401
    builder, checkpoint, common_metadata, op_args)
from vllm_runs import (REFERENCE_TOP_LOGPROBS, check_same_greedy_generation,  # noqa: E402
                       generate, write_tiny_qwen3_next)

SPEC_CFG = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64, num_slots=16,
                     num_spec=2)


def test_builder_marks_new_requests_in_spec_rows_and_their_state_starts_at_zero(checkpoint):
    import gdn_xpu  # noqa: F401
    from gdn_xpu import ops, vllm_plugin

    vllm_plugin._mark_fresh_spec_rows()  # as register() does in every vLLM process
    b = builder(checkpoint, spec=True, full_graphs=False)
    # Row 0: a running request (10 tokens computed) with 2 drafts; row 1: a new one-token
    # prompt padded to 3 tokens by the scheduler (0 computed).
    base = make_batch(SPEC_CFG, spec_lens=(3, 3), padding_rows=0, seed=21, reserve_slot_zero=True)
    table = base["spec_state_indices_tensor"].tolist()
    md = b.build(0, common_metadata([3, 3], table, [13, 3]),
                 num_accepted_tokens=torch.tensor([2, 1], dtype=torch.int32),
                 num_decode_draft_tokens_cpu=torch.tensor([2, 2], dtype=torch.int32))
    assert md.num_spec_decodes == 2
    assert md.gdn_xpu_fresh_spec_rows.tolist() == [1]

    # The layer op's guard, then the kernel, against the reference of the same batch whose
    # row 1 starts from zero (a new sequence): the slots of row 1 zeroed, nothing else.
    a = op_args(base, md)
    ref = clone_args(a)
    before = clone_args(a)
    ops.reset_spec_slots([a["conv_state"], a["ssm_state"]], md.spec_state_indices_tensor,
                         md.gdn_xpu_fresh_spec_rows)
    for slot in range(SPEC_CFG.num_slots):
        zeroed = slot in table[1]
        for name in ("conv_state", "ssm_state"):
            assert torch.equal(a[name][slot], torch.zeros_like(a[name][slot]) if zeroed
                               else before[name][slot]), (name, slot)
    torch.ops.gdn_xpu.gdn_attention(**a)
    for slot in table[1]:
        ref["conv_state"][slot] = 0
        ref["ssm_state"][slot] = 0
    gdn_attention_reference(**ref)
    for name in ("core_attn_out", "ssm_state", "conv_state"):
        assert_close(name, a[name], ref[name], torch.float32)

    # A batch with no new request: nothing marked.
    md = b.build(0, common_metadata([3, 1], table, [13, 8]),
                 num_accepted_tokens=torch.tensor([2, 1], dtype=torch.int32),
                 num_decode_draft_tokens_cpu=torch.tensor([2, 0], dtype=torch.int32))
    assert md.gdn_xpu_fresh_spec_rows is None


def test_new_one_token_prompts_under_speculation_match_plain_greedy(tmp_path):
    path = write_tiny_qwen3_next(tmp_path / "ckpt")
    # Long prompts with staggered budgets keep decodes running while the one-token prompts
    # are admitted one by one into recycled slots (max_num_seqs 4).
    long = [list(range(400, 430)), [11, 12, 13] * 10, list(range(440, 470)), [21, 22] * 15]
    load = ([{"prompt": p, "max_tokens": n} for p, n in zip(long, (40, 34, 28, 22))]
            + [{"prompt": [t], "max_tokens": 16} for t in (7, 42, 300, 5, 123, 9, 60, 1)])
    requests_file = tmp_path / "requests.json"
    requests_file.write_text(json.dumps(load))
    run = ("--requests-file", str(requests_file), "--max-num-seqs", "4", "--no-prefix-caching",
           "--logprobs", REFERENCE_TOP_LOGPROBS)
    spec = generate(path, tmp_path, True, *run, "--spec")
    plain = generate(path, tmp_path, True, *run)
    print(f"guard reset {spec['fresh_spec_rows']} rows; spec rows {spec['spec']['row_len_hist']}"
          f"; largest state a spec row started from: {spec['spec_read_norm_max']:.3f}")
    gdn_layers = json.loads((path / "config.json").read_text())["layer_types"].count(
        "linear_attention")
    assert spec["fresh_spec_rows"] == 8 * gdn_layers, spec["fresh_spec_rows"]
    # Every spec row started from a live state or a zero one (live states here: ~0.06; without
    # the guard the new requests started from recycled slots of norm up to 67, README).
    assert spec["spec_read_norm_max"] < 1.0
    summary = check_same_greedy_generation(spec, plain, 0.02, "spec")
    print(f"spec vs plain: {summary}")
