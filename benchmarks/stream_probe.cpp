// The SYCL CPU device's own streaming ceiling for a decode step's state traffic: a kernel that
// reads and writes the state in place with the decode kernel's access pattern (one work-group per
// head of V x K elements, sub-groups of 16 lanes over k, 16 rows each) and does no other work.
// Built and run by benchmarks/cpu_speed.py (g++ against intel-sycl-rt, kernel compiled at
// run time as the package's kernels are).
//
//   stream_probe <heads> <K> <V> <element bytes: 4 or 2> <reps>
// prints the median and minimum seconds per pass and the process CPU seconds per pass.
#include <sycl/sycl.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace syclexp = sycl::ext::oneapi::experimental;

static const char *kSource = R"(
#include <sycl/ext/oneapi/free_function_queries.hpp>
#include <sycl/ext/oneapi/kernel_properties/properties.hpp>
namespace syclext = sycl::ext::oneapi;
namespace syclexp = sycl::ext::oneapi::experimental;
constexpr int LANES = 16, ROWS = 16;
// PROBE_T: float (fp32 state) or unsigned short (bf16/fp16 state, xor with a zero mask)
extern "C" SYCL_EXT_ONEAPI_FUNCTION_PROPERTY((syclexp::nd_range_kernel<1>))
[[sycl::reqd_sub_group_size(LANES)]] [[sycl::reqd_work_group_size(LANES * PROBE_V / ROWS)]]
void stream_state(PROBE_T *state, PROBE_T change) {
  auto item = syclext::this_work_item::get_nd_item<1>();
  const int lane = item.get_sub_group().get_local_linear_id();
  const int row0 = item.get_sub_group().get_group_linear_id() * ROWS;
  PROBE_T *rows = state + ((long)item.get_group(0) * PROBE_V + row0) * PROBE_K;
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int i = 0; i < PROBE_K / LANES; ++i) {
      PROBE_T &x = rows[r * PROBE_K + lane + LANES * i];
      x = PROBE_OP(x, change);
    }
}
)";

static double cpu_seconds() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         1e-6 * (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

int main(int argc, char **argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: stream_probe <heads> <K> <V> <element bytes> <reps>\n");
    return 2;
  }
  const long heads = std::atol(argv[1]);
  const int K = std::atoi(argv[2]), V = std::atoi(argv[3]), bytes = std::atoi(argv[4]);
  const int reps = std::atoi(argv[5]);
  sycl::queue queue{sycl::cpu_selector_v, sycl::property::queue::in_order{}};
  const std::vector<std::string> options = {
      "-DPROBE_K=" + std::to_string(K), "-DPROBE_V=" + std::to_string(V),
      bytes == 4 ? "-DPROBE_T=float" : "-DPROBE_T=unsigned short",
      bytes == 4 ? "-DPROBE_OP(x,c)=((x)*(c))" : "-DPROBE_OP(x,c)=((PROBE_T)((x)^(c)))"};
  auto source = syclexp::create_kernel_bundle_from_source(
      queue.get_context(), syclexp::source_language::sycl, kSource);
  auto bundle = syclexp::build(source, std::vector<sycl::device>{queue.get_device()},
                               syclexp::properties{syclexp::build_options{options}});
  sycl::kernel kernel = bundle.ext_oneapi_get_kernel("stream_state");

  const size_t elements = heads * V * K, wg = V;  // 16 lanes x V / 16 rows
  std::vector<char> state(elements * bytes, 0);  // host memory, as torch's CPU tensors
  auto pass = [&] {
    queue.submit([&](sycl::handler &h) {
      if (bytes == 4) h.set_args(reinterpret_cast<float *>(state.data()), 1.0f);
      else h.set_args(reinterpret_cast<unsigned short *>(state.data()), (unsigned short)0);
      h.parallel_for(sycl::nd_range<1>{heads * wg, wg}, kernel);
    });
    queue.wait_and_throw();
  };
  pass();
  std::vector<double> times;
  const double cpu0 = cpu_seconds();
  for (int r = 0; r < reps; ++r) {
    const auto start = std::chrono::steady_clock::now();
    pass();
    const auto end = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double>(end - start).count());
  }
  const double cpu = (cpu_seconds() - cpu0) / reps;
  std::sort(times.begin(), times.end());
  std::printf("%.6e %.6e %.6e\n", times[times.size() / 2], times[0], cpu);
  return 0;
}
