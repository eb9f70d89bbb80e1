"""Pure-PyTorch reference of torch.ops.gdn_xpu.gdn_attention: the oracle of every test.

Same arguments and in-place effects as the raw op (DESIGN.md section 3), written to be read:
one sequence at a time, one token at a time, all heads of a token at once. The maths runs in
`compute_dtype` (float64 by default, so that the reference's own rounding is negligible next
to the fp32 kernels'); results are cast to the destination tensors' dtypes when stored.

Cache slots of one batch must be distinct (the op's precondition): each sequence reads its
slots before writing them, so the order in which sequences run does not matter.
"""

import torch
import torch.nn.functional as F

_SILU = ("silu", "swish")  # any other activation ("identity", "none", "") means none


def _split_layout(qkvz, ba, hk, hv, K, V, reorder_input):
    """Unpack the projections into the conv input and the gates, whatever the layout.

    Returns mixed_qkv [T, 2*hk*K + hv*V] (always the logical [q_all | k_all | v_all] the conv
    runs over), z [T, hv, V], b [T, hv], a [T, hv]. V-heads come out in order g*r + j.
    """
    T, r = qkvz.shape[0], hv // hk
    if reorder_input:  # Qwen3.5: flat [q | k | v | z] and [b | a]
        conv_dim = 2 * hk * K + hv * V
        mixed_qkv, z = qkvz[:, :conv_dim], qkvz[:, conv_dim:].reshape(T, hv, V)
        return mixed_qkv, z, ba[:, :hv], ba[:, hv:]
    # Qwen3-Next: per k-head group g, [q_g (K) | k_g (K) | v_g (r*V) | z_g (r*V)] and
    # [b_g (r) | a_g (r)]; flattening the group axis puts v-head j of group g at g*r + j.
    q, k, v, z = qkvz.reshape(T, hk, 2 * K + 2 * r * V).split([K, K, r * V, r * V], dim=-1)
    mixed_qkv = torch.cat([q.reshape(T, -1), k.reshape(T, -1), v.reshape(T, -1)], dim=-1)
    b, a = ba.reshape(T, hk, 2 * r).split([r, r], dim=-1)
    return mixed_qkv, z.reshape(T, hv, V), b.reshape(T, hv), a.reshape(T, hv)


def _causal_conv(x, prior, weight, bias, activation):
    """Depthwise causal conv of one sequence: x [L, C] following prior [W-1, C] (the W-1
    inputs before it, oldest first), weight [C, W] -> [L, C].

    A cross-correlation, as torch's conv1d computes it: weight[:, W-1] multiplies the current
    token, weight[:, 0] the input W-1 tokens back.
    """
    L, W = x.shape[0], weight.shape[1]
    x_ext = torch.cat([prior, x], dim=0)
    y = sum(weight[:, j] * x_ext[j:j + L] for j in range(W))
    if bias is not None:
        y = y + bias
    return F.silu(y) if activation in _SILU else y


def _gates(a, b, A_log, dt_bias):
    """a, b [T, hv] -> (g, beta) [T, hv]: the log-decay g = -exp(A_log) * softplus(a + dt_bias)
    (<= 0, so the state only shrinks) and the write strength beta = sigmoid(b) in (0, 1)."""
    # threshold=20: softplus(x) = x above it, as in vLLM's and FLA's gating kernels.
    g = -torch.exp(A_log) * F.softplus(a + dt_bias, beta=1.0, threshold=20.0)
    return g, torch.sigmoid(b)


def _l2norm(x):
    # The epsilon sits inside the square root, as in FLA's l2norm (not max(norm, eps)).
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def _delta_rule_sequence(S, q, k, v, g, beta, keep_all_states=False):
    """The gated delta rule over one sequence, all v-heads at once.

    S [hv, K, V] is the initial state (S[h, k, v] = S_h[k, v]); q, k [L, hv, K] (normalised,
    q already scaled); v [L, hv, V]; g, beta [L, hv]. Returns (o [L, hv, V], states): the
    states after every token if keep_all_states (spec decode stores each one), else a
    one-element list holding the final state (a long prefill would not fit them all).
    """
    S = S.clone()
    o = v.new_empty(v.shape)
    states = []
    for t in range(v.shape[0]):
        S.mul_(torch.exp(g[t])[:, None, None])  # forget: decay the whole state
        predicted = torch.einsum("hk,hkv->hv", k[t], S)  # S^T k: what the state recalls for k
        u = beta[t][:, None] * (v[t] - predicted)  # delta rule: write only the correction
        S.baddbmm_(k[t][:, :, None], u[:, None, :])  # S += k u^T (in place: no temporary)
        o[t] = torch.einsum("hk,hkv->hv", q[t], S)  # the output sees its own token's write
        if keep_all_states:
            states.append(S.clone())
    return o, states if keep_all_states else [S]


def _token_rows(query_start_loc, token_indx, i, device):
    """Rows of the full token array holding sequence i of a group: the group's start locations
    index the group's token index array when there is one, else the token array itself."""
    start, end = int(query_start_loc[i]), int(query_start_loc[i + 1])
    if token_indx is None:
        return torch.arange(start, end, device=device)
    return token_indx[start:end].to(device=device, dtype=torch.long)


def _load_state(ssm_state, slot, dtype):
    # Stored V-major, ssm_state[s, h, v, k] = S_h[k, v]: transpose to [hv, K, V].
    return ssm_state[slot].to(dtype, copy=True).transpose(-1, -2)


def _store_state(ssm_state, slot, S):
    ssm_state[slot] = S.transpose(-1, -2).to(ssm_state.dtype)


@torch.no_grad()
def gdn_attention_reference(
    core_attn_out, z, projected_states_qkvz, projected_states_ba, num_k_heads, num_v_heads,
    head_k_dim, head_v_dim, conv_state, ssm_state, conv_weights, conv_bias, activation, A_log,
    dt_bias, num_prefills, num_decodes, num_spec_decodes, has_initial_state,
    non_spec_query_start_loc, non_spec_token_indx, non_spec_state_indices_tensor,
    spec_query_start_loc, spec_token_indx, spec_state_indices_tensor, num_accepted_tokens,
    num_actual_tokens, tp_size, reorder_input, *, compute_dtype=torch.float64,
) -> None:
    """What torch.ops.gdn_xpu.gdn_attention does, in place on core_attn_out, z, conv_state and
    ssm_state (DESIGN.md section 3). Head counts are global; this rank holds 1/tp_size of them.
    Rows >= num_actual_tokens and cache slots no sequence names are left untouched."""
    hk, hv = num_k_heads // tp_size, num_v_heads // tp_size
    K, V, r, n = head_k_dim, head_v_dim, hv // hk, num_actual_tokens
    cd, device = compute_dtype, projected_states_qkvz.device

    mixed_qkv, z_part, b, a = _split_layout(
        projected_states_qkvz[:n].to(cd), projected_states_ba[:n].to(cd), hk, hv, K, V,
        reorder_input)
    z[:n] = z_part.to(z.dtype)  # every real row, whatever sequence (if any) it belongs to
    g_all, beta_all = _gates(a, b, A_log.to(cd), dt_bias.to(cd))
    weight = conv_weights.reshape(conv_weights.shape[0], -1).to(cd)  # [C, W] or [C, 1, W]
    bias = None if conv_bias is None else conv_bias.to(cd)
    C, W = weight.shape

    def run_sequence(rows, prior, S, keep_all_states):
        """Conv, norms and recurrence of one sequence; writes its outputs and returns its conv
        input x [L, C] (the next conv history) and its states."""
        L = rows.shape[0]
        x = mixed_qkv[rows]
        q, k, v = _causal_conv(x, prior, weight, bias, activation).split(
            [hk * K, hk * K, hv * V], dim=-1)
        # v-head h reads q/k head h // r (GQA): repeat each q/k head r times.
        q = _l2norm(q.reshape(L, hk, K)).repeat_interleave(r, dim=1) * K ** -0.5
        k = _l2norm(k.reshape(L, hk, K)).repeat_interleave(r, dim=1)
        o, states = _delta_rule_sequence(S, q, k, v.reshape(L, hv, V), g_all[rows],
                                         beta_all[rows], keep_all_states)
        core_attn_out[rows] = o.to(core_attn_out.dtype)
        return x, states

    # Non-spec sequences (decodes, then prefills): one cache slot each.
    for i in range(num_decodes + num_prefills):
        rows = _token_rows(non_spec_query_start_loc, non_spec_token_indx, i, device)
        slot = int(non_spec_state_indices_tensor[i])
        if rows.numel() == 0 or slot < 0:  # empty, or padded (vLLM's PAD_SLOT_ID = -1)
            continue
        if has_initial_state is None or bool(has_initial_state[i]):
            prior, S = conv_state[slot, :W - 1].to(cd, copy=True), _load_state(ssm_state, slot, cd)
        else:  # a new sequence: no conv history, zero state (whatever the slot holds)
            prior = torch.zeros(W - 1, C, dtype=cd, device=device)
            S = torch.zeros(hv, K, V, dtype=cd, device=device)
        x, states = run_sequence(rows, prior, S, keep_all_states=False)
        _store_state(ssm_state, slot, states[-1])
        # The last W-1 conv inputs (pre-activation), which may reach back into the prior when
        # the sequence is shorter than W-1. Rows past W-1 (spec history) are not touched.
        conv_state[slot, :W - 1] = torch.cat([prior, x])[-(W - 1):].to(conv_state.dtype)

    # Spec-decode sequences: slot spec_state_indices[i, t] receives the SSM state after token t,
    # and the step starts from the state of the last accepted token, column acc-1 (acc = the
    # previous step's accepted count, whatever this row's length L). The conv history has one of
    # two layouts, told apart by the conv state's rows (README, "Speculative decoding"):
    # - vLLM's rolling buffer, W-1+num_spec rows in slot column 0: the prior is rows
    #   [acc-1, acc+W-2); afterwards rows [0, W-2+L) hold (prior ++ x)[1:] and later rows keep
    #   theirs (vLLM's causal_conv1d_update with IS_SPEC_DECODING, and its CPU path since 0.33);
    # - per slot, W-1 rows (vllm-xpu-kernels' causal_conv1d_spec_kernel): the prior is slot
    #   column max(acc-1, 0)'s (so acc = 0 is legal), and column t receives the W-1 inputs up to
    #   token t, as the SSM state does (upstream's test reference checks column num_spec only).
    rolling = num_spec_decodes > 0 and conv_state.shape[1] > W - 1
    for i in range(num_spec_decodes):
        rows = _token_rows(spec_query_start_loc, spec_token_indx, i, device)
        slots = [int(s) for s in spec_state_indices_tensor[i]]
        acc = int(num_accepted_tokens[i])
        first = max(acc - 1, 0)
        if rows.numel() == 0 or slots[0] < 0 or slots[first] < 0:  # empty, or padded
            continue
        if rolling:
            prior = conv_state[slots[0], first:first + W - 1].to(cd, copy=True)
        else:
            prior = conv_state[slots[first], :W - 1].to(cd, copy=True)
        x, states = run_sequence(rows, prior, _load_state(ssm_state, slots[first], cd),
                                 keep_all_states=True)
        for t, S_t in enumerate(states):
            _store_state(ssm_state, slots[t], S_t)
        window = torch.cat([prior, x]).to(conv_state.dtype)
        if rolling:
            conv_state[slots[0], :window.shape[0] - 1] = window[1:]
        else:
            for t in range(rows.numel()):
                conv_state[slots[t], :W - 1] = window[t + 1:t + W]
