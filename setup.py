"""Build of gdn_xpu._C, the host launcher, against the SYCL runtime of this environment.

The kernels themselves (csrc/kernels/gdn_kernels.sycl) ship as package data and are compiled at
first use by the oneAPI kernel compiler. With GDN_XPU_AOT=1 and icpx on PATH, the same source is
also compiled ahead of time for Intel GPUs into gdn_xpu/libgdn_xpu_aot.so (unverified on hardware).
"""

import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = Path(__file__).parent
KERNEL_SOURCE = ROOT / "csrc" / "kernels" / "gdn_kernels.sycl"

# Configurations compiled ahead of time: act dtype x state dtype x (K, V); conv width 4.
AOT_ACT_DTYPES = {"f32": 0, "f16": 1, "bf16": 2}
AOT_STATE_DTYPES = {"f32": 0, "f16": 1, "bf16": 2}
AOT_HEAD_DIMS = [(64, 64), (128, 128), (256, 256)]
AOT_DEVICES = os.environ.get("GDN_XPU_AOT_DEVICES", "bmg,pvc,lnl-m,arl-h")


def aot_chunk(head_k_dim):
    """Chunk length of the chunked prefill for GPUs with 128 KiB of shared local memory (the
    launcher picks it from the device's size for run-time builds)."""
    return 32 if head_k_dim <= 128 else 16


def aot_recurrent_layout(head_k_dim, head_v_dim):
    """gdn_recurrent's GPU work split as -D options: the rule of recurrent_layout in
    csrc/kernel_library.cpp (256 / K rows per sub-group, all held at once; 32-row blocks)."""
    rows = 1
    while rows < 16 and 2 * rows * head_k_dim <= 256:
        rows *= 2
    block = 32 if head_v_dim % 32 == 0 else 16
    return [f"-DGDN_ROWS_PER_SG={rows}", f"-DGDN_GROUP_ROWS={rows}", f"-DGDN_BLOCK_ROWS={block}"]


def sycl_runtime_dirs():
    """(include dir, lib dir) of the intel-sycl-rt installed in this environment."""
    try:
        dist = metadata.distribution("intel-sycl-rt")
    except metadata.PackageNotFoundError:
        raise SystemExit("gdn-xpu: the build needs intel-sycl-rt (pip install intel-sycl-rt)")
    header = lib = None
    for f in dist.files or []:
        if str(f).endswith("include/sycl/sycl.hpp"):
            header = Path(dist.locate_file(f)).resolve().parent.parent
        elif f.name.startswith("libsycl.so"):
            lib = Path(dist.locate_file(f)).resolve().parent
    if header is None or lib is None:
        raise SystemExit(f"gdn-xpu: intel-sycl-rt {dist.version} has no SYCL headers or libsycl")
    return str(header), str(lib)


SYCL_INCLUDE, SYCL_LIB = sycl_runtime_dirs()


class BuildWithAot(BuildExtension):
    """The torch extension build, plus the optional icpx AOT kernel library."""

    def run(self):
        super().run()
        if os.environ.get("GDN_XPU_AOT") == "1":
            self.build_aot_library()

    def build_aot_library(self):
        icpx = shutil.which("icpx")
        if icpx is None:
            raise SystemExit("gdn-xpu: GDN_XPU_AOT=1 needs icpx (oneAPI DPC++) on PATH")
        out_dir = Path(self.build_lib) / "gdn_xpu"
        if self.inplace:
            out_dir = ROOT / "gdn_xpu"
        tmp = Path(self.build_temp) / "aot"
        tmp.mkdir(parents=True, exist_ok=True)
        targets = ["-fsycl", "-fsycl-targets=spir64_gen,spir64",
                   "-Xsycl-target-backend=spir64_gen", f"-device {AOT_DEVICES}"]
        objects = []
        for act, act_code in AOT_ACT_DTYPES.items():
            for state, state_code in AOT_STATE_DTYPES.items():
                for k, v in AOT_HEAD_DIMS:
                    name = f"{act}_{state}_k{k}_v{v}_w4"
                    obj = tmp / f"{name}.o"
                    subprocess.check_call([
                        icpx, *targets, "-O3", "-fPIC", "-x", "c++", "-c", str(KERNEL_SOURCE),
                        "-o", str(obj), "-DGDN_AOT", f"-DGDN_ACT={act_code}",
                        f"-DGDN_STATE={state_code}", f"-DGDN_K={k}", f"-DGDN_V={v}",
                        "-DGDN_W=4", f"-DGDN_CHUNK={aot_chunk(k)}", f"-DGDN_SUFFIX={name}",
                        *aot_recurrent_layout(k, v)])
                    objects.append(str(obj))
        subprocess.check_call([icpx, *targets, "-shared", *objects,
                               "-o", str(out_dir / "libgdn_xpu_aot.so")])


setup(
    ext_modules=[
        CppExtension(
            "gdn_xpu._C",
            sources=[f"csrc/{name}" for name in
                     ("bindings.cpp", "gdn_attention.cpp", "kernel_cache.cpp", "kernel_library.cpp")],
            include_dirs=[SYCL_INCLUDE],
            library_dirs=[SYCL_LIB],
            libraries=["sycl"],
            extra_compile_args=["-O2", "-DSYCL_DISABLE_FSYCL_SYCLHPP_WARNING",
                                "-Wno-deprecated-declarations"],
            extra_link_args=[f"-Wl,-rpath,{SYCL_LIB}"],
        )
    ],
    cmdclass={"build_ext": BuildWithAot},
)
