"""The SYCL runtime behind the ops: environment set-up and the lazily loaded host extension.

Importing gdn_xpu never touches a device; the extension is loaded, and its device found, at the
first kernel call, so a missing runtime is an error at first use that says what to install.
"""

import os
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


def extension():
    """gdn_xpu._C with the kernel source (and any AOT kernel library) handed over."""
    global _extension
    if _extension is not None:
        return _extension
    with _lock:
        if _extension is None:
            try:
                from gdn_xpu import _C
            except ImportError as e:
                raise ImportError(
                    "gdn_xpu: the host extension gdn_xpu._C does not load "
                    f"({e}). It needs the SYCL runtime it was built against: "
                    "pip install 'gdn-xpu[cpu]' (CPU device) or torch's XPU build (Intel GPU)."
                ) from e
            package = resources.files("gdn_xpu")
            _C.set_kernel_source((package / "kernels" / "gdn_kernels.sycl").read_text())
            _C.set_cache_dir(kernel_cache_dir())
            aot_library = package / "libgdn_xpu_aot.so"
            if aot_library.is_file():
                _C.set_aot_library(str(aot_library))
            _extension = _C
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
