// Host launcher of the GDN attention kernels: the only C++ that knows about torch tensors.
// The Python op (gdn_xpu/ops.py) validates the arguments and hands over prepared tensors:
// per-rank head counts, int32 index tensors, conv weights [C, W], A_log and dt_bias as the layer
// holds them (fp32 or the activation dtype), and an fp32 conv workspace (the weights' tap-major
// copy [W, C], then one-token sequences' conv outputs, then A_log and dt_bias in fp32).
//
// Devices: CPU tensors run on the package's own in-order queue on the SYCL CPU device (OpenCL),
// reading torch's memory in place (the device supports system allocations). XPU tensors run on
// torch's current XPU queue, passed in as a pointer (torch.xpu.current_stream().sycl_queue);
// that path is compiled in but unverified on Intel GPU hardware.
#include "gdn_attention.h"

#include "kernel_library.h"

#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <cstdlib>
#include <limits>

namespace gdn {
namespace {

// Never destroyed: at process exit the SYCL runtime may already be torn down.
sycl::queue &cpu_queue() {
  static sycl::queue *queue = [] {
    try {
      return new sycl::queue{sycl::cpu_selector_v, sycl::property::queue::in_order{}};
    } catch (const sycl::exception &e) {
      throw std::runtime_error(
          std::string("gdn_xpu: no SYCL CPU device (") + e.what() +
          "). Install Intel's OpenCL CPU runtime in this environment: pip install "
          "intel-opencl-rt==2026.1.2 intel-cmplr-lib-ur==2026.1.2");
    }
  }();
  return *queue;
}

// Non-spec sequences of this many tokens or more take the chunked prefill kernel: 64 on GPUs;
// never on the CPU device, where the recurrent kernel measured 3.3-7.6x faster for 512-2048-token
// prefills. GDN_XPU_CHUNKED_FROM=N overrides it (0: never), read at every call.
constexpr int32_t kNever = std::numeric_limits<int32_t>::max();

int32_t chunked_from(const sycl::device &dev) {
  if (const char *env = std::getenv("GDN_XPU_CHUNKED_FROM")) {
    const int n = std::atoi(env);
    return n > 0 ? n : kNever;
  }
  return dev.is_cpu() ? kNever : 64;
}

int dtype_code(const Tensor &t) {
  using torch::headeronly::ScalarType;
  const ScalarType type = t.scalar_type();
  switch (type) {
    case ScalarType::Float: return 0;
    case ScalarType::Half: return 1;
    case ScalarType::BFloat16: return 2;
    default: STD_TORCH_CHECK(false, "gdn_xpu: unsupported dtype ", int(type));
  }
  return -1;
}

template <typename T> T *ptr(const Tensor &t) { return static_cast<T *>(t.data_ptr()); }
template <typename T> T *ptr(const OptionalTensor &t) {
  return t.has_value() ? static_cast<T *>(t->data_ptr()) : nullptr;
}

// Whether a parameter (conv weights, A_log, dt_bias) is fp32; otherwise it must be in the
// activation dtype, which gdn_prepare reads (ops.py converts any other).
int32_t is_fp32(const Tensor &parameter, const Tensor &act, const char *name) {
  const int code = dtype_code(parameter);
  STD_TORCH_CHECK(code == 0 || code == dtype_code(act), "gdn_xpu: ", name,
                  " must be fp32 or the activation dtype");
  return code == 0;
}

template <int D, typename... Args>
void launch(sycl::queue &queue, const sycl::kernel &kernel, const sycl::nd_range<D> &range,
            const Args &...args) {
  queue.submit([&](sycl::handler &h) {
    h.set_args(args...);
    h.parallel_for(range, kernel);
  });
}

// One batch group (non-spec or spec sequences): the recurrent kernel, one work-group per
// (sequence, v-head, block of state rows).
struct Group {
  int32_t num_seqs;
  const int32_t *query_start_loc, *token_index, *state_index;
  int32_t state_index_stride;
  const bool *has_initial_state;
  const int32_t *num_accepted;
  int32_t chunked_from;  // sequences of this many tokens or more: the chunked prefill kernel
};

}  // namespace

void gdn_attention(const Tensor &core_attn_out, const Tensor &z, const Tensor &qkvz,
                   const Tensor &ba, int64_t num_k_heads, int64_t num_v_heads,
                   int64_t head_k_dim, int64_t head_v_dim, const Tensor &conv_state,
                   const Tensor &ssm_state, const Tensor &conv_weights,
                   const Tensor &conv_workspace, const OptionalTensor &conv_bias,
                   bool use_silu, const Tensor &A_log, const Tensor &dt_bias,
                   int64_t num_non_spec_seqs, int64_t num_spec_seqs,
                   const OptionalTensor &has_initial_state,
                   const OptionalTensor &non_spec_query_start_loc,
                   const OptionalTensor &non_spec_token_indx,
                   const OptionalTensor &non_spec_state_indices,
                   const OptionalTensor &spec_query_start_loc,
                   const OptionalTensor &spec_token_indx,
                   const OptionalTensor &spec_state_indices,
                   const OptionalTensor &num_accepted_tokens, int64_t num_actual_tokens,
                   bool flat_layout, int64_t queue_address) {
  sycl::queue &queue =
      queue_address ? *reinterpret_cast<sycl::queue *>(queue_address) : cpu_queue();
  const int32_t hk = num_k_heads, hv = num_v_heads, V = head_v_dim;
  // conv_weights arrive [C, W] or [C, 1, W] (the same memory), contiguous.
  const int32_t conv_width = conv_weights.size(conv_weights.dim() - 1);
  const KernelConfig config{dtype_code(qkvz), dtype_code(ssm_state), int(head_k_dim), V,
                            conv_width};
  const StepKernels kernels = step_kernels_for(queue, config);

  const int32_t flat = flat_layout;
  const int32_t silu = use_silu;
  const int64_t qkvz_stride = qkvz.stride(0), ba_stride = ba.stride(0);
  const int64_t conv_slot_stride = conv_state.stride(0), ssm_slot_stride = ssm_state.stride(0);
  const int32_t conv_channels = conv_weights.size(0);
  // Spec decode's conv history: vLLM's rolling buffer of W-1+num_spec rows, or W-1 rows in every
  // slot of the sequence (vllm-xpu-kernels' layout). Validation allowed only these two.
  const int32_t spec_conv_rolling = conv_state.size(1) > conv_width - 1;
  const auto *act_in = ptr<const char>(qkvz);  // element type is fixed by the kernel build

  // A_log and dt_bias in fp32, the workspace's last row (gdn_prepare writes them).
  float *gate_parameters =
      ptr<float>(conv_workspace) + (conv_workspace.size(0) - 1) * conv_channels;
  const float *fp32_A_log = gate_parameters, *fp32_dt_bias = gate_parameters + hv;
  // gdn_prepare: the parameters in fp32, then each token's z; work-groups of 256 work-items (its
  // PREPARE_WG; with 64, the CPU device's cost per work-group made a B=1 decode call on one core
  // 7 us slower). With the CPU split each work-item covers 16 entries, so a B=1 decode launches
  // 3 work-groups, not 48: with its taps read as a block, the kernel took 33 -> 21 us of that
  // call (one core of an Intel Xeon, caches hot).
  const RecurrentLayout layout = recurrent_layout(queue.get_device(), head_k_dim, V);
  // The CPU split: several row groups per sub-group (conv_first in the kernel source).
  const bool cpu_split = layout.rows_per_sg > layout.group_rows;
  const size_t prepare_wg = 256, span = cpu_split ? 16 : 1, prepare_items = prepare_wg * span;
  auto prepare_groups = [&](size_t n) { return (n + prepare_items - 1) / prepare_items; };
  const size_t tokens = num_actual_tokens;
  if (num_non_spec_seqs + num_spec_seqs > 0 || tokens > 0) {
    const size_t groups = prepare_groups(conv_channels) + tokens * prepare_groups(size_t(hv) * V);
    launch(queue, kernels.prepare, sycl::nd_range<1>(groups * prepare_wg, prepare_wg),
           ptr<const void>(conv_weights), is_fp32(conv_weights, qkvz, "conv_weights"),
           ptr<const void>(A_log), is_fp32(A_log, qkvz, "A_log"), ptr<const void>(dt_bias),
           is_fp32(dt_bias, qkvz, "dt_bias"), ptr<float>(conv_workspace), gate_parameters,
           conv_channels, act_in, qkvz_stride, ptr<char>(z), hk, hv, flat, int(span));
  }

  // Non-spec sequences of chunked_from tokens or more take the chunked prefill kernel, the
  // others (and every spec sequence) the recurrent one.
  const Group groups[2] = {
      {int32_t(num_non_spec_seqs), ptr<const int32_t>(non_spec_query_start_loc),
       ptr<const int32_t>(non_spec_token_indx), ptr<const int32_t>(non_spec_state_indices), 1,
       ptr<const bool>(has_initial_state), nullptr, chunked_from(queue.get_device())},
      {int32_t(num_spec_seqs), ptr<const int32_t>(spec_query_start_loc),
       ptr<const int32_t>(spec_token_indx), ptr<const int32_t>(spec_state_indices),
       spec_state_indices ? int32_t(spec_state_indices->size(1)) : 1, nullptr,
       ptr<const int32_t>(num_accepted_tokens), kNever},
  };
  // gdn_conv_state_update runs after the other kernels (the queue is in order), which read the
  // conv state as it was before the batch; with the CPU split (several row groups per
  // sub-group) also before them, for the one-token non-spec sequences, whose conv outputs it
  // writes to the conv workspace for gdn_recurrent.
  // Work-groups of 256 work-items step over the channels: on GPUs one channel per work-item, on
  // the CPU device 2048 channels per work-group, which pays the sequence's checks once per
  // sub-group, not per 16 channels (one core, bf16 decode B=1 0.188 -> 0.182 ms; B=32 the same).
  const size_t channel_block = 256;
  const size_t channel_step = queue.get_device().is_cpu() ? 2048 : channel_block;
  const size_t channels = (conv_channels + channel_step - 1) / channel_step * channel_block;
  auto update_conv_state = [&](const Group &g, bool before) {
    launch(queue, kernels.conv_state_update,
           sycl::nd_range<2>({size_t(g.num_seqs), channels}, {1, channel_block}), act_in,
           qkvz_stride, ptr<char>(conv_state), conv_slot_stride, g.query_start_loc,
           g.token_index, g.state_index, g.state_index_stride, g.has_initial_state,
           g.num_accepted, spec_conv_rolling, hk, hv, flat, ptr<float>(conv_workspace),
           ptr<const float>(conv_bias), silu, g.chunked_from, int32_t(before));
  };
  // Which passes the non-spec sequences need: before for one-token sequences (cpu_split),
  // after for the others. On the package's own CPU queue the launcher reads their lengths (host
  // memory, and the batch runs now) and skips a pass no sequence needs: a decode batch's pass
  // after. Another queue may be recording a graph that replays other lengths: both passes.
  bool conv_before = cpu_split && num_non_spec_seqs > 0, conv_after = num_non_spec_seqs > 0;
  if (!queue_address && conv_before) {
    const int32_t *loc = groups[0].query_start_loc;
    conv_before = conv_after = false;
    for (int64_t seq = 0; seq < num_non_spec_seqs; ++seq) {
      const int32_t len = loc[seq + 1] - loc[seq];
      if (len <= 0) continue;  // padding: neither pass
      if (len == 1 && groups[0].chunked_from > 1)
        conv_before = true;
      else
        conv_after = true;
    }
  }
  if (conv_before) update_conv_state(groups[0], true);
  // gdn_recurrent declares its work-group size (it depends on the sub-group layout).
  const size_t wg = kernels.recurrent
                        .get_info<sycl::info::kernel_device_specific::compile_work_group_size>(
                            queue.get_device())
                        .size();
  const size_t recurrent_blocks = V / layout.block_rows;
  const size_t bv = chunked_block_rows(head_k_dim, V);
  for (const Group &g : groups) {
    if (g.num_seqs == 0) continue;
    auto launch_on_group = [&](const sycl::kernel &kernel, const auto &range) {
      launch(queue, kernel, range, act_in, qkvz_stride, ptr<const char>(ba), ba_stride,
             ptr<char>(core_attn_out), ptr<const char>(conv_state), conv_slot_stride,
             ptr<const float>(conv_workspace), ptr<const float>(conv_bias), silu,
             ptr<char>(ssm_state), ssm_slot_stride, fp32_A_log, fp32_dt_bias, g.query_start_loc,
             g.token_index, g.state_index, g.state_index_stride, g.has_initial_state,
             g.num_accepted, spec_conv_rolling, hk, hv, flat, g.chunked_from);
    };
    launch_on_group(kernels.recurrent,
                    sycl::nd_range<3>({size_t(g.num_seqs), size_t(hv) * recurrent_blocks, wg},
                                      {1, 1, wg}));
    if (g.chunked_from != kNever)
      launch_on_group(chunked_prefill_kernel_for(queue, config),
                      sycl::nd_range<3>({size_t(g.num_seqs), size_t(hv) * (V / bv), bv},
                                        {1, 1, bv}));
  }
  if (conv_after) update_conv_state(groups[0], false);
  if (num_spec_seqs > 0) update_conv_state(groups[1], false);
  if (!queue_address) queue.wait_and_throw();  // CPU tensors are ready when the op returns
}

}  // namespace gdn
