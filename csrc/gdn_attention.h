#pragma once

#include <torch/extension.h>

#include <optional>

namespace gdn {

// Launches the GDN kernels on prepared arguments (see gdn_attention.cpp and gdn_xpu/ops.py).
// queue_address: 0 for the SYCL CPU device, else the address of a sycl::queue (torch XPU).
void gdn_attention(at::Tensor &core_attn_out, at::Tensor &z, const at::Tensor &qkvz,
                   const at::Tensor &ba, int64_t num_k_heads, int64_t num_v_heads,
                   int64_t head_k_dim, int64_t head_v_dim, at::Tensor &conv_state,
                   at::Tensor &ssm_state, const at::Tensor &conv_weights,
                   const std::optional<at::Tensor> &conv_bias, bool use_silu,
                   const at::Tensor &A_log, const at::Tensor &dt_bias, int64_t num_non_spec_seqs,
                   int64_t num_spec_seqs, const std::optional<at::Tensor> &has_initial_state,
                   const std::optional<at::Tensor> &non_spec_query_start_loc,
                   const std::optional<at::Tensor> &non_spec_token_indx,
                   const std::optional<at::Tensor> &non_spec_state_indices,
                   const std::optional<at::Tensor> &spec_query_start_loc,
                   const std::optional<at::Tensor> &spec_token_indx,
                   const std::optional<at::Tensor> &spec_state_indices,
                   const std::optional<at::Tensor> &num_accepted_tokens,
                   int64_t num_actual_tokens, bool flat_layout, int64_t queue_address);

}  // namespace gdn
