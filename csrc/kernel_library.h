// Where the GDN kernels come from: an ahead-of-time build when the package has one for the
// configuration and device, otherwise the kernel source compiled at run time for the queue's device
// (or that compile's program reloaded from the persistent cache, kernel_cache.h).
// Compiled kernels are kept for the life of the process, per device and configuration.
#pragma once

#include <sycl/sycl.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace gdn {

// The element types and sizes a kernel build is specialised for (-D options of the source).
struct KernelConfig {
  int act_dtype;    // 0 fp32, 1 fp16, 2 bf16 (qkvz, ba, outputs, conv state)
  int state_dtype;  // 0 fp32, 1 fp16, 2 bf16 (ssm state)
  int head_k_dim;
  int head_v_dim;
  int conv_width;

  std::string name() const;                  // also the kernel name suffix
  std::vector<std::string> build_options() const;
};

// State rows per work-group of gdn_chunked_prefill (GDN_BV of the kernel source, passed to the
// run-time build; the source's default for the AOT build is the same): up to 64, and a state
// block of at most 8192 values (32 KiB in fp32: 32 rows at K = 256), which the work-group keeps
// in shared local memory.
inline int chunked_block_rows(int head_k_dim, int head_v_dim) {
  return std::min({head_v_dim, 64, 8192 / head_k_dim});
}

// gdn_recurrent's work split (GDN_ROWS_PER_SG, GDN_GROUP_ROWS, GDN_BLOCK_ROWS of the kernel
// source): state rows per sub-group, rows a sub-group holds at a time, rows per work-group
// (V / block_rows work-groups per head).
//  - GPUs: 256 / K rows per sub-group, all held at once: 16 state values per lane, so the kernel
//    fits 128 registers (8 rows x 8 per lane spilled on every target Intel's compiler knows);
//    32-row blocks.
//  - The CPU device: 16 rows per sub-group, streamed 8 at a time (2 where float vectors are 8
//    wide, AVX2: 8 overflow its 16 registers), and blocks of up to 64 KiB of
//    fp32 state (the whole head at K = V = 128), which wait in shared memory between tiles.
//    Where float vectors are 8 wide, a bf16 state's decode also takes two passes over a group
//    (GDN_BF16_TWO_PASS of the source). The state is prefetched 4 groups ahead, except on Intel
//    CPUs (GDN_PREFETCH_GROUPS of the source).
// GDN_XPU_BUILD_FOR=gpu gives the GPU split on any device: the ISA check builds GPU SPIR-V so.
struct RecurrentLayout {
  int rows_per_sg;
  int group_rows;
  int block_rows;
  bool bf16_two_pass;
  int prefetch_groups;  // 0: no prefetch
};
RecurrentLayout recurrent_layout(const sycl::device &dev, int head_k_dim, int head_v_dim);

// The kernels are built in two sets (-DGDN_KERNELS of the source): the step kernels every
// batch runs, and gdn_chunked_prefill, built apart when a batch first needs it, so a process
// that never chunks (the CPU device by default) never pays for its compile.
enum class KernelSet { step = 1, chunked_prefill = 2 };

struct StepKernels {
  sycl::kernel prepare;
  sycl::kernel recurrent;
  sycl::kernel conv_state_update;
};

// Path of libgdn_xpu_aot.so (built by setup.py with icpx when GDN_XPU_AOT=1), or "".
void set_aot_library(const std::string &path);

// The text of csrc/kernels/gdn_kernels.sycl, handed over once by the Python package.
void set_kernel_source(const std::string &source);

// The kernels for this queue's device and configuration; each set is compiled on first use.
// Throws std::runtime_error carrying the device compiler's log when the build fails.
StepKernels step_kernels_for(const sycl::queue &queue, const KernelConfig &config);
sycl::kernel chunked_prefill_kernel_for(const sycl::queue &queue, const KernelConfig &config);

// Run-time builds, and programs loaded from the persistent cache, by this process.
int jit_build_count();
int cache_load_count();

}  // namespace gdn
