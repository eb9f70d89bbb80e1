"""The Intel GPU ISA check (tests/gpu_isa.py): every kernel set of every configuration, built
with the options the SYCL runtime would use on a Level Zero GPU, compiled by ocloc for pvc
and acm-g10; no kernel's binary may spill registers, the prefill kernel not even in IGC's first
attempt, and none may use more shared local memory than the target has.

Needs ocloc (make ocloc: Debian's intel-opencl-icd unpacked into .tools/ocloc). Without it the
test is skipped, unless GDN_XPU_REQUIRE_OCLOC is set (make test-isa sets it): then it fails.
The table goes to stdout and to benchmarks/results/gpu_isa.{md,json}, which
benchmarks/projection.py reads.
"""

import os
import time

import pytest

import gpu_isa


@pytest.fixture(scope="session")
def isa_results(tmp_path_factory):
    """Captured and compiled once per session (about 3-4 minutes on 2 cores)."""
    if not gpu_isa.ocloc_available():
        message = f"ocloc not found under {gpu_isa.OCLOC_ROOT} (make ocloc)"
        if os.environ.get("GDN_XPU_REQUIRE_OCLOC"):
            pytest.fail(message + "; GDN_XPU_REQUIRE_OCLOC is set")
        pytest.skip(message)
    start = time.perf_counter()
    results = gpu_isa.run_check(tmp_path_factory.mktemp("gpu_isa"))
    gpu_isa.write_results(results)
    print(f"\n{gpu_isa.table(results)}\n(captured and compiled in "
          f"{time.perf_counter() - start:.0f} s)")
    return results


@pytest.mark.parametrize("target", list(gpu_isa.TARGETS))
def test_every_kernel_compiled(isa_results, target):
    """Each configuration's four kernels came out of ocloc for the target, with IGC's dumps."""
    expected = {"gdn_prepare", "gdn_recurrent", "gdn_conv_state_update", "gdn_chunked_prefill"}
    for act, state, dim in gpu_isa.CONFIGS:
        config = gpu_isa.config_name(act, state, dim)
        found = {r.kernel for r in isa_results if r.target == target and r.config == config}
        assert found == expected, f"{config} on {target}: {sorted(found)}"
    for r in isa_results:
        assert r.attempts and r.grf and r.simd, f"{r.kernel} {r.config} on {r.target}: no dump"


@pytest.mark.parametrize("target", list(gpu_isa.TARGETS))
def test_no_spill_and_slm_fits(isa_results, target):
    found = gpu_isa.problems([r for r in isa_results if r.target == target])
    assert not found, "\n".join(found) + "\n\n" + gpu_isa.table(
        [r for r in isa_results if r.target == target])
