"""Batches shaped by vLLM's graph modes (README, "Padded batches and graphs"), without vLLM:

- padded rows (zero tokens, slot 0 = vLLM's NULL_BLOCK_ID; spec ones with acc 1) beside real
  rows: real rows exact, slot 0 untouched;
- capture and dummy batches (every row non-empty on slot 0): accepted, other slots untouched;
- validation: slot 0 may repeat, any other slot is written by one non-empty sequence only;
- no host read of index values while an XPU stream is being captured, even with
  GDN_XPU_CHECK_INDICES=1 (exercised on CPU tensors up to the device boundary);
- the host launcher recorded into a SYCL graph (sycl_ext_oneapi_graph) on the OpenCL CPU
  device and replayed, against eager steps.

vLLM's own metadata builder driving the op: test_vllm_padded_batches.py.
"""

import ctypes
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

import gdn_xpu  # noqa: F401  (registers the ops)
from gdn_xpu import _runtime, ops, validation
from gdn_xpu.reference import gdn_attention_reference

from batches import GDNConfig, assert_close, clone_args, make_batch, run_against_reference

NULL = validation.NULL_SLOT
CFG = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64, num_slots=16)
SPEC_CFG = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64, num_slots=16,
                     num_spec=2)


def pad_non_spec(args: dict, rows: int) -> dict:
    """Append `rows` padded non-spec rows as vLLM's FULL graph mode does: zero tokens (the
    start locations repeat their end), slot NULL_BLOCK_ID, counted in num_decodes; and
    num_actual_tokens counts the padded token rows too."""
    loc, slots = args["non_spec_query_start_loc"], args["non_spec_state_indices_tensor"]
    args["non_spec_query_start_loc"] = torch.cat([loc, loc[-1:].repeat(rows)])
    args["non_spec_state_indices_tensor"] = torch.cat(
        [slots, torch.full((rows,), NULL, dtype=slots.dtype)])
    if args["has_initial_state"] is not None:
        args["has_initial_state"] = torch.cat(
            [args["has_initial_state"], torch.zeros(rows, dtype=torch.bool)])
    args["num_decodes"] += rows
    args["num_actual_tokens"] = args["projected_states_qkvz"].shape[0]
    return args


def pad_spec(args: dict, rows: int) -> dict:
    """Padded spec rows: zero tokens, every column slot 0, num_accepted_tokens 1."""
    loc, table = args["spec_query_start_loc"], args["spec_state_indices_tensor"]
    args["spec_query_start_loc"] = torch.cat([loc, loc[-1:].repeat(rows)])
    args["spec_state_indices_tensor"] = torch.cat(
        [table, torch.full((rows, table.shape[1]), NULL, dtype=table.dtype)])
    args["num_accepted_tokens"] = torch.cat(
        [args["num_accepted_tokens"], torch.ones(rows, dtype=torch.int32)])
    args["num_spec_decodes"] += rows
    args["num_actual_tokens"] = args["projected_states_qkvz"].shape[0]
    return args


@pytest.mark.parametrize("kind", ["decode", "spec"])
def test_padded_rows_leave_real_rows_exact_and_slot_zero_untouched(kind):
    if kind == "decode":
        args = pad_non_spec(make_batch(CFG, decode_lens=(1,) * 5, seed=1,
                                       reserve_slot_zero=True), rows=3)
    else:
        args = pad_spec(make_batch(SPEC_CFG, spec_lens=(3, 1, 2), seed=2,
                                   reserve_slot_zero=True), rows=5)
    slot0 = (args["conv_state"][NULL].clone(), args["ssm_state"][NULL].clone())
    run_against_reference(args)  # real rows against the reference, unnamed slots untouched
    # Padded rows have no tokens: they neither read nor write their slot.
    assert torch.equal(args["conv_state"][NULL], slot0[0])
    assert torch.equal(args["ssm_state"][NULL], slot0[1])


@pytest.mark.parametrize("cfg,lens", [(CFG, "decode"), (SPEC_CFG, "spec")], ids=["decode", "spec"])
def test_capture_batch_every_row_on_slot_zero(cfg, lens):
    # vLLM's capture and dummy runs: every row non-empty and on slot 0 (scratch). Accepted;
    # every other slot bit-identical; outputs finite.
    if lens == "decode":
        args = make_batch(cfg, decode_lens=(1,) * 6, seed=3)
        args["non_spec_state_indices_tensor"].fill_(NULL)
    else:
        args = make_batch(cfg, spec_lens=(3, 3, 3, 3), seed=4)
        args["spec_state_indices_tensor"].fill_(NULL)
        args["num_accepted_tokens"] = torch.full((4,), 3, dtype=torch.int32)
    before = clone_args(args)
    torch.ops.gdn_xpu.gdn_attention(**args)
    n = args["num_actual_tokens"]
    assert torch.isfinite(args["core_attn_out"][:n]).all()
    assert torch.equal(args["ssm_state"][1:], before["ssm_state"][1:])
    assert torch.equal(args["conv_state"][1:], before["conv_state"][1:])


def test_slot_zero_may_repeat_other_slots_may_not():
    args = make_batch(CFG, decode_lens=(1, 1, 1), prefill_lens=(4,), seed=5,
                      reserve_slot_zero=True)
    slots = args["non_spec_state_indices_tensor"]
    # Two non-empty sequences on slot 0: vLLM's scratch, accepted.
    ok = clone_args(args)
    ok["non_spec_state_indices_tensor"][:2] = NULL
    validation.check_gdn_attention_args(ok)
    # Two non-empty sequences on one other slot: refused, nothing written.
    bad = clone_args(args)
    bad["non_spec_state_indices_tensor"][1] = slots[0]
    before = clone_args(bad)
    with pytest.raises(ValueError, match="same cache slot"):
        torch.ops.gdn_xpu.gdn_attention(**bad)
    assert torch.equal(bad["ssm_state"], before["ssm_state"])
    # Spec rows too: a padded spec row's columns are slot 0; a real one's column on a non-spec
    # sequence's slot is refused.
    spec = pad_spec(make_batch(SPEC_CFG, decode_lens=(1,), spec_lens=(2,), seed=6,
                               reserve_slot_zero=True), rows=2)
    validation.check_gdn_attention_args(spec)
    spec["spec_state_indices_tensor"][0, 1] = spec["non_spec_state_indices_tensor"][0]
    with pytest.raises(ValueError, match="same cache slot"):
        validation.check_gdn_attention_args(spec)


def test_zero_length_rows_are_accepted_wherever_they_point():
    # A zero-length row reads and writes nothing, so even a slot shared with a real row is no
    # conflict; the real rows stay exact.
    args = make_batch(CFG, decode_lens=(1, 1), prefill_lens=(6,), seed=7, reserve_slot_zero=True)
    loc = args["non_spec_query_start_loc"]
    args["non_spec_query_start_loc"] = torch.cat([loc[:2], loc[1:]])  # an empty row 1
    slots = args["non_spec_state_indices_tensor"]
    args["non_spec_state_indices_tensor"] = torch.cat([slots[:1], slots[:1], slots[1:]])
    args["has_initial_state"] = torch.cat([args["has_initial_state"][:1],
                                           args["has_initial_state"]])
    args["num_decodes"] += 1
    run_against_reference(args)


class _Refuse:
    """Stands in for every host read of tensor values."""

    def __init__(self):
        self.reads = 0

    def __call__(self, *args, **kwargs):
        self.reads += 1
        raise AssertionError("host read of index values")


def _fake_xpu_batch(monkeypatch, capturing: bool, check_indices: str):
    """A CPU batch the op treats as XPU tensors (validation's device seam), with a slot out of
    range that only a value check would see, and the extension replaced by a recorder: the op
    runs up to the device boundary."""
    args = make_batch(CFG, decode_lens=(1, 1), seed=8)
    args["non_spec_state_indices_tensor"][1] = CFG.num_slots + 3
    monkeypatch.setattr(validation, "_batch_device", lambda t: torch.device("xpu", 0))
    monkeypatch.setenv("GDN_XPU_CHECK_INDICES", check_indices)
    monkeypatch.setattr(torch.xpu, "is_current_stream_capturing", lambda: capturing)
    launches = []

    class Extension:
        def gdn_attention(self, *launch):
            launches.append(launch)
    monkeypatch.setattr(_runtime, "extension", lambda: Extension())
    monkeypatch.setattr(_runtime, "queue_address", lambda device: 0xC0FFEE)
    return args, launches


def test_no_host_read_during_xpu_graph_capture_even_with_check_indices(monkeypatch):
    args, launches = _fake_xpu_batch(monkeypatch, capturing=True, check_indices="1")
    refuse = _Refuse()
    monkeypatch.setattr(validation, "_check_index_values", refuse)
    for name in ("cpu", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    torch.ops.gdn_xpu.gdn_attention(**args)
    assert refuse.reads == 0 and len(launches) == 1 and launches[0][-1] == 0xC0FFEE


def test_xpu_index_values_checked_outside_capture_with_check_indices(monkeypatch):
    args, launches = _fake_xpu_batch(monkeypatch, capturing=False, check_indices="1")
    with pytest.raises(ValueError, match="non_spec_state_indices_tensor"):
        torch.ops.gdn_xpu.gdn_attention(**args)
    assert not launches
    # Without GDN_XPU_CHECK_INDICES=1 an XPU batch's values are not read (a copy per call).
    monkeypatch.setenv("GDN_XPU_CHECK_INDICES", "0")
    refuse = _Refuse()
    monkeypatch.setattr(validation, "_check_index_values", refuse)
    torch.ops.gdn_xpu.gdn_attention(**args)
    assert refuse.reads == 0 and len(launches) == 1


def test_cpu_batches_are_never_captured(monkeypatch):
    # CPU tensors live in host memory: their values are always checked, whatever torch.xpu says.
    monkeypatch.setattr(torch.xpu, "is_current_stream_capturing", lambda: True)
    assert not validation.graph_capture_underway(torch.device("cpu"))
    assert validation.check_values_on_device(torch.device("cpu"))
    assert validation.graph_capture_underway(torch.device("xpu", 0))
    assert not validation.check_values_on_device(torch.device("xpu", 0))


# SYCL graph recording of the launcher on the OpenCL CPU device.

@pytest.fixture(scope="module")
def recorder(tmp_path_factory):
    include, lib = pathlib.Path(sys.prefix, "include"), pathlib.Path(sys.prefix, "lib")
    if shutil.which("g++") is None or not (include / "sycl" / "sycl.hpp").exists():
        pytest.skip("needs g++ and intel-sycl-rt's headers in this environment")
    _runtime.extension()  # points the OpenCL loader at the CPU runtime before libsycl loads
    out = tmp_path_factory.mktemp("sycl_graph") / "graph_recorder.so"
    source = pathlib.Path(__file__).parent / "sycl_graph" / "graph_recorder.cpp"
    build = subprocess.run(["g++", "-std=c++17", "-O1", "-shared", "-fPIC",
                            "-DSYCL_DISABLE_FSYCL_SYCLHPP_WARNING", f"-I{include}", str(source),
                            f"-L{lib}", "-lsycl", f"-Wl,-rpath,{lib}", "-o", str(out)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    so = ctypes.CDLL(str(out))
    for name in ("gr_queue", "gr_begin_recording", "gr_end_recording"):
        getattr(so, name).restype = ctypes.c_void_p
    so.gr_last_error.restype = ctypes.c_char_p
    so.gr_graph_aspects.argtypes = [ctypes.c_void_p]
    so.gr_begin_recording.argtypes = [ctypes.c_void_p]
    so.gr_end_recording.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_long)]
    so.gr_replay.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    queue = so.gr_queue()
    assert queue, so.gr_last_error()
    return so, queue


def _check(ok, so):
    assert ok, so.gr_last_error().decode()
    return ok


def test_decode_step_recorded_into_a_sycl_graph_replays_like_eager(recorder):
    so, queue = recorder
    aspects = so.gr_graph_aspects(queue)
    # Measured on Intel's OpenCL CPU runtime 2026.1.2 (cl_khr_command_buffer): limited graphs.
    print(f"ext_oneapi_graph {bool(aspects & 1)}, ext_oneapi_limited_graph {bool(aspects & 2)}")
    if not aspects:
        pytest.skip("this SYCL CPU device records no graphs")

    # A FULL-graph decode batch: 5 real rows padded to 8 (the captured size).
    step1 = pad_non_spec(make_batch(CFG, decode_lens=(1,) * 5, padding_rows=3, seed=9,
                                    reserve_slot_zero=True), rows=3)
    # Step 2 reuses the graph with new inputs and a smaller real batch: row 4 becomes padding,
    # its start location repeats the end and its slot turns 0, in the same index buffers.
    gen = torch.Generator().manual_seed(10)
    qkvz2 = torch.randn(step1["projected_states_qkvz"].shape, generator=gen)
    ba2 = torch.randn(step1["projected_states_ba"].shape, generator=gen)

    def to_step2(a):
        a["projected_states_qkvz"].copy_(qkvz2)
        a["projected_states_ba"].copy_(ba2)
        a["non_spec_query_start_loc"][5:] = 4
        a["non_spec_state_indices_tensor"][4] = NULL

    eager = clone_args(step1)
    torch.ops.gdn_xpu.gdn_attention(**eager)
    eager1 = clone_args(eager)
    to_step2(eager)
    torch.ops.gdn_xpu.gdn_attention(**eager)

    graph_args = clone_args(step1)
    validation.check_gdn_attention_args(graph_args)
    launch = ops.launcher_args(graph_args)  # kept alive as long as the graph
    untouched = clone_args(graph_args)
    graph = _check(so.gr_begin_recording(queue), so)
    _runtime.extension().gdn_attention(*launch, queue)
    nodes = ctypes.c_long(-1)
    executable = _check(so.gr_end_recording(queue, graph, ctypes.byref(nodes)), so)
    print(f"recorded {nodes.value} graph nodes")
    assert nodes.value >= 3  # parameters and z, recurrent kernel, conv state update
    # Recording ran nothing.
    for name in ("core_attn_out", "z", "conv_state", "ssm_state"):
        assert torch.equal(graph_args[name].nan_to_num(7.0), untouched[name].nan_to_num(7.0))

    def same(a, b):  # bit for bit; NaN (rows nobody writes) where the other has NaN
        return torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))

    _check(so.gr_replay(queue, executable), so)
    for name in ("core_attn_out", "z", "conv_state", "ssm_state"):
        assert same(graph_args[name], eager1[name]), f"step 1 {name}"
    to_step2(graph_args)
    _check(so.gr_replay(queue, executable), so)
    for name in ("core_attn_out", "z", "conv_state", "ssm_state"):
        assert same(graph_args[name], eager[name]), f"step 2 {name}"
    # And the replayed step 2 is right, not only equal to eager: against the reference.
    ref = clone_args(eager1)
    to_step2(ref)
    gdn_attention_reference(**ref)
    assert_close("core_attn_out", graph_args["core_attn_out"][:4], ref["core_attn_out"][:4],
                 torch.float32)
    assert_close("ssm_state", graph_args["ssm_state"], ref["ssm_state"], torch.float32)
