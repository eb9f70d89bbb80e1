"""Build of the host extension gdn_xpu._C_sycl<N>: the kernel launcher, on the LibTorch Stable ABI
and the Python limited API (abi3), one library per libsycl soname N.

- Developers' source build (pip install --no-build-isolation .): one library, against the
  intel-sycl-rt installed in this environment and the torch installed there (headers only).
- The wheel (make wheel): GDN_XPU_SYCL_ROOTS names intel-sycl-rt trees (each with include/ and
  lib/libsycl.so.N, os.pathsep-separated), one library each: libsycl.so.8 (2025.2/2025.3) and
  libsycl.so.9 (2026.x). gdn_xpu/_runtime.py loads the one matching the libsycl in the process.

Every library targets the stable ABI of TORCH_TARGET (below), so it loads in that torch and
every later one; the unstable torch C++ headers refuse to compile under TORCH_TARGET_VERSION.

The kernels themselves (csrc/kernels/gdn_kernels.sycl) ship as package data and are compiled at
first use by the oneAPI kernel compiler. With GDN_XPU_AOT=1 and icpx on PATH, the same source is
also compiled ahead of time for Intel GPUs into gdn_xpu/libgdn_xpu_aot.so (unverified on hardware).
"""

import os
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
KERNEL_SOURCE = ROOT / "csrc" / "kernels" / "gdn_kernels.sycl"

# The oldest torch whose stable ABI has all the launcher uses (tensor data pointers, sizes,
# strides, dtype, optional tensors, STABLE_TORCH_LIBRARY registration): 2.9. README, "Install".
TORCH_TARGET = (2, 9)
# The oldest CPython of the abi3 module (cp310-abi3).
PY_LIMITED_API = "0x030A0000"

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


def installed_sycl_root():
    """The root (with include/ and lib/) of the intel-sycl-rt installed in this environment."""
    try:
        dist = metadata.distribution("intel-sycl-rt")
    except metadata.PackageNotFoundError:
        raise SystemExit("gdn-xpu: the build needs intel-sycl-rt (pip install intel-sycl-rt)")
    for f in dist.files or []:
        if str(f).endswith("include/sycl/sycl.hpp"):
            return Path(dist.locate_file(f)).resolve().parent.parent.parent
    raise SystemExit(f"gdn-xpu: intel-sycl-rt {dist.version} has no SYCL headers")


def sycl_tree(root):
    """(soname major, include dir, lib dir) of an intel-sycl-rt tree."""
    root = Path(root)
    include, lib = root / "include", root / "lib"
    majors = sorted({int(m.group(1)) for f in lib.glob("libsycl.so.*")
                     if (m := re.fullmatch(r"libsycl\.so\.(\d+)", f.name))})
    if not (include / "sycl" / "sycl.hpp").is_file() or len(majors) != 1:
        raise SystemExit(f"gdn-xpu: {root} is not an intel-sycl-rt tree (include/sycl/sycl.hpp, "
                         "one lib/libsycl.so.N)")
    return majors[0], str(include), str(lib)


def sycl_trees():
    roots = os.environ.get("GDN_XPU_SYCL_ROOTS")
    trees = [sycl_tree(r) for r in roots.split(os.pathsep) if r] if roots else \
        [sycl_tree(installed_sycl_root())]
    if len({major for major, _, _ in trees}) != len(trees):
        raise SystemExit("gdn-xpu: GDN_XPU_SYCL_ROOTS names two trees of one libsycl soname")
    return trees


def torch_dirs():
    """(include dir, lib dir) of the installed torch: its stable headers, and libtorch_cpu (the
    stable C shim) to link against. Found without importing torch."""
    try:
        dist = metadata.distribution("torch")
    except metadata.PackageNotFoundError:
        raise SystemExit("gdn-xpu: the build needs torch installed (--no-build-isolation)")
    package = Path(dist.locate_file("torch"))
    return str(package / "include"), str(package / "lib")


def host_extension(major, sycl_include, sycl_lib, torch_include, torch_lib):
    name = f"_C_sycl{major}"
    return Extension(
        f"gdn_xpu.{name}",
        sources=[f"csrc/{source}" for source in
                 ("bindings.cpp", "gdn_attention.cpp", "kernel_cache.cpp", "kernel_library.cpp")],
        include_dirs=[sycl_include, torch_include],
        library_dirs=[sycl_lib, torch_lib],
        # libsycl by soname (the trees' libsycl.so may be a copy of another line's); the stable C
        # shim lives in libtorch_cpu. No rpath: gdn_xpu/_runtime.py loads the libsycl it found,
        # and torch is loaded before the module.
        libraries=[f":libsycl.so.{major}", "torch_cpu"],
        define_macros=[("SYCL_DISABLE_FSYCL_SYCLHPP_WARNING", None), ("GDN_XPU_MODULE", name),
                       ("Py_LIMITED_API", PY_LIMITED_API),
                       ("TORCH_TARGET_VERSION",
                        f"0x{TORCH_TARGET[0]:02x}{TORCH_TARGET[1]:02x}000000000000")],
        extra_compile_args=["-std=c++17", "-O2", "-g0", "-Wno-deprecated-declarations"],
        py_limited_api=True,
        language="c++",
    )


class BuildWithAot(build_ext):
    """The host libraries, each from its own object directory (they compile the same sources
    against different SYCL headers) and always from scratch (a library left by a build against
    another tree must never be reused), plus the optional icpx AOT kernel library."""

    def finalize_options(self):
        super().finalize_options()
        self.force = True

    def build_extension(self, ext):
        base = self.build_temp
        self.build_temp = os.path.join(base, ext.name)
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = base

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


TORCH_INCLUDE, TORCH_LIB = torch_dirs()

setup(
    ext_modules=[host_extension(major, include, lib, TORCH_INCLUDE, TORCH_LIB)
                 for major, include, lib in sycl_trees()],
    cmdclass={"build_ext": BuildWithAot},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
