"""The SYCL runtime behind the ops: environment set-up and the lazily loaded host extension.

Importing gdn_xpu never touches a device; the extension is loaded, and its device found, at the
first kernel call, so a missing runtime is an error at first use that says what to install.
"""

import importlib
import os
import re
import sys
import threading
import warnings
from importlib import metadata, resources
from pathlib import Path

_lock = threading.Lock()
_extension = None


def _point_opencl_loader_at_cpu_runtime():
    # intel-opencl-rt's ICD file names a placeholder path; name the library it installed
    # before libsycl (and through it the OpenCL ICD loader) first looks for platforms.
    cpu_runtime = Path(sys.prefix) / "lib" / "libintelocl.so"
    if "OCL_ICD_FILENAMES" not in os.environ and cpu_runtime.exists():
        os.environ["OCL_ICD_FILENAMES"] = str(cpu_runtime)


_point_opencl_loader_at_cpu_runtime()


def kernel_cache_dir() -> str:
    """Where compiled kernel programs persist across processes: $GDN_XPU_CACHE_DIR, else
    $XDG_CACHE_HOME/gdn_xpu, else ~/.cache/gdn_xpu. GDN_XPU_CACHE_DIR="" turns the cache off."""
    if "GDN_XPU_CACHE_DIR" in os.environ:
        return os.environ["GDN_XPU_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gdn_xpu")


# The libsycl sonames a host library can be built against, and the runtime lines of each (README,
# "SYCL runtime lines"). The wheel carries both; a source build the one of its environment.
SYCL_SONAME_LINES = {8: "intel-sycl-rt 2025.2, 2025.3 (torch XPU 2.9-2.12)",
                     9: "intel-sycl-rt 2026.x (torch XPU 2.13+)"}
FIX_COMMAND = ("pip install 'gdn-xpu[cpu]' (the SYCL CPU device: intel-sycl-rt 2025.2-2026.1), "
               "or on an Intel GPU a torch XPU build 2.9 or newer (pip install torch "
               "--index-url <PyTorch's XPU index>)")


def _loaded_libsycl():
    """(soname major, path) of a libsycl already in this process (torch's XPU build loads one),
    or None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                path = fields[5].strip() if len(fields) == 6 else ""
                match = re.search(r"/libsycl\.so\.(\d+)(?:\.\d+)*$", path)
                if match:
                    return int(match.group(1)), path
    except OSError:
        pass
    return None


def _environment_libsycl():
    """(soname major, path) of the libsycl of the installed intel-sycl-rt (the cpu extra's, or
    the one torch's XPU build depends on), or None."""
    try:
        dist = metadata.distribution("intel-sycl-rt")
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        match = re.fullmatch(r"libsycl\.so\.(\d+)", f.name)
        if match:
            # Resolved: the record names it through site-packages/../.., and the 2025.3 kernel
            # compiler finds its headers from libsycl's path only when it has no "..".
            path = Path(dist.locate_file(f)).resolve()
            if path.exists():
                return int(match.group(1)), str(path)
    return None


def _host_modules():
    """The libsycl soname majors this install has a host library (gdn_xpu/_C_sycl<N>) for."""
    names = (p.name for p in Path(__file__).parent.iterdir())
    return sorted({int(m.group(1)) for n in names if (m := re.match(r"_C_sycl(\d+)\.", n))})


def load_host_library():
    """Import the host library matching the libsycl of this process: the one already loaded, or
    else the installed intel-sycl-rt's (loaded first, so the module's libsycl.so.N resolves)."""
    import ctypes

    import torch  # noqa: F401  (the module needs libtorch's stable C shim loaded)

    found = _loaded_libsycl()
    if found is None:
        found = _environment_libsycl()
        if found is None:
            raise ImportError(f"gdn_xpu: no SYCL runtime (libsycl) in this environment. {FIX_COMMAND}")
        ctypes.CDLL(found[1], mode=getattr(os, "RTLD_GLOBAL", 0))
    major, path = found
    have = _host_modules()
    if major not in have:
        lines = "; ".join(f"libsycl.so.{n}: {SYCL_SONAME_LINES.get(n, '?')}" for n in have)
        raise ImportError(
            f"gdn_xpu: no host library for libsycl.so.{major} ({path}), the SYCL runtime of this "
            f"process; this install has them for {lines or 'none'}. {FIX_COMMAND}")
    try:
        return importlib.import_module(f"gdn_xpu._C_sycl{major}")
    except ImportError as e:
        raise ImportError(
            f"gdn_xpu: the host library for libsycl.so.{major} does not load ({e}). "
            f"{FIX_COMMAND}") from e


class Extension:
    """The host library's entry points: the kernel launcher (torch.ops.gdn_xpu_C.gdn_attention,
    on the stable ABI) and the module's set-up functions."""

    def __init__(self, module):
        import torch

        self.module = module
        self.gdn_attention = torch.ops.gdn_xpu_C.gdn_attention.default
        self.set_kernel_source = module.set_kernel_source
        self.set_aot_library = module.set_aot_library
        self.set_cache_dir = module.set_cache_dir
        self.jit_build_count = module.jit_build_count
        self.cache_load_count = module.cache_load_count
        self.libsycl_major = module.libsycl_major()


def extension():
    """The host library with the kernel source (and any AOT kernel library) handed over."""
    global _extension
    if _extension is not None:
        return _extension
    with _lock:
        if _extension is None:
            ext = Extension(load_host_library())
            package = resources.files("gdn_xpu")
            ext.set_kernel_source((package / "kernels" / "gdn_kernels.sycl").read_text())
            ext.set_cache_dir(kernel_cache_dir())
            aot_library = package / "libgdn_xpu_aot.so"
            if aot_library.is_file():
                ext.set_aot_library(str(aot_library))
            _extension = ext
    return _extension


# The oldest SYCL runtime line measured to work (README, "SYCL runtime lines").
MIN_SYCL_RUNTIME = (2025, 2)
_cpu_runtime_checked = False


def _version(distribution: str):
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def check_cpu_runtime_set() -> None:
    """The SYCL CPU device needs intel-sycl-rt, intel-cmplr-lib-ur and intel-opencl-rt of one
    release: intel-sycl-rt pins its own lib-ur, but nothing ties intel-opencl-rt to them, and a
    mixed set was measured to return kernels' outputs unwritten with no error."""
    global _cpu_runtime_checked
    if _cpu_runtime_checked:
        return
    sycl_rt, opencl_rt = _version("intel-sycl-rt"), _version("intel-opencl-rt")
    if sycl_rt and opencl_rt and sycl_rt != opencl_rt:
        raise RuntimeError(
            f"gdn_xpu: intel-opencl-rt {opencl_rt} does not match intel-sycl-rt {sycl_rt}; the "
            "SYCL CPU device needs one release of both (a mixed set was measured to return "
            f"wrong results): pip install intel-opencl-rt=={sycl_rt}")
    if sycl_rt and tuple(int(p) for p in sycl_rt.split(".")[:2]) < MIN_SYCL_RUNTIME:
        warnings.warn(f"gdn_xpu: intel-sycl-rt {sycl_rt} is older than the oldest line measured "
                      f"to work, {'.'.join(map(str, MIN_SYCL_RUNTIME))}", RuntimeWarning)
    _cpu_runtime_checked = True


def queue_address(device):
    """Address of the sycl::queue to launch on: 0 (the package's CPU-device queue) for CPU
    tensors, torch's current XPU queue for XPU tensors (unverified on Intel GPU hardware)."""
    if device.type == "xpu":
        import torch

        return int(torch.xpu.current_stream(device).sycl_queue)
    check_cpu_runtime_set()
    return 0
