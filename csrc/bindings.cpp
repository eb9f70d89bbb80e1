// The host extension module gdn_xpu._C_sycl<N>: a Python module on the limited C API (abi3) and a
// torch operator library on the LibTorch Stable ABI, with no pybind11 and no unstable torch C++.
// It is built once per libsycl soname (N = __LIBSYCL_MAJOR_VERSION); gdn_xpu/_runtime.py imports
// the one matching the libsycl of the process.
//
// - torch.ops.gdn_xpu_C.gdn_attention: the kernel launcher on prepared arguments. The public op
//   torch.ops.gdn_xpu.gdn_attention (gdn_xpu/ops.py: schema, validation, fake impl) calls it.
// - Module functions: set_kernel_source, set_aot_library, set_cache_dir, jit_build_count,
//   cache_load_count, libsycl_major.
#include <Python.h>

#include <torch/csrc/stable/library.h>

#include "gdn_attention.h"
#include "kernel_cache.h"
#include "kernel_library.h"

#include <exception>
#include <string>

#ifndef GDN_XPU_MODULE
#error "GDN_XPU_MODULE (the module's name, e.g. _C_sycl9) must be defined by the build"
#endif
#define GDN_XPU_CAT_(a, b) a##b
#define GDN_XPU_CAT(a, b) GDN_XPU_CAT_(a, b)
#define GDN_XPU_STR_(a) #a
#define GDN_XPU_STR(a) GDN_XPU_STR_(a)

namespace {

// A module function taking one str and returning None; C++ exceptions become RuntimeError.
template <void (*Fn)(const std::string &)>
PyObject *string_setter(PyObject *, PyObject *args) {
  const char *value = nullptr;
  if (!PyArg_ParseTuple(args, "s", &value)) return nullptr;
  try {
    Fn(value);
  } catch (const std::exception &e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
  Py_RETURN_NONE;
}

template <int (*Fn)()>
PyObject *int_getter(PyObject *, PyObject *) {
  return PyLong_FromLong(Fn());
}

int libsycl_major() { return __LIBSYCL_MAJOR_VERSION; }

PyMethodDef methods[] = {
    {"set_kernel_source", string_setter<gdn::set_kernel_source>, METH_VARARGS,
     "Hand over the SYCL kernel source text"},
    {"set_aot_library", string_setter<gdn::set_aot_library>, METH_VARARGS,
     "Load ahead-of-time kernels (icpx build)"},
    {"set_cache_dir", string_setter<gdn::set_cache_dir>, METH_VARARGS,
     "Persistent kernel cache directory ('' = off)"},
    {"jit_build_count", int_getter<gdn::jit_build_count>, METH_NOARGS,
     "Run-time kernel builds done so far"},
    {"cache_load_count", int_getter<gdn::cache_load_count>, METH_NOARGS,
     "Kernel programs loaded from the cache"},
    {"libsycl_major", int_getter<libsycl_major>, METH_NOARGS,
     "The libsycl soname major this library was built against"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, GDN_XPU_STR(GDN_XPU_MODULE),
    "Gated DeltaNet attention: SYCL kernel launcher (LibTorch Stable ABI, Python limited API)",
    -1, methods,
};

}  // namespace

// Loading the module runs the STABLE_TORCH_LIBRARY registrations below (static initializers).
extern "C" PyMODINIT_FUNC GDN_XPU_CAT(PyInit_, GDN_XPU_MODULE)(void) {
  return PyModule_Create(&module_def);
}

// Mutated tensors are marked (a!) ... (d!): the launcher writes them in place.
STABLE_TORCH_LIBRARY(gdn_xpu_C, m) {
  m.def(
      "gdn_attention(Tensor(a!) core_attn_out, Tensor(b!) z, Tensor qkvz, Tensor ba, "
      "int num_k_heads, int num_v_heads, int head_k_dim, int head_v_dim, "
      "Tensor(c!) conv_state, Tensor(d!) ssm_state, Tensor conv_weights, "
      "Tensor(e!) conv_workspace, Tensor? conv_bias, "
      "bool use_silu, Tensor A_log, Tensor dt_bias, int num_non_spec_seqs, int num_spec_seqs, "
      "Tensor? has_initial_state, Tensor? non_spec_query_start_loc, "
      "Tensor? non_spec_token_indx, Tensor? non_spec_state_indices, "
      "Tensor? spec_query_start_loc, Tensor? spec_token_indx, Tensor? spec_state_indices, "
      "Tensor? num_accepted_tokens, int num_actual_tokens, bool flat_layout, "
      "int queue_address) -> ()");
}

// One kernel for CPU and XPU tensors: the launcher picks the queue (queue_address).
STABLE_TORCH_LIBRARY_IMPL(gdn_xpu_C, CompositeExplicitAutograd, m) {
  m.impl("gdn_attention", TORCH_BOX(&gdn::gdn_attention));
}
