"""A tiny Qwen3.5-style hybrid model: 3 GDN layers to 1 full-attention layer, small enough
for CI, with random init from a seed, an HF Qwen3.5 weight loader and greedy generation.

The GDN layers read their batch from the forward context (one opaque layer op each); the
full-attention layers are plain tensor code over their own KV cache, so torch.compile sees
the whole model but the GDN ops.
"""

import dataclasses
from typing import Callable, Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from gdn_xpu.forward_context import set_forward_context
from gdn_xpu.layer import GatedDeltaNet
from gdn_xpu.metadata import build_metadata


@dataclasses.dataclass
class TinyQwen35Config:
    """Field names as in HF's Qwen3.5 text config."""

    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    linear_num_key_heads: int = 2
    linear_num_value_heads: int = 4
    linear_key_head_dim: int = 64
    linear_value_head_dim: int = 64
    linear_conv_kernel_dim: int = 4
    full_attention_interval: int = 4
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 1024

    def is_full_attention(self, layer: int) -> bool:
        return (layer + 1) % self.full_attention_interval == 0


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def rotate(x, positions, theta):
    """Rotary position embedding (halves layout) of x [n, heads, d] at positions [n]."""
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = positions.float()[:, None, None] * inv_freq
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class FullAttention(nn.Module):
    """Causal GQA attention with q/k norm, over a per-slot KV cache [slots, max_len, kv, d]."""

    def __init__(self, cfg: TinyQwen35Config):
        super().__init__()
        self.cfg = cfg
        h, kv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, h * d, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, kv * d, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, kv * d, bias=False)
        self.o_proj = nn.Linear(h * d, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.k_cache: Optional[torch.Tensor] = None
        self.v_cache: Optional[torch.Tensor] = None

    def allocate_cache(self, num_slots: int, max_len: int) -> None:
        cfg, w = self.cfg, self.k_proj.weight
        shape = (num_slots, max_len, cfg.num_key_value_heads, cfg.head_dim)
        self.k_cache = torch.zeros(shape, dtype=w.dtype, device=w.device)
        self.v_cache = torch.zeros(shape, dtype=w.dtype, device=w.device)

    def forward(self, x, positions, token_slots):
        cfg = self.cfg
        n = x.shape[0]
        q = self.q_norm(self.q_proj(x).view(n, cfg.num_attention_heads, cfg.head_dim))
        k = self.k_norm(self.k_proj(x).view(n, cfg.num_key_value_heads, cfg.head_dim))
        v = self.v_proj(x).view(n, cfg.num_key_value_heads, cfg.head_dim)
        q, k = rotate(q, positions, cfg.rope_theta), rotate(k, positions, cfg.rope_theta)
        self.k_cache.index_put_((token_slots, positions), k)
        self.v_cache.index_put_((token_slots, positions), v)
        # Each token attends to its own sequence's cache up to its position.
        keys, values = self.k_cache[token_slots], self.v_cache[token_slots]  # [n, L, kv, d]
        visible = torch.arange(keys.shape[1], device=x.device)[None, :] <= positions[:, None]
        out = F.scaled_dot_product_attention(
            q.unsqueeze(2), keys.transpose(1, 2), values.transpose(1, 2),
            attn_mask=visible[:, None, None, :], enable_gqa=True)
        return self.o_proj(out.reshape(n, -1))


class MLP(nn.Module):
    def __init__(self, cfg: TinyQwen35Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TinyQwen35Config, index: int, layout: str):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)
        if cfg.is_full_attention(index):
            self.self_attn = FullAttention(cfg)
        else:
            self.linear_attn = GatedDeltaNet(
                cfg.hidden_size, cfg.linear_num_key_heads, cfg.linear_num_value_heads,
                cfg.linear_key_head_dim, cfg.linear_value_head_dim,
                conv_kernel_size=cfg.linear_conv_kernel_dim, layout=layout,
                prefix=f"model.layers.{index}.linear_attn", rms_norm_eps=cfg.rms_norm_eps)

    def forward(self, x, positions, token_slots):
        h = self.input_layernorm(x)
        if hasattr(self, "self_attn"):
            h = self.self_attn(h, positions, token_slots)
        else:
            h = self.linear_attn(h)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x))


class TinyQwen35(nn.Module):
    """Token ids [n] (the batch's tokens, sequence after sequence) -> logits [n, vocab]."""

    def __init__(self, cfg: TinyQwen35Config, *, layout: str = "flat", seed: int = 0):
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
            self.layers = nn.ModuleList(DecoderLayer(cfg, i, layout)
                                        for i in range(cfg.num_hidden_layers))
            self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
            for layer in self.gdn_layers():  # realistic gates and a conv that mixes tokens
                nn.init.normal_(layer.conv1d.weight, std=0.5)

    def gdn_layers(self) -> list[GatedDeltaNet]:
        return [l.linear_attn for l in self.layers if hasattr(l, "linear_attn")]

    def allocate_caches(self, num_slots: int, max_len: int,
                        state_dtype: torch.dtype = torch.float32) -> None:
        for layer in self.layers:
            if hasattr(layer, "self_attn"):
                layer.self_attn.allocate_cache(num_slots, max_len)
            else:
                layer.linear_attn.allocate_cache(num_slots, state_dtype=state_dtype)

    def use_reference(self, enabled: bool) -> None:
        """Route the GDN layers through the float64 reference instead of the kernel."""
        for layer in self.gdn_layers():
            layer.forward = layer.forward_native if enabled else layer.forward_xpu

    def forward(self, input_ids, positions, token_slots):
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, positions, token_slots)
        return self.lm_head(self.norm(x))


def load_hf_weights(model: TinyQwen35, state_dict: dict[str, torch.Tensor]) -> None:
    """Load HF Qwen3.5 (or Qwen3-Next) weight names: the separate in_proj_qkv / in_proj_z and
    in_proj_b / in_proj_a of a GDN layer are merged into in_proj_qkvz and in_proj_ba."""
    merged: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state_dict.items():
        name = name.replace("model.language_model.", "model.")
        if name.startswith("model."):
            name = name[len("model."):]
        stem, _, leaf = name.rpartition(".")
        base = stem.rpartition(".")[0]
        piece = stem.rpartition(".")[2]
        if piece in ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a"):
            parts.setdefault(base, {})[piece] = tensor
        else:
            merged[name] = tensor
    for base, p in parts.items():
        merged[f"{base}.in_proj_qkvz.weight"] = torch.cat([p["in_proj_qkv"], p["in_proj_z"]])
        merged[f"{base}.in_proj_ba.weight"] = torch.cat([p["in_proj_b"], p["in_proj_a"]])
    missing, unexpected = model.load_state_dict(merged, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights do not match the model: missing {missing}, "
                         f"unexpected {unexpected}")


@dataclasses.dataclass
class Batch:
    """One step's model inputs, GDN metadata, and where each sequence's last token is."""

    input_ids: torch.Tensor
    positions: torch.Tensor
    token_slots: torch.Tensor
    metadata: object
    last_rows: list[int]  # in the caller's sequence order

    @property
    def inputs(self):
        return self.input_ids, self.positions, self.token_slots

    def forward_context(self, model: "TinyQwen35"):
        layers = {l.prefix: l for l in model.gdn_layers()}
        return set_forward_context({p: self.metadata for p in layers}, layers)


def make_batch(tokens: Sequence[Sequence[int]], context_lens: Sequence[int], device) -> Batch:
    """Sequence i: new tokens[i] after context_lens[i] cached tokens, in cache slot i."""
    plan = build_metadata([len(t) for t in tokens], context_lens, list(range(len(tokens))),
                          device=device)
    ids, positions, slots, last = [], [], [], {}
    for i in plan.order:
        ids += tokens[i]
        positions += range(context_lens[i], context_lens[i] + len(tokens[i]))
        slots += [i] * len(tokens[i])
        last[i] = len(ids) - 1
    as_tensor = lambda values: torch.tensor(values, device=device)  # noqa: E731
    return Batch(as_tensor(ids), as_tensor(positions), as_tensor(slots), plan.metadata,
                 [last[i] for i in range(len(tokens))])


def forward_batch(model: TinyQwen35, forward: Callable, tokens: Sequence[Sequence[int]],
                  context_lens: Sequence[int], device) -> torch.Tensor:
    """Run one step and return the logits of each sequence's last token."""
    batch = make_batch(tokens, context_lens, device)
    with batch.forward_context(model):
        logits = forward(*batch.inputs)
    return logits[batch.last_rows]


@torch.no_grad()
def generate(model: TinyQwen35, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             forward: Optional[Callable] = None, on_step: Optional[Callable[[int], None]] = None,
             ) -> list[list[int]]:
    """Greedy generation: one prefill of all prompts, then one decode step per new token."""
    forward = model if forward is None else forward
    device = model.lm_head.weight.device
    model.allocate_caches(len(prompts), max(map(len, prompts)) + max_new_tokens)
    context = [0] * len(prompts)
    step_tokens = [list(p) for p in prompts]
    generated: list[list[int]] = [[] for _ in prompts]
    for step in range(max_new_tokens):
        logits = forward_batch(model, forward, step_tokens, context, device)
        next_tokens = logits.argmax(-1).tolist()
        for i, t in enumerate(next_tokens):
            context[i] += len(step_tokens[i])
            generated[i].append(t)
        step_tokens = [[t] for t in next_tokens]
        if on_step:
            on_step(step)
    return generated
