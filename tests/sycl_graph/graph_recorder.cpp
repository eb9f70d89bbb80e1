// Test helper (loaded with ctypes): a SYCL queue on the CPU device that records submissions into
// a command graph (sycl_ext_oneapi_graph) and replays the finalized graph. The raw op's host
// launcher takes a queue address (what torch.xpu.current_stream().sycl_queue is on an XPU), so
// handing it this queue while it records captures one call of the launcher as torch's XPU graphs
// would. Built by tests/test_padded_batches.py with g++ against the environment's libsycl.
#include <sycl/sycl.hpp>

#include <string>

namespace syclexp = sycl::ext::oneapi::experimental;
using modifiable_graph = syclexp::command_graph<syclexp::graph_state::modifiable>;
using executable_graph = syclexp::command_graph<syclexp::graph_state::executable>;

static std::string last_error;

template <typename F> static auto guarded(F f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception &e) {
    last_error = e.what();
    return {};
  }
}

extern "C" {
const char *gr_last_error() { return last_error.c_str(); }

void *gr_queue() {
  return guarded([]() -> void * {
    return new sycl::queue{sycl::cpu_selector_v, sycl::property::queue::in_order{}};
  });
}

// 1: ext_oneapi_graph, 2: ext_oneapi_limited_graph (bits).
int gr_graph_aspects(void *queue) {
  const sycl::device dev = static_cast<sycl::queue *>(queue)->get_device();
  return int(dev.has(sycl::aspect::ext_oneapi_graph)) |
         int(dev.has(sycl::aspect::ext_oneapi_limited_graph)) << 1;
}

void *gr_begin_recording(void *queue) {
  return guarded([queue]() -> void * {
    auto &q = *static_cast<sycl::queue *>(queue);
    auto *graph = new modifiable_graph{q.get_context(), q.get_device()};
    graph->begin_recording(q);
    return graph;
  });
}

// Ends the recording, returns the finalized (executable) graph; -1 nodes on failure.
void *gr_end_recording(void *queue, void *graph, long *num_nodes) {
  return guarded([=]() -> void * {
    auto &q = *static_cast<sycl::queue *>(queue);
    auto *g = static_cast<modifiable_graph *>(graph);
    g->end_recording(q);
    *num_nodes = long(g->get_nodes().size());
    return new executable_graph{g->finalize()};
  });
}

int gr_replay(void *queue, void *exec) {
  return guarded([=]() -> int {
    auto &q = *static_cast<sycl::queue *>(queue);
    q.ext_oneapi_graph(*static_cast<executable_graph *>(exec));
    q.wait_and_throw();
    return 1;
  });
}

int gr_wait(void *queue) {
  return guarded([=]() -> int {
    static_cast<sycl::queue *>(queue)->wait_and_throw();
    return 1;
  });
}
}
