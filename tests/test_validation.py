"""Bad input: every rule of gdn_xpu/validation.py raises a clear error naming the argument,
before any kernel runs, and leaves every output and cache bit-for-bit unchanged."""

import pytest
import torch

import gdn_xpu  # noqa: F401
from gdn_xpu import validation

from batches import GDNConfig, clone_args, make_batch

CFG = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64, num_spec=2,
                num_slots=16)


def valid_args():
    return make_batch(CFG, decode_lens=(1, 1), prefill_lens=(5, 3), spec_lens=(3, 2), seed=3)


def set_(name, value):
    def mutate(a):
        a[name] = value(a) if callable(value) else value
    return mutate


def index_value(name, position, value):
    def mutate(a):
        t = a[name].clone()
        t.view(-1)[position] = value
        a[name] = t
    return mutate


# (id, mutation of a valid batch, error type, words the message must contain)
BAD_INPUTS = [
    ("qkvz dtype", set_("projected_states_qkvz", lambda a: a["projected_states_qkvz"].double()),
     TypeError, "projected_states_qkvz"),
    ("ba dtype", set_("projected_states_ba", lambda a: a["projected_states_ba"].half()),
     TypeError, "projected_states_ba"),
    ("conv_state dtype", set_("conv_state", lambda a: a["conv_state"].half()), TypeError, "conv_state"),
    ("ssm_state dtype", set_("ssm_state", lambda a: a["ssm_state"].double()), TypeError, "ssm_state"),
    ("A_log dtype", set_("A_log", lambda a: a["A_log"].long()), TypeError, "A_log"),
    ("index dtype", set_("non_spec_query_start_loc", lambda a: a["non_spec_query_start_loc"].float()),
     TypeError, "non_spec_query_start_loc"),
    ("qkvz width", set_("projected_states_qkvz", lambda a: a["projected_states_qkvz"][:, 1:]),
     ValueError, "projected_states_qkvz"),
    ("ba rows", set_("projected_states_ba", lambda a: a["projected_states_ba"][:-1]),
     ValueError, "projected_states_ba"),
    ("out heads", set_("core_attn_out", lambda a: a["core_attn_out"][:, :2]), ValueError, "core_attn_out"),
    ("z rank", set_("z", lambda a: a["z"].flatten(1)), ValueError, "z has shape"),
    ("conv weights", set_("conv_weights", lambda a: a["conv_weights"][:-1]), ValueError, "conv_weights"),
    ("conv bias", set_("conv_bias", lambda a: a["conv_bias"][:-1]), ValueError, "conv_bias"),
    ("dt_bias", set_("dt_bias", lambda a: a["dt_bias"][:1]), ValueError, "dt_bias"),
    ("conv_state channels", set_("conv_state", lambda a: a["conv_state"][..., 1:].contiguous()),
     ValueError, "conv_state"),
    ("ssm_state layout", set_("ssm_state", lambda a: a["ssm_state"].transpose(2, 3).contiguous()[:, :, :, :32]),
     ValueError, "ssm_state"),
    ("ssm_state slots", set_("ssm_state", lambda a: a["ssm_state"][:-1]), ValueError, "ssm_state"),
    ("strided state", set_("ssm_state", lambda a: a["ssm_state"].transpose(2, 3)), ValueError,
     "contiguous within each cache slot"),
    ("out not contiguous", set_("core_attn_out", lambda a: a["core_attn_out"].transpose(0, 1).contiguous().transpose(0, 1)),
     ValueError, "core_attn_out must be contiguous"),
    ("tp divides", set_("tp_size", 3), ValueError, "tp_size"),
    ("gqa ratio", set_("num_v_heads", 3), ValueError, "num_v_heads"),
    ("head dim", set_("head_k_dim", 72), ValueError, "head_k_dim"),
    ("head dim large", set_("head_v_dim", 512), ValueError, "head_v_dim"),
    ("activation", set_("activation", "gelu"), ValueError, "activation"),
    ("num_actual_tokens", set_("num_actual_tokens", lambda a: a["projected_states_qkvz"].shape[0] + 1),
     ValueError, "num_actual_tokens"),
    ("negative count", set_("num_decodes", -1), ValueError, "num_decodes"),
    ("query_start_loc length", set_("non_spec_query_start_loc", lambda a: a["non_spec_query_start_loc"][:-2]),
     ValueError, "non_spec_query_start_loc"),
    ("query_start_loc missing", set_("non_spec_query_start_loc", None), ValueError, "non_spec_query_start_loc"),
    ("query_start_loc decreasing", index_value("non_spec_query_start_loc", 2, 0), ValueError,
     "non_spec_query_start_loc"),
    ("query_start_loc past tokens", index_value("spec_query_start_loc", -1, 1000), ValueError,
     "spec_query_start_loc"),
    ("token index out of range", index_value("non_spec_token_indx", 0, 10_000), ValueError,
     "non_spec_token_indx"),
    ("token rows shared", set_("spec_token_indx", lambda a: a["non_spec_token_indx"][:5].clone()),
     ValueError, "distinct token rows"),
    ("state index out of range", index_value("non_spec_state_indices_tensor", 1, 16), ValueError,
     "non_spec_state_indices_tensor"),
    ("state index negative", index_value("non_spec_state_indices_tensor", 0, -1), ValueError,
     "non_spec_state_indices_tensor"),
    ("spec index out of range", index_value("spec_state_indices_tensor", 3, 99), ValueError,
     "spec_state_indices_tensor"),
    ("spec table width", set_("spec_state_indices_tensor", lambda a: a["spec_state_indices_tensor"][:, :2]),
     ValueError, "spec_state_indices_tensor"),
    ("slot written twice", index_value("non_spec_state_indices_tensor", 1, None), ValueError,
     "same cache slot"),
    ("spec and non-spec share a slot", None, ValueError, "same cache slot"),
    # The rolling buffer is read from row acc-1: acc = 0 only in the per-slot layout.
    ("accepted zero", index_value("num_accepted_tokens", 0, 0), ValueError, "num_accepted_tokens"),
    ("accepted too many", index_value("num_accepted_tokens", 0, 4), ValueError, "num_accepted_tokens"),
    ("spec sequence too long", None, ValueError, "num_spec + 1"),
    # W-1 = 3 rows is the per-slot layout, W-1+num_spec = 5 the rolling buffer; 4 is neither.
    ("spec conv rows", set_("conv_state", lambda a: a["conv_state"][:, :4].contiguous()),
     ValueError, "num_spec"),
    ("has_initial_state length", set_("has_initial_state", lambda a: a["has_initial_state"][:1]),
     ValueError, "has_initial_state"),
]


def _special_cases(case_id, a):
    if case_id == "slot written twice":
        t = a["non_spec_state_indices_tensor"].clone()
        t[1] = t[0]
        a["non_spec_state_indices_tensor"] = t
    elif case_id == "spec and non-spec share a slot":
        t = a["spec_state_indices_tensor"].clone()
        t[0, 1] = a["non_spec_state_indices_tensor"][0]
        a["spec_state_indices_tensor"] = t
    elif case_id == "spec sequence too long":
        # The last spec sequence grows from 2 to 4 tokens (> num_spec + 1 = 3) by taking the
        # last prefill's last two rows.
        loc = a["spec_query_start_loc"].clone()
        loc[-1] += 2
        a["spec_query_start_loc"] = loc
        a["spec_token_indx"] = torch.cat([a["spec_token_indx"], a["non_spec_token_indx"][-2:]])
        a["non_spec_query_start_loc"] = a["non_spec_query_start_loc"].clone()
        a["non_spec_query_start_loc"][-1] -= 2


@pytest.mark.parametrize("case_id,mutate,error,words", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_before_anything_is_written(case_id, mutate, error, words):
    args = valid_args()
    if mutate is None or case_id == "slot written twice":
        _special_cases(case_id, args)
    else:
        mutate(args)
    before = clone_args(args)
    with pytest.raises(error, match=words.replace("+", r"\+")):
        torch.ops.gdn_xpu.gdn_attention(**args)
    for name, value in args.items():
        if isinstance(value, torch.Tensor) and value.device.type != "meta":
            assert torch.equal(value.nan_to_num(7.0), before[name].nan_to_num(7.0)), name


# Cases the index values decide: tracing cannot see them.
VALUE_CASES = {
    "query_start_loc decreasing", "query_start_loc past tokens", "token index out of range",
    "token rows shared", "state index out of range", "state index negative",
    "spec index out of range", "slot written twice", "spec and non-spec share a slot",
    "accepted zero", "accepted too many", "spec sequence too long"}


def on_meta(args):
    return {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in args.items()}


@pytest.mark.parametrize("case_id,mutate,error,words",
                         [c for c in BAD_INPUTS if c[0] not in VALUE_CASES],
                         ids=[c[0] for c in BAD_INPUTS if c[0] not in VALUE_CASES])
def test_fake_impl_refuses_what_tracing_can_see(case_id, mutate, error, words):
    # Meta tensors dispatch to the fake impl, as tracing does: the same error, not silence.
    args = valid_args()
    mutate(args)
    with pytest.raises(error, match=words.replace("+", r"\+")):
        torch.ops.gdn_xpu.gdn_attention(**on_meta(args))


def test_fake_impl_accepts_a_valid_batch():
    args = valid_args()
    torch.ops.gdn_xpu.gdn_attention(**on_meta(args))
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v
                for k, v in args.items()}
        torch.ops.gdn_xpu.gdn_attention(**fake)


def test_tensors_on_two_devices_are_refused():
    # Only the CPU exists here; one tensor on meta routes the call to the fake impl, which must
    # refuse it as the real op would.
    args = valid_args()
    args["A_log"] = args["A_log"].to("meta")
    with pytest.raises(ValueError, match="one device"):
        torch.ops.gdn_xpu.gdn_attention(**args)


def test_every_tensor_argument_is_checked_for_its_device():
    # Validation finds the tensors by name: the names are the schema's tensor arguments.
    schema = torch.ops.gdn_xpu.gdn_attention.default._schema
    tensors = [a.name for a in schema.arguments if "Tensor" in str(a.type)]
    assert list(validation.TENSOR_ARGUMENTS) == tensors
    for name in tensors:  # each one on another device is refused
        args = valid_args()
        if args[name] is None:
            continue
        args[name] = args[name].to("meta")
        with pytest.raises(ValueError, match="one device"):
            torch.ops.gdn_xpu.gdn_attention(**args)


def test_the_valid_batch_itself_runs():
    torch.ops.gdn_xpu.gdn_attention(**valid_args())


def test_index_entries_past_the_batch_are_ignored():
    # Index tensors may be longer than the batch counts need (vLLM's persistent buffers): what
    # lies past the batch, here values every check would refuse, is neither checked nor read.
    exact = valid_args()
    longer = clone_args(exact)
    tails = {"non_spec_query_start_loc": [0, 10_000], "spec_query_start_loc": [0, 10_000],
             "non_spec_state_indices_tensor": [99, -1], "num_accepted_tokens": [0, 99],
             "non_spec_token_indx": [10_000], "spec_token_indx": [-5],
             "has_initial_state": [True, False]}
    for name, tail in tails.items():
        t = longer[name]
        longer[name] = torch.cat([t, torch.tensor(tail, dtype=t.dtype)])
    spec = longer["spec_state_indices_tensor"]
    longer["spec_state_indices_tensor"] = torch.cat([spec, torch.full_like(spec[:1], 99)])
    torch.ops.gdn_xpu.gdn_attention(**exact)
    torch.ops.gdn_xpu.gdn_attention(**longer)
    for name in ("core_attn_out", "z", "conv_state", "ssm_state"):  # rows no sequence owns: NaN
        assert torch.equal(longer[name].nan_to_num(7.0), exact[name].nan_to_num(7.0)), name


def test_layer_op_refuses_bad_input_the_same_way():
    from gdn_xpu.forward_context import set_forward_context
    from gdn_xpu.layer import GatedDeltaNet
    from gdn_xpu.metadata import build_metadata

    layer = GatedDeltaNet(32, 2, 4, 64, 64, prefix="l0")
    layer.allocate_cache(2)
    plan = build_metadata([3], [0], [5])  # slot 5 of a 2-slot cache
    x = torch.randn(3, 32)
    cache = [t.clone() for t in layer.kv_cache]
    with set_forward_context({"l0": plan.metadata}, {"l0": layer}):
        with pytest.raises(ValueError, match="non_spec_state_indices_tensor"):
            layer(x)
    assert all(torch.equal(a, b) for a, b in zip(layer.kv_cache, cache))
