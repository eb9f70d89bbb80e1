// The launcher of the GDN kernels, on the LibTorch Stable ABI: it sees torch tensors only as
// torch::stable::Tensor (a handle into torch's stable C shim), so one build serves every torch
// from the ABI version it targets (TORCH_TARGET_VERSION, setup.py) on.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>

namespace gdn {

using Tensor = torch::stable::Tensor;
using OptionalTensor = std::optional<torch::stable::Tensor>;

// Launches the GDN kernels on prepared arguments (see gdn_attention.cpp and gdn_xpu/ops.py).
// queue_address: 0 for the SYCL CPU device, else the address of a sycl::queue (torch XPU).
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
                   bool flat_layout, int64_t queue_address);

}  // namespace gdn
