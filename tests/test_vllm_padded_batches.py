"""vLLM's own GDN metadata builder (vllm.v1.attention.backends.gdn_attn) in FULL graph mode,
on CPU tensors, feeding the raw op (README, "Padded batches and graphs").

FULL graph mode is never on for CPU in vLLM, so the builder gets a real engine config (from a
tiny checkpoint, as vLLM makes it) with cudagraph_mode switched to FULL afterwards; the batches
are laid out as vLLM's model runner lays them out:

- the capture batch (build_for_cudagraph_capture): every row non-empty, on slot 0 (the
  dummy run's block table);
- a padded batch: real rows, then rows of zero tokens whose block-table row is NULL_BLOCK_ID,
  num_actual_tokens the padded token count (and, for spec, padded rows drafting nothing, -1);
- a replay: the captured counts with the builder's persistent buffers as the padded batch's
  build refilled them (what a replayed graph reads).

Real rows must equal the reference run on the same real batch built without graphs (eager);
slot 0 must be untouched by padded rows; the capture batch must leave every other slot alone.
"""

import itertools

import pytest
import torch

from batches import GDNConfig, assert_close, clone_args, make_batch
from gdn_xpu.reference import gdn_attention_reference

pytest.importorskip("vllm")

from vllm.v1.attention.backends.utils import NULL_BLOCK_ID  # noqa: E402

NUM_SPEC = 2
CFG = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64, num_slots=16)
SPEC_CFG = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64, num_slots=16,
                     num_spec=NUM_SPEC)
CAPTURE_REQS = 8  # the captured batch size (requests)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

    cfg = Qwen3NextConfig(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        layer_types=["linear_attention", "full_attention"], num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, linear_num_key_heads=2, linear_num_value_heads=4,
        linear_key_head_dim=64, linear_value_head_dim=64, linear_conv_kernel_dim=4,
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
        shared_expert_intermediate_size=64, decoder_sparse_step=1, mlp_only_layers=[0],
        max_position_embeddings=512, tie_word_embeddings=False)
    cfg.architectures = ["Qwen3NextForCausalLM"]
    path = tmp_path_factory.mktemp("tiny_qwen3_next_config")
    torch.manual_seed(0)
    Qwen3NextForCausalLM(cfg).save_pretrained(path)
    return path


def builder(checkpoint, *, spec: bool, full_graphs: bool):
    """vLLM's GDNAttentionMetadataBuilder for a real engine config of the checkpoint."""
    from vllm.config import set_current_vllm_config
    from vllm.config.compilation import CUDAGraphMode
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.attention.backends.gdn_attn import GDNAttentionMetadataBuilder
    from vllm.v1.kv_cache_interface import MambaSpec

    extra = {}
    if spec:
        extra["speculative_config"] = {"method": "ngram", "num_speculative_tokens": NUM_SPEC,
                                       "prompt_lookup_max": 3, "prompt_lookup_min": 2}
    config = EngineArgs(model=str(checkpoint), skip_tokenizer_init=True, dtype="float32",
                        max_model_len=256, max_num_seqs=CAPTURE_REQS,
                        enable_prefix_caching=False, **extra).create_engine_config()
    # vLLM turns graphs off on CPU; FULL is what XPU with torch 2.11+ runs.
    config.compilation_config.cudagraph_mode = (CUDAGraphMode.FULL if full_graphs
                                                else CUDAGraphMode.NONE)
    cfg = SPEC_CFG if spec else CFG
    C = 2 * cfg.num_k_heads * cfg.head_k_dim + cfg.num_v_heads * cfg.head_v_dim
    kv_spec = MambaSpec(block_size=16, shapes=((cfg.conv_state_rows, C),
                                               (cfg.num_v_heads, cfg.head_v_dim, cfg.head_k_dim)),
                        dtypes=(torch.float32, torch.float32), mamba_cache_mode="none",
                        num_speculative_blocks=NUM_SPEC if spec else 0)
    with set_current_vllm_config(config):
        b = GDNAttentionMetadataBuilder(kv_spec, ["model.layers.0.linear_attn"], config,
                                        torch.device("cpu"))
    assert b.use_full_cuda_graph == full_graphs
    return b


def common_metadata(query_lens, block_rows, seq_lens, num_tokens=None):
    """CommonAttentionMetadata as vLLM's model runner fills it: padded requests repeat the
    query start's end and carry seq_len 0; num_tokens is the (padded) token count."""
    from vllm.v1.attention.backend import CommonAttentionMetadata

    loc = torch.tensor([0, *itertools.accumulate(query_lens)], dtype=torch.int32)
    lens = torch.tensor(seq_lens, dtype=torch.int32)
    num_tokens = num_tokens or int(loc[-1])
    return CommonAttentionMetadata(
        query_start_loc=loc, query_start_loc_cpu=loc.clone(), seq_lens=lens,
        num_reqs=len(query_lens), num_actual_tokens=num_tokens, max_query_len=max(query_lens),
        max_seq_len=max(seq_lens), block_table_tensor=torch.tensor(block_rows, dtype=torch.int32),
        slot_mapping=torch.zeros(num_tokens, dtype=torch.int64),
        is_prefilling=torch.zeros(len(query_lens), dtype=torch.bool),
        seq_lens_cpu_upper_bound=lens.clone())


def op_args(base: dict, md) -> dict:
    """The raw op's arguments: a layer's tensors from `base`, the batch from vLLM's metadata
    (what gdn_xpu.layer.raw_op_args passes)."""
    a = clone_args(base)
    for name in ("num_prefills", "num_decodes", "num_spec_decodes", "has_initial_state",
                 "non_spec_query_start_loc", "non_spec_token_indx",
                 "non_spec_state_indices_tensor", "spec_query_start_loc", "spec_token_indx",
                 "spec_state_indices_tensor", "num_accepted_tokens", "num_actual_tokens"):
        a[name] = getattr(md, name)
    return a


def check_real_rows(out: dict, oracle: dict, real_tokens: int, label: str) -> None:
    assert_close(f"{label} core_attn_out", out["core_attn_out"][:real_tokens],
                 oracle["core_attn_out"][:real_tokens], torch.float32)
    assert_close(f"{label} z", out["z"][:real_tokens], oracle["z"][:real_tokens], torch.float32)
    # Every slot: real ones against the reference; slot 0 and unused ones unchanged in both.
    assert_close(f"{label} ssm_state", out["ssm_state"], oracle["ssm_state"], torch.float32)
    assert_close(f"{label} conv_state", out["conv_state"], oracle["conv_state"], torch.float32)
    for name in ("ssm_state", "conv_state"):
        assert torch.equal(out[name][NULL_BLOCK_ID], oracle[name][NULL_BLOCK_ID]), label


def check_capture_run(base: dict, md) -> None:
    a = op_args(base, md)
    torch.ops.gdn_xpu.gdn_attention(**a)
    assert torch.isfinite(a["core_attn_out"][:md.num_actual_tokens]).all()
    for name in ("ssm_state", "conv_state"):
        assert torch.equal(a[name][1:], base[name][1:]), f"capture run wrote {name} slots > 0"


def test_full_graph_decode_batches(checkpoint):
    import gdn_xpu  # noqa: F401

    real = 5
    base = make_batch(CFG, decode_lens=(1,) * real, padding_rows=CAPTURE_REQS - real, seed=11,
                      reserve_slot_zero=True)
    slots = base["non_spec_state_indices_tensor"].tolist()
    context = [7, 3, 12, 1, 30]
    full = builder(checkpoint, spec=False, full_graphs=True)

    capture = full.build_for_cudagraph_capture(common_metadata(
        [1] * CAPTURE_REQS, [[NULL_BLOCK_ID]] * CAPTURE_REQS, [1] * CAPTURE_REQS))
    assert capture.num_decodes == CAPTURE_REQS and capture.num_prefills == 0
    assert capture.non_spec_state_indices_tensor.tolist() == [NULL_BLOCK_ID] * CAPTURE_REQS
    check_capture_run(base, capture)

    pad = CAPTURE_REQS - real
    padded = full.build(0, common_metadata(
        [1] * real + [0] * pad, [[s] for s in slots] + [[NULL_BLOCK_ID]] * pad,
        [c + 1 for c in context] + [0] * pad, num_tokens=CAPTURE_REQS))
    print(f"padded decode batch: num_decodes {padded.num_decodes}, slots "
          f"{padded.non_spec_state_indices_tensor.tolist()}, query_start_loc "
          f"{padded.non_spec_query_start_loc.tolist()}")
    assert padded.non_spec_state_indices_tensor.tolist() == slots + [NULL_BLOCK_ID] * pad
    # The replayed graph reads the capture's views of the same persistent buffers.
    assert (capture.non_spec_state_indices_tensor.data_ptr()
            == padded.non_spec_state_indices_tensor.data_ptr())

    eager_md = builder(checkpoint, spec=False, full_graphs=False).build(0, common_metadata(
        [1] * real, [[s] for s in slots], [c + 1 for c in context]))
    oracle = op_args(base, eager_md)
    gdn_attention_reference(**oracle)
    for label, md in (("padded build", padded), ("replay with captured counts", capture)):
        a = op_args(base, md)
        torch.ops.gdn_xpu.gdn_attention(**a)
        check_real_rows(a, oracle, real, label)


def test_full_graph_spec_decode_batches(checkpoint):
    import gdn_xpu  # noqa: F401

    real, width = 2, NUM_SPEC + 1
    reqs = 4
    base = make_batch(SPEC_CFG, spec_lens=(width,) * real, padding_rows=(reqs - real) * width,
                      seed=12, reserve_slot_zero=True)
    base["num_accepted_tokens"] = torch.tensor([3, 2], dtype=torch.int32)  # drafts accepted
    table = base["spec_state_indices_tensor"].tolist()
    accepted = base["num_accepted_tokens"].tolist()
    full = builder(checkpoint, spec=True, full_graphs=True)

    capture = full.build_for_cudagraph_capture(common_metadata(
        [width] * reqs, [[NULL_BLOCK_ID] * width] * reqs, [width] * reqs))
    assert capture.num_spec_decodes == reqs and capture.num_decodes == 0
    assert capture.spec_state_indices_tensor.unique().tolist() == [NULL_BLOCK_ID]
    check_capture_run(base, capture)

    pad = reqs - real
    meta = common_metadata([width] * real + [0] * pad, table + [[NULL_BLOCK_ID] * width] * pad,
                           [20, 9] + [0] * pad, num_tokens=reqs * width)
    # The runner: padded requests draft nothing (-1); their accepted counts are stale.
    drafts = torch.tensor([NUM_SPEC] * real + [-1] * pad, dtype=torch.int32)
    padded = full.build(0, meta, num_accepted_tokens=torch.tensor(
        accepted + [0] * pad, dtype=torch.int32), num_decode_draft_tokens_cpu=drafts)
    print(f"padded spec batch: num_spec_decodes {padded.num_spec_decodes}, table "
          f"{padded.spec_state_indices_tensor.tolist()}, accepted "
          f"{padded.num_accepted_tokens.tolist()}, query_start_loc "
          f"{padded.spec_query_start_loc.tolist()}")
    assert padded.spec_state_indices_tensor.tolist() == table + [[NULL_BLOCK_ID] * width] * pad
    assert padded.num_accepted_tokens.tolist() == accepted + [1] * pad

    eager_md = builder(checkpoint, spec=True, full_graphs=False).build(
        0, common_metadata([width] * real, table, [20, 9]),
        num_accepted_tokens=torch.tensor(accepted, dtype=torch.int32),
        num_decode_draft_tokens_cpu=drafts[:real])
    oracle = op_args(base, eager_md)
    gdn_attention_reference(**oracle)
    for label, md in (("padded build", padded), ("replay with captured counts", capture)):
        a = op_args(base, md)
        torch.ops.gdn_xpu.gdn_attention(**a)
        check_real_rows(a, oracle, real * width, label)
