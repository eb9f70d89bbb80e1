"""Faults and extremes: a missing device, a mixed CPU runtime set or a broken kernel source is
a clear error at first use; NaN stays inside its sequence; concurrent calls are correct; long runs and extreme gates
stay finite and match the reference."""

import os
import subprocess
import sys
import threading

import pytest
import torch

import gdn_xpu  # noqa: F401
from gdn_xpu.reference import gdn_attention_reference

from batches import GDNConfig, assert_close, clone_args, make_batch

CFG = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64, num_slots=8)


def run_python(code: str, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


# A one-token decode on a zero cache, run in a fresh process; prints the error if any.
ONE_DECODE = """
try:
    torch.ops.gdn_xpu.gdn_attention(torch.zeros(1, 4, 64), torch.zeros(1, 4, 64),
        torch.zeros(1, 768), torch.zeros(1, 8), 2, 4, 64, 64, torch.zeros(1, 3, 512),
        torch.zeros(1, 4, 64, 64), torch.zeros(512, 4), None, "silu", torch.zeros(4),
        torch.zeros(4), 0, 1, 0, None, torch.tensor([0, 1], dtype=torch.int32), None,
        torch.tensor([0], dtype=torch.int32), None, None, None, None, 1, 1, True)
    print("ran")
except RuntimeError as e:
    print("error:", e)
"""


def test_no_sycl_device_is_an_error_at_first_use_not_at_import():
    result = run_python("import torch, gdn_xpu\nprint('imported')\n" + ONE_DECODE,
                        OCL_ICD_FILENAMES="/nonexistent/libintelocl.so")
    assert "imported" in result.stdout, result.stderr
    assert "error:" in result.stdout and "intel-opencl-rt" in result.stdout, result.stdout + result.stderr


def test_a_mixed_cpu_runtime_set_is_refused_before_any_kernel(monkeypatch):
    # intel-opencl-rt of another release than intel-sycl-rt returned outputs unwritten.
    from gdn_xpu import _runtime

    versions = {"intel-sycl-rt": "2025.3.3", "intel-opencl-rt": "2026.1.2"}
    monkeypatch.setattr(_runtime, "_version", versions.get)
    monkeypatch.setattr(_runtime, "_cpu_runtime_checked", False)
    args = make_batch(CFG, decode_lens=(1,))
    before = clone_args(args)
    with pytest.raises(RuntimeError, match="intel-opencl-rt==2025.3.3"):
        torch.ops.gdn_xpu.gdn_attention(**args)
    assert torch.equal(args["ssm_state"], before["ssm_state"])
    versions.update({"intel-sycl-rt": "2025.1.0", "intel-opencl-rt": "2025.1.0"})
    with pytest.warns(RuntimeWarning, match="2025.2"):
        _runtime.check_cpu_runtime_set()


def test_kernel_compile_failure_carries_the_compiler_log():
    result = run_python("import torch, gdn_xpu\nfrom gdn_xpu import _runtime\n"
                        "_runtime.extension().set_kernel_source('this is not C++;')\n" + ONE_DECODE,
                        GDN_XPU_CACHE_DIR="")
    assert "compiling the GDN kernels" in result.stdout, result.stdout + result.stderr
    assert "error" in result.stdout.split("failed", 1)[-1], result.stdout  # the compiler's words


def test_nan_in_one_sequence_stays_in_that_sequence():
    args = make_batch(CFG, decode_lens=(1, 1), prefill_lens=(6, 4), seed=21, padding_rows=0)
    ref = clone_args(args)  # the clean batch: other sequences must come out exactly as here
    # Poison the first prefill (sequence 2, rows 2..7): NaN in a k channel, Inf in a gate.
    key_column = 2 * 64 + 1  # flat layout: q of both k-heads (2 * 64 columns), then k
    args["projected_states_qkvz"][3, key_column] = float("nan")
    args["projected_states_ba"][4, 0] = float("inf")
    torch.ops.gdn_xpu.gdn_attention(**args)
    gdn_attention_reference(**ref)
    slots = args["non_spec_state_indices_tensor"].tolist()
    for seq, rows in ((0, [0]), (1, [1]), (3, list(range(8, 12)))):
        assert_close(f"core_attn_out of sequence {seq}", args["core_attn_out"][rows],
                     ref["core_attn_out"][rows], CFG.dtype)
        assert_close(f"ssm_state of sequence {seq}", args["ssm_state"][slots[seq]],
                     ref["ssm_state"][slots[seq]], CFG.state_dtype)
    assert torch.isnan(args["ssm_state"][slots[2]]).any()  # the poisoned sequence's own state


def test_a_nan_with_every_payload_bit_stays_nan_in_bf16():
    # Rounding to bf16 by adding to the bits carries this NaN into the sign bit: -0.
    cfg = GDNConfig(num_k_heads=1, num_v_heads=2, head_k_dim=64, head_v_dim=64,
                    dtype=torch.bfloat16)
    args = make_batch(cfg, decode_lens=(1,), seed=4, padding_rows=0)
    slot = args["non_spec_state_indices_tensor"][0]
    args["ssm_state"][slot, 0, 5].view(torch.int32).fill_(0x7FFFFFFF)  # head 0, row 5
    torch.ops.gdn_xpu.gdn_attention(**args)
    assert torch.isnan(args["core_attn_out"][0, 0, 5])
    assert not torch.isnan(args["core_attn_out"][0, 1]).any()  # the other head


def test_a_slot_without_initial_state_is_not_read():
    # The kernels read such a slot's rows and mask them to 0: NaN there must not leak.
    args = make_batch(CFG, prefill_lens=(1, 20), seed=6, padding_rows=0)
    args["has_initial_state"].fill_(False)
    for slot in args["non_spec_state_indices_tensor"].tolist():
        args["ssm_state"][slot] = float("nan")
    ref = clone_args(args)
    torch.ops.gdn_xpu.gdn_attention(**args)
    gdn_attention_reference(**ref)
    assert_close("core_attn_out", args["core_attn_out"], ref["core_attn_out"], CFG.dtype)
    assert_close("ssm_state", args["ssm_state"], ref["ssm_state"], CFG.state_dtype)


def test_two_threads_on_different_caches():
    batches = [make_batch(CFG, decode_lens=(1,) * 3, prefill_lens=(40, 9), seed=s) for s in (1, 2)]
    refs = [clone_args(b) for b in batches]
    errors = []

    def run(b):
        try:
            for _ in range(3):
                torch.ops.gdn_xpu.gdn_attention(**b)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for ref in refs:
        for _ in range(3):
            gdn_attention_reference(**ref)
    for b, ref in zip(batches, refs):
        assert_close("ssm_state after 3 calls", b["ssm_state"], ref["ssm_state"], CFG.state_dtype)
        assert_close("conv_state after 3 calls", b["conv_state"], ref["conv_state"], CFG.dtype)


def assert_finite_and_matches(args, cfg):
    ref = clone_args(args)
    torch.ops.gdn_xpu.gdn_attention(**args)
    gdn_attention_reference(**ref)
    assert torch.isfinite(args["ssm_state"]).all() and torch.isfinite(args["core_attn_out"]).all()
    assert_close("core_attn_out", args["core_attn_out"], ref["core_attn_out"], cfg.dtype)
    assert_close("ssm_state", args["ssm_state"], ref["ssm_state"], cfg.state_dtype)


def test_32k_token_prefill_stays_finite_and_matches():
    cfg = GDNConfig(num_k_heads=1, num_v_heads=1, head_k_dim=64, head_v_dim=64,
                    dtype=torch.bfloat16, num_slots=2)
    assert_finite_and_matches(make_batch(cfg, prefill_lens=(32768,), seed=5, padding_rows=0), cfg)


def test_long_decode_run_stays_finite_and_matches():
    args = make_batch(CFG, decode_lens=(1,) * 4, seed=8, padding_rows=0)
    ref = clone_args(args)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):  # the same new token for both, step after step
        qkvz = torch.randn(args["projected_states_qkvz"].shape, generator=g)
        ba = torch.randn(args["projected_states_ba"].shape, generator=g)
        for a in (args, ref):
            a["projected_states_qkvz"].copy_(qkvz)
            a["projected_states_ba"].copy_(ba)
        torch.ops.gdn_xpu.gdn_attention(**args)
        gdn_attention_reference(**ref)
    assert torch.isfinite(args["ssm_state"]).all()
    assert_close("ssm_state after 300 steps", args["ssm_state"], ref["ssm_state"], CFG.state_dtype)
    assert_close("core_attn_out of step 300", args["core_attn_out"], ref["core_attn_out"], CFG.dtype)


@pytest.mark.parametrize("A_log,dt_bias,a", [(10.0, 0.0, 0.0), (0.0, 50.0, 0.0), (2.0, 0.0, -100.0),
                                             (2.0, 0.0, 100.0), (-20.0, -50.0, -100.0)])
def test_extreme_gates_stay_finite_and_match(A_log, dt_bias, a):
    args = make_batch(CFG, decode_lens=(1, 1), prefill_lens=(7,), seed=13, padding_rows=0)
    args["A_log"].fill_(A_log)
    args["dt_bias"].fill_(dt_bias)
    hv = args["projected_states_ba"].shape[1] // 2
    args["projected_states_ba"][:, hv:] = a
    assert_finite_and_matches(args, CFG)
