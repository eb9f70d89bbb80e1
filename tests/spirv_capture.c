/* LD_PRELOAD interposer for the GPU ISA check (tests/gpu_isa.py): records what the SYCL
 * runtime hands the OpenCL CPU device when gdn_xpu compiles its kernels at run time.
 *
 *   GDN_CAPTURE_DIR        where <n>.spv (each clCreateProgramWithIL module) and events.log go
 *   GDN_CAPTURE_LOCAL_MEM  reported as CL_DEVICE_LOCAL_MEM_SIZE, so the launcher picks the
 *                          shared-memory-dependent build options of the GPU being checked
 *   GDN_CAPTURE_NO_RUN     kernels are not run (a marker replaces each launch): the check
 *                          needs the modules and launch sizes, not the results, and kernels
 *                          built for a GPU's split need not run right on the CPU
 *
 * events.log, one line per event, in call order:
 *   frontend <option>        urPlatformGetBackendOption: a frontend option of the next image
 *                            (e.g. -O2, its optLevel property), before the backend translates it
 *   il <n>.spv <program>     clCreateProgramWithIL
 *   build <program> <opts>   clBuildProgram / clCompileProgram: the backend options as given
 *   launch <kernel> <global sizes> / <local sizes>   clEnqueueNDRangeKernel
 *
 * Options starting with -ze- (GPU backend options such as -ze-opt-large-register-file, which
 * the runtime passes to every backend) are recorded, then dropped from what reaches the CPU
 * compiler, which rejects them. Built by the test with gcc into a temporary directory. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int32_t cl_int;
typedef uint32_t cl_uint;
#define CL_DEVICE_LOCAL_MEM_SIZE 0x1023
#define CL_KERNEL_FUNCTION_NAME 0x1190

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int modules = 0;

static void *real_symbol(const char *library, const char *name) {
  void *handle = dlopen(library, RTLD_NOW | RTLD_NOLOAD);
  void *symbol = handle ? dlsym(handle, name) : NULL;
  if (!symbol) {
    fprintf(stderr, "spirv_capture: %s not found in a loaded %s\n", name, library);
    abort();
  }
  return symbol;
}

/* Appends one line to events.log; call with the lock held. */
static void log_event(const char *kind, const char *text, const void *program) {
  const char *dir = getenv("GDN_CAPTURE_DIR");
  if (!dir) return;
  char path[4096];
  snprintf(path, sizeof path, "%s/events.log", dir);
  FILE *f = fopen(path, "a");
  if (!f) return;
  if (strcmp(kind, "frontend") == 0 || strcmp(kind, "launch") == 0) fprintf(f, "%s %s\n", kind, text);
  else if (strcmp(kind, "il") == 0) fprintf(f, "il %s %p\n", text, program);
  else fprintf(f, "build %p %s\n", program, text);
  fclose(f);
}

/* A copy of options without the -ze-* tokens (caller frees). */
static char *without_gpu_options(const char *options) {
  char *out = calloc(1, options ? strlen(options) + 1 : 1);
  if (!options) return out;
  char *copy = strdup(options), *save = NULL;
  for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
    if (strncmp(tok, "-ze-", 4) == 0) continue;
    if (*out) strcat(out, " ");
    strcat(out, tok);
  }
  free(copy);
  return out;
}

int urPlatformGetBackendOption(void *platform, const char *frontend, const char **backend) {
  int (*real)(void *, const char *, const char **) =
      real_symbol("libur_loader.so.0", "urPlatformGetBackendOption");
  pthread_mutex_lock(&lock);
  log_event("frontend", frontend ? frontend : "", NULL);
  pthread_mutex_unlock(&lock);
  return real(platform, frontend, backend);
}

void *clCreateProgramWithIL(void *context, const void *il, size_t length, cl_int *error) {
  void *(*real)(void *, const void *, size_t, cl_int *) =
      real_symbol("libOpenCL.so.1", "clCreateProgramWithIL");
  void *program = real(context, il, length, error);
  const char *dir = getenv("GDN_CAPTURE_DIR");
  if (dir) {
    pthread_mutex_lock(&lock);
    char name[64], path[4096];
    snprintf(name, sizeof name, "%03d.spv", modules++);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
      fwrite(il, 1, length, f);
      fclose(f);
    }
    log_event("il", name, program);
    pthread_mutex_unlock(&lock);
  }
  return program;
}

cl_int clBuildProgram(void *program, cl_uint n, const void *devices, const char *options,
                      void *notify, void *user_data) {
  cl_int (*real)(void *, cl_uint, const void *, const char *, void *, void *) =
      real_symbol("libOpenCL.so.1", "clBuildProgram");
  pthread_mutex_lock(&lock);
  log_event("build", options ? options : "", program);
  pthread_mutex_unlock(&lock);
  char *cpu_options = without_gpu_options(options);
  cl_int result = real(program, n, devices, cpu_options, notify, user_data);
  free(cpu_options);
  return result;
}

cl_int clCompileProgram(void *program, cl_uint n, const void *devices, const char *options,
                        cl_uint headers, const void *header_programs, const void *header_names,
                        void *notify, void *user_data) {
  cl_int (*real)(void *, cl_uint, const void *, const char *, cl_uint, const void *,
                 const void *, void *, void *) = real_symbol("libOpenCL.so.1", "clCompileProgram");
  pthread_mutex_lock(&lock);
  log_event("build", options ? options : "", program);
  pthread_mutex_unlock(&lock);
  char *cpu_options = without_gpu_options(options);
  cl_int result = real(program, n, devices, cpu_options, headers, header_programs, header_names,
                       notify, user_data);
  free(cpu_options);
  return result;
}

cl_int clGetDeviceInfo(void *device, cl_uint name, size_t size, void *value, size_t *size_ret) {
  cl_int (*real)(void *, cl_uint, size_t, void *, size_t *) =
      real_symbol("libOpenCL.so.1", "clGetDeviceInfo");
  cl_int result = real(device, name, size, value, size_ret);
  const char *local_mem = getenv("GDN_CAPTURE_LOCAL_MEM");
  if (result == 0 && name == CL_DEVICE_LOCAL_MEM_SIZE && local_mem && value &&
      size >= sizeof(uint64_t))
    *(uint64_t *)value = strtoull(local_mem, NULL, 10);
  return result;
}

cl_int clEnqueueNDRangeKernel(void *queue, void *kernel, cl_uint dims, const size_t *offset,
                              const size_t *global, const size_t *local, cl_uint num_events,
                              const void *wait_list, void *event) {
  cl_int (*real)(void *, void *, cl_uint, const size_t *, const size_t *, const size_t *,
                 cl_uint, const void *, void *) =
      real_symbol("libOpenCL.so.1", "clEnqueueNDRangeKernel");
  cl_int (*kernel_info)(void *, cl_uint, size_t, void *, size_t *) =
      real_symbol("libOpenCL.so.1", "clGetKernelInfo");
  char name[512] = "?", text[1024];
  kernel_info(kernel, CL_KERNEL_FUNCTION_NAME, sizeof name, name, NULL);
  int n = snprintf(text, sizeof text, "%s", name);
  for (cl_uint d = 0; d < dims && n < (int)sizeof text; ++d)
    n += snprintf(text + n, sizeof text - n, " %zu", global[d]);
  n += snprintf(text + n, sizeof text - n, " /");
  for (cl_uint d = 0; d < dims && local && n < (int)sizeof text; ++d)
    n += snprintf(text + n, sizeof text - n, " %zu", local[d]);
  pthread_mutex_lock(&lock);
  log_event("launch", text, NULL);
  pthread_mutex_unlock(&lock);
  if (getenv("GDN_CAPTURE_NO_RUN")) {
    cl_int (*marker)(void *, cl_uint, const void *, void *) =
        real_symbol("libOpenCL.so.1", "clEnqueueMarkerWithWaitList");
    return marker(queue, num_events, wait_list, event);
  }
  return real(queue, kernel, dims, offset, global, local, num_events, wait_list, event);
}
