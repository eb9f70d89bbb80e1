// Python bindings of the host extension gdn_xpu._C. Op registration lives in gdn_xpu/ops.py.
#include <torch/extension.h>

#include "gdn_attention.h"
#include "kernel_cache.h"
#include "kernel_library.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Gated DeltaNet attention: SYCL kernel launcher";
  m.def("gdn_attention", &gdn::gdn_attention, "Launch the GDN kernels on prepared arguments");
  m.def("set_kernel_source", &gdn::set_kernel_source, "Hand over the SYCL kernel source text");
  m.def("set_aot_library", &gdn::set_aot_library, "Load ahead-of-time kernels (icpx build)");
  m.def("set_cache_dir", &gdn::set_cache_dir, "Persistent kernel cache directory ('' = off)");
  m.def("jit_build_count", &gdn::jit_build_count, "Run-time kernel builds done so far");
  m.def("cache_load_count", &gdn::cache_load_count, "Kernel programs loaded from the cache");
}
