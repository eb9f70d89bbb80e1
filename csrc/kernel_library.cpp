#include "kernel_library.h"

#include "kernel_cache.h"

#include <dlfcn.h>

#include <cstdlib>

#include <map>
#include <optional>
#include <mutex>
#include <stdexcept>
#include <tuple>

namespace syclexp = sycl::ext::oneapi::experimental;

namespace gdn {
namespace {

const char *dtype_name(int code) { return code == 0 ? "f32" : code == 1 ? "f16" : "bf16"; }

std::mutex &library_mutex() {
  static std::mutex m;
  return m;
}

void *aot_library = nullptr;

// The AOT loader of one configuration:
//   bool gdn_load_aot_<config>(ctx*, dev*, int set, std::vector<sycl::kernel> *out).
std::optional<std::vector<sycl::kernel>> load_aot(const sycl::context &ctx,
                                                  const sycl::device &dev,
                                                  const KernelConfig &config, KernelSet set) {
  if (!aot_library) return std::nullopt;
  using Loader = bool (*)(const sycl::context *, const sycl::device *, int,
                          std::vector<sycl::kernel> *);
  auto loader =
      reinterpret_cast<Loader>(dlsym(aot_library, ("gdn_load_aot_" + config.name()).c_str()));
  std::vector<sycl::kernel> kernels;
  if (!loader || !loader(&ctx, &dev, int(set), &kernels)) return std::nullopt;
  return kernels;
}

std::string &kernel_source() {
  static std::string source;
  return source;
}

int builds = 0, cache_loads = 0;

// The longest chunk (64, 32, 16 or 8 tokens) whose gdn_chunked_prefill tiles (counted in floats
// as in the kernel source) fit the device's shared local memory: a -DGDN_CHUNK option.
std::string chunk_option(const sycl::device &dev, const KernelConfig &config) {
  const size_t K = config.head_k_dim,
               bv = chunked_block_rows(config.head_k_dim, config.head_v_dim);
  const size_t local_mem = dev.get_info<sycl::info::device::local_mem_size>();
  int chunk = 8;
  for (size_t c : {64, 32, 16}) {
    if ((2 * c * K + c * bv + 2 * c * c + K * (bv + 1) + 6 * c) * sizeof(float) <= local_mem) {
      chunk = int(c);
      break;
    }
  }
  return "-DGDN_CHUNK=" + std::to_string(chunk);
}

// The kernel names of a set, in the order StepKernels lists them.
std::vector<std::string> kernel_names(const KernelConfig &config, KernelSet set) {
  const std::string suffix = "_" + config.name();
  if (set == KernelSet::chunked_prefill) return {"gdn_chunked_prefill" + suffix};
  return {"gdn_prepare" + suffix, "gdn_recurrent" + suffix, "gdn_conv_state_update" + suffix};
}

// Run-time compile of one set of the kernel source, or its program from the persistent cache.
std::vector<sycl::kernel> compile_from_source(const sycl::context &ctx, const sycl::device &dev,
                                              const KernelConfig &config, KernelSet set) {
  if (kernel_source().empty())
    throw std::runtime_error("gdn_xpu: kernel source not set (import gdn_xpu first)");
  const std::vector<std::string> names = kernel_names(config, set);
  std::vector<std::string> options = config.build_options();
  options.push_back("-DGDN_KERNELS=" + std::to_string(int(set)));
  const RecurrentLayout layout = recurrent_layout(dev, config.head_k_dim, config.head_v_dim);
  options.push_back("-DGDN_ROWS_PER_SG=" + std::to_string(layout.rows_per_sg));
  options.push_back("-DGDN_GROUP_ROWS=" + std::to_string(layout.group_rows));
  options.push_back("-DGDN_BLOCK_ROWS=" + std::to_string(layout.block_rows));
  options.push_back("-DGDN_BF16_TWO_PASS=" + std::to_string(int(layout.bf16_two_pass)));
  options.push_back("-DGDN_PREFETCH_GROUPS=" + std::to_string(layout.prefetch_groups));
  if (set == KernelSet::chunked_prefill) {
    options.push_back(chunk_option(dev, config));
    options.push_back("-DGDN_BV=" +
                      std::to_string(chunked_block_rows(config.head_k_dim, config.head_v_dim)));
  }
#if __LIBSYCL_MAJOR_VERSION < 9
  // The 2025.x kernel compilers (libsycl.so.8) link the device libraries libsycl-crt.bc, ...
  // from the runtime's lib dir, which the intel-sycl-rt wheels lack (they ship .spv): every
  // build fails unless the link is turned off. The kernels need none (SPIR-V builtin maths).
  // 2026.0 on carry the libraries in libsycl-jit and reject the option (unknown argument).
  options.push_back("-fno-sycl-device-lib=all");
#endif
  const std::string cached = cache_path(dev, kernel_source(), options, config.name());
  if (auto kernels = load_cached_kernels(ctx, dev, cached, names)) {
    ++cache_loads;
    return std::move(*kernels);
  }
  try {
    auto source = syclexp::create_kernel_bundle_from_source(
        ctx, syclexp::source_language::sycl, kernel_source());
    auto exe = syclexp::build(source, std::vector<sycl::device>{dev},
                              syclexp::properties{syclexp::build_options{options}});
    ++builds;
    store_program(exe, cached);
    std::vector<sycl::kernel> kernels;
    for (const auto &name : names) kernels.push_back(exe.ext_oneapi_get_kernel(name));
    return kernels;
  } catch (const sycl::exception &e) {
    throw std::runtime_error("gdn_xpu: compiling the GDN kernels (" + config.name() + ") for " +
                             dev.get_info<sycl::info::device::name>() + " failed:\n" + e.what());
  }
}

// The kernels of one set for this queue, built (AOT, cache or compile) once per process.
const std::vector<sycl::kernel> &kernels_for(const sycl::queue &queue, const KernelConfig &config,
                                             KernelSet set) {
  // Kernels belong to a context: key on context, device, configuration and set. std::map keeps
  // references stable; the lock also makes concurrent first calls build once.
  using Key = std::tuple<size_t, size_t, std::string, int>;
  static auto &cache = *new std::map<Key, std::vector<sycl::kernel>>;  // never destroyed
  std::lock_guard<std::mutex> lock(library_mutex());
  const Key key{std::hash<sycl::context>{}(queue.get_context()),
                std::hash<sycl::device>{}(queue.get_device()), config.name(), int(set)};
  auto found = cache.find(key);
  if (found != cache.end()) return found->second;
  auto kernels = load_aot(queue.get_context(), queue.get_device(), config, set);
  if (!kernels) kernels = compile_from_source(queue.get_context(), queue.get_device(), config, set);
  return cache.emplace(key, std::move(*kernels)).first->second;
}

}  // namespace

std::string KernelConfig::name() const {
  return std::string(dtype_name(act_dtype)) + "_" + dtype_name(state_dtype) + "_k" +
         std::to_string(head_k_dim) + "_v" + std::to_string(head_v_dim) + "_w" +
         std::to_string(conv_width);
}

std::vector<std::string> KernelConfig::build_options() const {
  return {"-DGDN_ACT=" + std::to_string(act_dtype), "-DGDN_STATE=" + std::to_string(state_dtype),
          "-DGDN_K=" + std::to_string(head_k_dim), "-DGDN_V=" + std::to_string(head_v_dim),
          "-DGDN_W=" + std::to_string(conv_width), "-DGDN_SUFFIX=" + name()};
}

RecurrentLayout recurrent_layout(const sycl::device &dev, int head_k_dim, int head_v_dim) {
  const char *build_for = std::getenv("GDN_XPU_BUILD_FOR");
  if (dev.is_cpu() && !(build_for && std::string(build_for) == "gpu")) {
    int block = 16;
    for (int rows = 32; rows <= head_v_dim && rows * head_k_dim <= 16384; rows += 16)
      if (head_v_dim % rows == 0) block = rows;
    // Rows per group, held in registers through a one-token step: 8 where the device's float
    // vectors are 16 wide (AVX-512: 2 or 4 measured the same), 2 where they are 8 wide (AVX2,
    // whose 16 registers 8 rows overflow: fp32 decode B=32 on one Zen 1 core 35% less time;
    // a bf16 state's decode in two passes, B=32 on one Zen 3 core 13% less).
    // The CPU device is the host's CPU, so its width is asked once, not on every launch.
    static const int float_width =
        dev.get_info<sycl::info::device::native_vector_width_float>();
    const bool wide = float_width >= 16;
    // Prefetching the state 4 groups ahead: B=32 decode on one core 25% less time on an AMD
    // EPYC (fp32 state 8-11% on Zen 4), 10-12% more on an Intel Xeon with AMX (fp32 and bf16
    // state). The device's name is the CPU's.
    static const bool intel =
        dev.get_info<sycl::info::device::name>().find("Intel") != std::string::npos;
    return {16, wide ? 8 : 2, block, !wide, intel ? 0 : 4};
  }
  int rows = 1;
  while (rows < 16 && 2 * rows * head_k_dim <= 256) rows *= 2;
  return {rows, rows, head_v_dim % 32 == 0 ? 32 : 16, false, 0};
}

void set_aot_library(const std::string &path) {
  std::lock_guard<std::mutex> lock(library_mutex());
  aot_library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!aot_library)
    throw std::runtime_error("gdn_xpu: cannot load " + path + ": " + dlerror());
}

void set_kernel_source(const std::string &source) {
  std::lock_guard<std::mutex> lock(library_mutex());
  kernel_source() = source;
}

int jit_build_count() {
  std::lock_guard<std::mutex> lock(library_mutex());
  return builds;
}

int cache_load_count() {
  std::lock_guard<std::mutex> lock(library_mutex());
  return cache_loads;
}

StepKernels step_kernels_for(const sycl::queue &queue, const KernelConfig &config) {
  const auto &k = kernels_for(queue, config, KernelSet::step);
  return {k[0], k[1], k[2]};
}

sycl::kernel chunked_prefill_kernel_for(const sycl::queue &queue, const KernelConfig &config) {
  return kernels_for(queue, config, KernelSet::chunked_prefill)[0];
}

}  // namespace gdn
