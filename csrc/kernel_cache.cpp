#include "kernel_cache.h"

#include <CL/cl.h>
#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>

namespace gdn {
namespace {

std::string &cache_dir() {
  static std::string dir;
  return dir;
}

std::mutex &dir_mutex() {
  static std::mutex m;
  return m;
}

// The few OpenCL entry points the cache needs, found in the ICD loader the SYCL runtime uses;
// resolved at run time so the extension does not link against OpenCL.
struct OpenCL {
  decltype(&clGetProgramInfo) get_program_info = nullptr;
  decltype(&clCreateProgramWithBinary) create_program_with_binary = nullptr;
  decltype(&clBuildProgram) build_program = nullptr;
  decltype(&clCreateKernel) create_kernel = nullptr;
  decltype(&clReleaseProgram) release_program = nullptr;
  decltype(&clReleaseContext) release_context = nullptr;
  decltype(&clReleaseDevice) release_device = nullptr;

  static const OpenCL *get() {
    static const OpenCL *api = []() -> const OpenCL * {
      void *lib = dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_LOCAL);
      if (!lib) return nullptr;
      auto *api = new OpenCL;  // never destroyed: used until process exit
      api->get_program_info = reinterpret_cast<decltype(&clGetProgramInfo)>(dlsym(lib, "clGetProgramInfo"));
      api->create_program_with_binary = reinterpret_cast<decltype(&clCreateProgramWithBinary)>(
          dlsym(lib, "clCreateProgramWithBinary"));
      api->build_program = reinterpret_cast<decltype(&clBuildProgram)>(dlsym(lib, "clBuildProgram"));
      api->create_kernel = reinterpret_cast<decltype(&clCreateKernel)>(dlsym(lib, "clCreateKernel"));
      api->release_program = reinterpret_cast<decltype(&clReleaseProgram)>(dlsym(lib, "clReleaseProgram"));
      api->release_context = reinterpret_cast<decltype(&clReleaseContext)>(dlsym(lib, "clReleaseContext"));
      api->release_device = reinterpret_cast<decltype(&clReleaseDevice)>(dlsym(lib, "clReleaseDevice"));
      const bool complete = api->get_program_info && api->create_program_with_binary &&
                            api->build_program && api->create_kernel && api->release_program &&
                            api->release_context && api->release_device;
      return complete ? api : nullptr;
    }();
    return api;
  }
};

// FNV-1a, 64 bit: the entry name (hash of its inputs) and the payload checksum.
uint64_t fnv1a(const void *data, size_t size, uint64_t hash = 0xcbf29ce484222325ull) {
  const auto *bytes = static_cast<const unsigned char *>(data);
  for (size_t i = 0; i < size; ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ull;
  return hash;
}

constexpr char kMagic[8] = {'G', 'D', 'N', 'X', 'P', 'U', '1', '\0'};

struct Header {
  char magic[8];
  uint64_t size;
  uint64_t checksum;
};

std::optional<std::string> read_payload(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  Header header{};
  if (!in.read(reinterpret_cast<char *>(&header), sizeof header)) return std::nullopt;
  if (std::memcmp(header.magic, kMagic, sizeof kMagic) != 0) return std::nullopt;
  std::string payload(std::istreambuf_iterator<char>(in), {});
  if (payload.size() != header.size || fnv1a(payload.data(), payload.size()) != header.checksum)
    return std::nullopt;
  return payload;
}

}  // namespace

void set_cache_dir(const std::string &dir) {
  std::lock_guard<std::mutex> lock(dir_mutex());
  cache_dir() = dir;
}

std::string cache_path(const sycl::device &dev, const std::string &source,
                       const std::vector<std::string> &options, const std::string &config_name) {
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(dir_mutex());
    dir = cache_dir();
  }
  if (dir.empty() || dev.get_backend() != sycl::backend::opencl || !OpenCL::get()) return "";
  std::ostringstream inputs;
  inputs << source << '\0';
  for (const auto &option : options) inputs << option << '\0';
  inputs << dev.get_info<sycl::info::device::name>() << '\0'
         << dev.get_info<sycl::info::device::vendor>() << '\0'
         << dev.get_info<sycl::info::device::driver_version>() << '\0'
         << dev.get_platform().get_info<sycl::info::platform::version>() << '\0'
         << __LIBSYCL_MAJOR_VERSION << '.' << __LIBSYCL_MINOR_VERSION << '.'
         << __LIBSYCL_PATCH_VERSION;
  const std::string text = inputs.str();
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx",
                static_cast<unsigned long long>(fnv1a(text.data(), text.size())));
  return dir + "/" + config_name + "-" + hash + ".bin";
}

std::optional<std::vector<sycl::kernel>> load_cached_kernels(
    const sycl::context &ctx, const sycl::device &dev, const std::string &path,
    const std::vector<std::string> &names) {
  const OpenCL *cl = OpenCL::get();
  if (path.empty() || !cl) return std::nullopt;
  const std::optional<std::string> payload = read_payload(path);
  if (!payload) return std::nullopt;

  cl_context cl_ctx = sycl::get_native<sycl::backend::opencl>(ctx);
  cl_device_id cl_dev = sycl::get_native<sycl::backend::opencl>(dev);
  std::vector<std::optional<sycl::kernel>> found(names.size());
  for (size_t at = 0; at + sizeof(uint64_t) <= payload->size();) {
    uint64_t size = 0;
    std::memcpy(&size, payload->data() + at, sizeof size);
    at += sizeof size;
    if (size > payload->size() - at) break;
    const auto *data = reinterpret_cast<const unsigned char *>(payload->data() + at);
    at += size;
    const size_t length = size;
    cl_int status = CL_SUCCESS, err = CL_SUCCESS;
    cl_program program =
        cl->create_program_with_binary(cl_ctx, 1, &cl_dev, &length, &data, &status, &err);
    if (err != CL_SUCCESS) continue;
    if (status == CL_SUCCESS &&
        cl->build_program(program, 1, &cl_dev, "", nullptr, nullptr) == CL_SUCCESS) {
      // Device kernel names carry a prefix from the SYCL compiler: match on the name's tail.
      size_t list_size = 0;
      cl->get_program_info(program, CL_PROGRAM_KERNEL_NAMES, 0, nullptr, &list_size);
      std::string list(list_size, '\0');
      cl->get_program_info(program, CL_PROGRAM_KERNEL_NAMES, list_size, list.data(), nullptr);
      list.resize(std::strlen(list.c_str()));
      std::istringstream entries(list);
      for (std::string device_name; std::getline(entries, device_name, ';');) {
        for (size_t i = 0; i < names.size(); ++i) {
          const std::string &name = names[i];
          if (found[i] || device_name.size() < name.size() ||
              device_name.compare(device_name.size() - name.size(), name.size(), name) != 0)
            continue;
          cl_kernel kernel = cl->create_kernel(program, device_name.c_str(), &err);
          if (err == CL_SUCCESS) found[i] = sycl::make_kernel<sycl::backend::opencl>(kernel, ctx);
        }
      }
    }
    cl->release_program(program);  // its kernels keep it alive
  }
  cl->release_device(cl_dev);  // get_native retained both
  cl->release_context(cl_ctx);
  std::vector<sycl::kernel> kernels;
  for (auto &kernel : found) {
    if (!kernel) return std::nullopt;
    kernels.push_back(*kernel);
  }
  return kernels;
}

void store_program(const sycl::kernel_bundle<sycl::bundle_state::executable> &bundle,
                   const std::string &path) {
  const OpenCL *cl = OpenCL::get();
  if (path.empty() || !cl) return;
  // The bundle may hold several programs (device images): the payload is a list of
  // [uint64 size][binary] records, one per program.
  const std::vector<cl_program> programs = sycl::get_native<sycl::backend::opencl>(bundle);
  std::string payload;
  bool complete = !programs.empty();
  for (cl_program program : programs) {
    size_t size = 0;  // one device per program
    complete = complete &&
               cl->get_program_info(program, CL_PROGRAM_BINARY_SIZES, sizeof size, &size,
                                    nullptr) == CL_SUCCESS && size > 0;
    if (complete) {
      std::string binary(size, '\0');
      auto *data = reinterpret_cast<unsigned char *>(binary.data());
      complete = cl->get_program_info(program, CL_PROGRAM_BINARIES, sizeof data, &data,
                                      nullptr) == CL_SUCCESS;
      const uint64_t record_size = size;
      payload.append(reinterpret_cast<const char *>(&record_size), sizeof record_size);
      payload += binary;
    }
    cl->release_program(program);  // get_native retained it
  }
  if (!complete) return;

  std::error_code error;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), error);
  static std::atomic<int> counter{0};
  const std::string temporary =
      path + ".tmp." + std::to_string(getpid()) + "." + std::to_string(counter++);
  Header header{{}, payload.size(), fnv1a(payload.data(), payload.size())};
  std::memcpy(header.magic, kMagic, sizeof kMagic);
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char *>(&header), sizeof header);
    out.write(payload.data(), payload.size());
    if (!out.flush()) {
      out.close();
      std::remove(temporary.c_str());
      return;
    }
  }
  // rename() replaces the entry atomically: readers see the old file or the new one, whole.
  if (std::rename(temporary.c_str(), path.c_str()) != 0) std::remove(temporary.c_str());
}

}  // namespace gdn
