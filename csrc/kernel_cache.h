// Persistent cache of compiled kernel programs, so a second process skips the run-time compile.
// The SYCL runtime's own persistent cache (SYCL_CACHE_PERSISTENT) crashes with bundles built from
// source in the pinned runtime, so this one stores the device program binary itself.
//
// Supported for the OpenCL backend (the CPU device): entries are the cl_program binaries, reloaded
// with clCreateProgramWithBinary. Other backends (Level Zero on Intel GPUs) always compile, or use
// the AOT kernel library.
//
// An entry is named by a hash of everything that decides the binary: kernel source, build options,
// device, driver and runtime versions; a changed input is a different file, never a stale hit.
// Entries carry a checksum and are written to a temporary file then renamed into place, so
// concurrent processes never see half an entry. Any failure to read, check, reload or write an
// entry falls back to compiling from source; the cache can slow nothing but itself.
#pragma once

#include <sycl/sycl.hpp>

#include <optional>
#include <string>
#include <vector>

namespace gdn {

// The cache directory; "" turns the cache off. Set by the Python package (GDN_XPU_CACHE_DIR).
void set_cache_dir(const std::string &dir);

// The cache file for a build of `source` with `options` for `dev`, or "" when the cache is off
// or the device's backend is not supported.
std::string cache_path(const sycl::device &dev, const std::string &source,
                       const std::vector<std::string> &options, const std::string &config_name);

// The kernels `names` from the cached program at `path`, or nothing if it is absent or unusable.
std::optional<std::vector<sycl::kernel>> load_cached_kernels(
    const sycl::context &ctx, const sycl::device &dev, const std::string &path,
    const std::vector<std::string> &names);

// Writes the program of a freshly built bundle to `path` (atomically); failures are ignored.
void store_program(const sycl::kernel_bundle<sycl::bundle_state::executable> &bundle,
                   const std::string &path);

}  // namespace gdn
