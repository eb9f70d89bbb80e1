"""Pure-PyTorch reference of torch.ops.gdn_xpu.gdn_attention: the oracle of every test.

Same arguments and in-place effects as the raw op (DESIGN.md section 3), written for reading:
one sequence at a time, one token at a time, all heads at once, maths in `compute_dtype`
(float64 by default).
"""

from typing import Optional

import torch
import torch.nn.functional as F


def _split_layout(qkvz, ba, hk, hv, K, V, reorder_input):
    """-> mixed_qkv [T, 2*hk*K + hv*V] (the logical conv input [q | k | v]), z [T, hv, V],
    b [T, hv], a [T, hv]."""
    T, r = qkvz.shape[0], hv // hk
    if reorder_input:  # Qwen3.5: flat [q | k | v | z], [b | a]
        conv_dim = 2 * hk * K + hv * V
        mixed_qkv, z = qkvz[:, :conv_dim], qkvz[:, conv_dim:].reshape(T, hv, V)
        b, a = ba[:, :hv], ba[:, hv:]
        return mixed_qkv, z, b, a
    # Qwen3-Next: per k-head group [q_g (K) | k_g (K) | v_g (r*V) | z_g (r*V)], [b_g (r) | a_g (r)]
    groups = qkvz.reshape(T, hk, 2 * K + 2 * r * V)
    q, k, v, z = groups.split([K, K, r * V, r * V], dim=-1)
    mixed_qkv = torch.cat([q.reshape(T, -1), k.reshape(T, -1), v.reshape(T, -1)], dim=-1)
    gates = ba.reshape(T, hk, 2 * r)
    b, a = gates[..., :r].reshape(T, hv), gates[..., r:].reshape(T, hv)
    return mixed_qkv, z.reshape(T, hv, V), b, a


def _causal_conv(x, prior, weight, bias, activation):
    """x [L, C] after prior [W-1, C] -> act(bias + sum_j w[:, j] * x_ext[t + j]) [L, C]."""
    W = weight.shape[1]
    x_ext = torch.cat([prior, x], dim=0)
    y = sum(weight[:, j] * x_ext[j:j + x.shape[0]] for j in range(W))
    if bias is not None:
        y = y + bias
    return F.silu(y) if activation in ("silu", "swish") else y


def _l2norm(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def _delta_rule(S, q, k, v, g, beta):
    """One token, all v-heads: S [hv, K, V], q/k [hv, K], v [hv, V], g/beta [hv].
    Returns (o [hv, V], S'). The output sees the state after its own token."""
    S = S * torch.exp(g)[:, None, None]
    u = beta[:, None] * (v - torch.einsum("hkv,hk->hv", S, k))
    S = S + k[:, :, None] * u[:, None, :]
    return torch.einsum("hkv,hk->hv", S, q), S


def gdn_attention_reference(
    core_attn_out, z, projected_states_qkvz, projected_states_ba, num_k_heads, num_v_heads,
    head_k_dim, head_v_dim, conv_state, ssm_state, conv_weights, conv_bias, activation, A_log,
    dt_bias, num_prefills, num_decodes, num_spec_decodes, has_initial_state,
    non_spec_query_start_loc, non_spec_token_indx, non_spec_state_indices_tensor,
    spec_query_start_loc, spec_token_indx, spec_state_indices_tensor, num_accepted_tokens,
    num_actual_tokens, tp_size, reorder_input, *, compute_dtype=torch.float64,
) -> None:
    hk, hv = num_k_heads // tp_size, num_v_heads // tp_size
    K, V, n, r = head_k_dim, head_v_dim, num_actual_tokens, hv // hk
    cd = compute_dtype
    mixed_qkv, z_all, b_all, a_all = _split_layout(
        projected_states_qkvz[:n].to(cd), projected_states_ba[:n].to(cd), hk, hv, K, V,
        reorder_input)
    z[:n] = z_all.to(z.dtype)
    weight = conv_weights.reshape(conv_weights.shape[0], -1).to(cd)
    W = weight.shape[1]
    bias = None if conv_bias is None else conv_bias.to(cd)
    A = -torch.exp(A_log.to(cd))
    dt_bias = dt_bias.to(cd)
    scale = K ** -0.5

    def run(rows, conv_prior, S):
        """One sequence (token rows `rows`) from conv history and state; yields per-token
        states, writes outputs, returns the conv input x [L, C]."""
        x = mixed_qkv[rows]
        y = _causal_conv(x, conv_prior, weight, bias, activation)
        q = _l2norm(y[:, :hk * K].reshape(-1, hk, K)).repeat_interleave(r, dim=1) * scale
        k = _l2norm(y[:, hk * K:2 * hk * K].reshape(-1, hk, K)).repeat_interleave(r, dim=1)
        v = y[:, 2 * hk * K:].reshape(-1, hv, V)
        g = A * F.softplus(a_all[rows] + dt_bias, threshold=20.0)
        beta = torch.sigmoid(b_all[rows])
        states = []
        for t in range(len(rows)):
            o, S = _delta_rule(S, q[t], k[t], v[t], g[t], beta[t])
            core_attn_out[rows[t]] = o.to(core_attn_out.dtype)
            states.append(S)
        return x, states

    def rows_of(start_loc, token_index, i):
        rows = torch.arange(int(start_loc[i]), int(start_loc[i + 1]))
        return rows if token_index is None else token_index[rows].long().cpu()

    # ssm_state[s, h, v, k] = S_h[k, v]: the state is stored V-major.
    def store_state(slot, S):
        ssm_state[slot] = S.transpose(-1, -2).to(ssm_state.dtype)

    # Every sequence reads the caches as they were before the batch.
    conv_before = conv_state.to(cd).clone()
    ssm_before = ssm_state.to(cd).clone()

    for i in range(num_decodes + num_prefills):
        rows = rows_of(non_spec_query_start_loc, non_spec_token_indx, i)
        slot = int(non_spec_state_indices_tensor[i])
        has_state = has_initial_state is None or bool(has_initial_state[i])
        prior = conv_before[slot, :W - 1] if has_state else torch.zeros(W - 1, weight.shape[0], dtype=cd)
        S = ssm_before[slot].transpose(-1, -2) if has_state else torch.zeros(hv, K, V, dtype=cd)
        x, states = run(rows, prior, S)
        if states:
            store_state(slot, states[-1])
            conv_state[slot, :W - 1] = torch.cat([prior, x])[-(W - 1):].to(conv_state.dtype)

    for i in range(num_spec_decodes):
        rows = rows_of(spec_query_start_loc, spec_token_indx, i)
        slots = [int(s) for s in spec_state_indices_tensor[i]]
        acc = int(num_accepted_tokens[i])
        buf = conv_before[slots[0]]  # rolling buffer [W-1+num_spec, C]
        prior = buf[acc - 1:acc - 1 + W - 1]
        S = ssm_before[slots[acc - 1]].transpose(-1, -2)
        x, states = run(rows, prior, S)
        for t, S_t in enumerate(states):
            store_state(slots[t], S_t)
        if states:
            keep = buf.shape[0] - len(rows)
            conv_state[slots[0]] = torch.cat([buf[acc:acc + keep], x]).to(conv_state.dtype)
