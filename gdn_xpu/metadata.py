"""GDN attention metadata: vLLM's GDNAttentionMetadata when installed, a compatible dataclass
otherwise, and a builder from plain per-sequence facts."""

import dataclasses
import importlib.util
from typing import Optional, Sequence

import torch


@dataclasses.dataclass
class _GDNAttentionMetadata:
    """The fields of vllm.v1.attention.backends.gdn_attn.GDNAttentionMetadata the op reads."""

    num_prefills: int
    num_prefill_tokens: int
    num_decodes: int
    num_decode_tokens: int
    num_spec_decodes: int
    num_spec_decode_tokens: int
    num_actual_tokens: int
    has_initial_state: Optional[torch.Tensor] = None
    spec_query_start_loc: Optional[torch.Tensor] = None
    non_spec_query_start_loc: Optional[torch.Tensor] = None
    spec_state_indices_tensor: Optional[torch.Tensor] = None
    non_spec_state_indices_tensor: Optional[torch.Tensor] = None
    spec_sequence_masks: Optional[torch.Tensor] = None
    spec_token_indx: Optional[torch.Tensor] = None
    non_spec_token_indx: Optional[torch.Tensor] = None
    num_accepted_tokens: Optional[torch.Tensor] = None


if importlib.util.find_spec("vllm") is not None:
    from vllm.v1.attention.backends.gdn_attn import GDNAttentionMetadata
else:
    GDNAttentionMetadata = _GDNAttentionMetadata


@dataclasses.dataclass
class BatchPlan:
    """Metadata plus the order in which the caller lays out the sequences' tokens."""

    metadata: GDNAttentionMetadata
    order: list[int]  # sequence indices in token order: spec decodes, decodes, prefills


def build_metadata(query_lens: Sequence[int], context_lens: Sequence[int],
                   slots: Sequence[int], *, spec_slots: Optional[Sequence[Sequence[int]]] = None,
                   num_accepted: Optional[Sequence[int]] = None,
                   device: torch.device | str = "cpu") -> BatchPlan:
    """Metadata for one batch, ordering sequences as vLLM's builder sees them.

    Sequence i has query_lens[i] new tokens after context_lens[i] cached ones, in cache slot
    slots[i]. A sequence with spec_slots[i] (num_spec + 1 slots) is a spec decode that
    accepted num_accepted[i] tokens last step. Non-spec sequences of one new token are decodes
    and come before prefills; spec decodes come first, and token index arrays say which rows
    belong to which group when both kinds are in the batch.
    """
    n = len(query_lens)
    is_spec = [spec_slots is not None and spec_slots[i] is not None for i in range(n)]
    spec = [i for i in range(n) if is_spec[i]]
    decodes = [i for i in range(n) if not is_spec[i] and query_lens[i] == 1 and context_lens[i] > 0]
    prefills = [i for i in range(n) if not is_spec[i] and i not in decodes]
    order = spec + decodes + prefills
    non_spec = decodes + prefills

    def start_loc(seqs):
        return torch.tensor([0] + [sum(query_lens[i] for i in seqs[:j + 1]) for j in range(len(seqs))],
                            dtype=torch.int32, device=device)

    def tensor(values, dtype):
        return torch.tensor(values, dtype=dtype, device=device)

    num_spec_tokens = sum(query_lens[i] for i in spec)
    num_tokens = sum(query_lens)
    both = bool(spec) and bool(non_spec)
    metadata = GDNAttentionMetadata(
        num_prefills=len(prefills),
        num_prefill_tokens=sum(query_lens[i] for i in prefills),
        num_decodes=len(decodes),
        num_decode_tokens=len(decodes),
        num_spec_decodes=len(spec),
        num_spec_decode_tokens=num_spec_tokens,
        num_actual_tokens=num_tokens,
        has_initial_state=tensor([context_lens[i] > 0 for i in non_spec], torch.bool)
        if non_spec else None,
        non_spec_query_start_loc=start_loc(non_spec) if non_spec else None,
        non_spec_state_indices_tensor=tensor([slots[i] for i in non_spec], torch.int32)
        if non_spec else None,
        spec_query_start_loc=start_loc(spec) if spec else None,
        spec_state_indices_tensor=tensor([list(spec_slots[i]) for i in spec], torch.int32)
        if spec else None,
        spec_sequence_masks=tensor([is_spec[i] for i in order], torch.bool) if spec else None,
        num_accepted_tokens=tensor([num_accepted[i] for i in spec], torch.int32) if spec else None,
        spec_token_indx=torch.arange(num_spec_tokens, device=device) if both else None,
        non_spec_token_indx=torch.arange(num_spec_tokens, num_tokens, device=device)
        if both else None,
    )
    return BatchPlan(metadata, order)
