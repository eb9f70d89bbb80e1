"""gdn_recurrent's GPU work split (csrc/kernel_library.cpp: recurrent_layout), run on the CPU
device: the raw-op layout, batch-kind, dtype and speculative-decoding tests again, in a process
that builds the GPU split. GDN_XPU_BUILD_FOR=gpu is read when kernels are built and launched,
so it needs a process of its own; without this test the split GPUs run would only be compiled
(the ISA check), never executed."""

import os
import pathlib
import subprocess
import sys

TESTS = ["test_gdn_attention.py::test_layouts_gqa_and_batch_kinds",
         "test_gdn_attention.py::test_spec_conv_per_slot_layout",
         "test_gdn_attention.py::test_dtypes", "test_spec_decode.py"]


def test_gpu_split_on_the_cpu_device():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS],
        cwd=pathlib.Path(__file__).parent, env=dict(os.environ, GDN_XPU_BUILD_FOR="gpu"),
        capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]
