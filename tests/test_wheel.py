"""The host library as installed (the wheel's, or a source build's): the one matching the
process's libsycl is loaded, it is an abi3 module on the stable ABI, and a missing match is an
error that says what to install."""

import re
from pathlib import Path

import pytest

import gdn_xpu
from gdn_xpu import _runtime


def test_loaded_host_library_matches_the_process_libsycl():
    ext = _runtime.extension()
    loaded = _runtime._loaded_libsycl()
    assert loaded is not None
    assert ext.libsycl_major == loaded[0]
    assert ext.module.__name__ == f"gdn_xpu._C_sycl{loaded[0]}"


def test_host_libraries_are_abi3_without_pybind11():
    package = Path(gdn_xpu.__file__).parent
    libraries = sorted(package.glob("_C_sycl*.so"))
    assert libraries
    for library in libraries:
        assert re.fullmatch(r"_C_sycl\d+\.abi3\.so", library.name), library.name
        data = library.read_bytes()
        assert b"pybind11" not in data and b"libtorch_python" not in data, library.name


def test_no_matching_host_library_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(_runtime, "_loaded_libsycl", lambda: (7, "/opt/x/libsycl.so.7"))
    with pytest.raises(ImportError, match=r"libsycl\.so\.7.*pip install 'gdn-xpu\[cpu\]'"):
        _runtime.load_host_library()


def test_no_sycl_runtime_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(_runtime, "_loaded_libsycl", lambda: None)
    monkeypatch.setattr(_runtime, "_environment_libsycl", lambda: None)
    with pytest.raises(ImportError, match=r"no SYCL runtime.*pip install 'gdn-xpu\[cpu\]'"):
        _runtime.load_host_library()


def test_environment_libsycl_path_has_no_parent_steps():
    # The 2025.3 kernel compiler finds its headers from libsycl's path, and fails ("Could not
    # locate DPCPP root directory") when that path goes through site-packages/../..
    found = _runtime._environment_libsycl()
    if found is None:
        pytest.skip("no intel-sycl-rt installed (torch's XPU build brings libsycl)")
    assert ".." not in Path(found[1]).parts, found
