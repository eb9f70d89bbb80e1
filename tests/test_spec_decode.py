"""Speculative decoding must equal plain decoding of the accepted tokens: an invariant that holds
whatever any implementation does, so it checks the spec semantics themselves, not one
implementation against another.

A multi-step simulation: sequences are prefilled, then run spec steps whose rows hold the next
true token followed by drafts (rows of every length 1..num_spec+1, one step where every row
has one token), of which a random number are accepted; the next step's num_accepted_tokens is
that count. The same true tokens are decoded one at a time on separate slots. Every accepted
token's output, and the SSM state and conv history a step leaves for the next, must match.
Both conv layouts (vLLM's rolling buffer, the per-slot layout), both weight layouts, GQA and
the activation/state dtypes; the kernels and the reference alike.
"""

import itertools

import pytest
import torch

import gdn_xpu  # noqa: F401
from gdn_xpu.reference import gdn_attention_reference

from batches import GDNConfig, assert_close, make_batch

NUM_SPEC = 3
PREFILL = 5
# Row lengths of each spec step, per sequence: every length 1..NUM_SPEC+1 occurs, and step 1
# has only one-token rows (zero drafts), right after step 0 may accept all of a 4-token row.
ROW_LENGTHS = [(4, 3, 2, 1), (1, 1, 1, 1), (2, 4, 1, 3), (3, 2, 4, 1), (4, 4, 2, 2),
               (1, 3, 3, 4), (2, 1, 4, 3)]
NUM_SEQS = len(ROW_LENGTHS[0])

IMPLEMENTATIONS = {
    "kernel": lambda args: torch.ops.gdn_xpu.gdn_attention(**args),
    "reference": lambda args: gdn_attention_reference(**args),
}


class Simulation:
    """One layer's weights and caches, and the op calls of both ways of decoding."""

    def __init__(self, cfg: GDNConfig, run, seed: int):
        self.cfg, self.run = cfg, run
        # make_batch provides the layer parameters and the caches' shapes and dtypes.
        self.layer = make_batch(cfg, prefill_lens=(1,), seed=seed, padding_rows=0)
        self.gen = torch.Generator().manual_seed(seed)
        qkvz, ba = self.layer["projected_states_qkvz"], self.layer["projected_states_ba"]
        self.qkvz_width, self.ba_width, self.dtype = qkvz.shape[1], ba.shape[1], qkvz.dtype
        self.hv, self.V = self.layer["core_attn_out"].shape[1:]

    def random_tokens(self, n):
        qkvz = torch.randn(n, self.qkvz_width, generator=self.gen).to(self.dtype)
        ba = torch.randn(n, self.ba_width, generator=self.gen).to(self.dtype)
        return qkvz, ba

    def call(self, qkvz, ba, conv_state, ssm_state, **batch):
        """Run the op on these token rows and caches; returns core_attn_out."""
        n = qkvz.shape[0]
        args = {**self.layer, **batch, "projected_states_qkvz": qkvz, "projected_states_ba": ba,
                "conv_state": conv_state, "ssm_state": ssm_state, "num_actual_tokens": n,
                "core_attn_out": torch.zeros(n, self.hv, self.V, dtype=self.dtype),
                "z": torch.zeros(n, self.hv, self.V, dtype=self.dtype)}
        self.run(args)
        return args["core_attn_out"]

    @staticmethod
    def non_spec(lens, slots, has_state):
        loc = [0] + list(itertools.accumulate(lens))
        return dict(num_decodes=0, num_prefills=len(lens), num_spec_decodes=0,
                    non_spec_query_start_loc=torch.tensor(loc, dtype=torch.int32),
                    non_spec_state_indices_tensor=torch.tensor(slots, dtype=torch.int32),
                    has_initial_state=torch.tensor(has_state), non_spec_token_indx=None,
                    spec_query_start_loc=None, spec_state_indices_tensor=None,
                    num_accepted_tokens=None, spec_token_indx=None)

    @staticmethod
    def spec(lens, table, accepted):
        loc = [0] + list(itertools.accumulate(lens))
        return dict(num_decodes=0, num_prefills=0, num_spec_decodes=len(lens),
                    non_spec_query_start_loc=None, non_spec_state_indices_tensor=None,
                    has_initial_state=None, non_spec_token_indx=None,
                    spec_query_start_loc=torch.tensor(loc, dtype=torch.int32),
                    spec_state_indices_tensor=torch.tensor(table, dtype=torch.int32),
                    num_accepted_tokens=torch.tensor(accepted, dtype=torch.int32),
                    spec_token_indx=None)


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("spec_conv_per_slot", [False, True], ids=["rolling", "per_slot"])
@pytest.mark.parametrize("reorder_input", [True, False], ids=["flat", "interleaved"])
@pytest.mark.parametrize("dtype,state_dtype", [
    (torch.float32, torch.float32), (torch.bfloat16, torch.float32),
    (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)],
    ids=["f32", "bf16", "bf16-state", "f16-state"])
def test_spec_decoding_equals_plain_decoding_of_the_accepted_tokens(
        implementation, spec_conv_per_slot, reorder_input, dtype, state_dtype):
    if implementation == "reference" and dtype != torch.float32:
        pytest.skip("the reference's semantics do not depend on the dtype")
    cfg = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=64, head_v_dim=64, dtype=dtype,
                    state_dtype=state_dtype, reorder_input=reorder_input, num_spec=NUM_SPEC,
                    spec_conv_per_slot=spec_conv_per_slot, num_slots=NUM_SEQS * (NUM_SPEC + 1))
    seed = hash((spec_conv_per_slot, reorder_input, str(dtype), str(state_dtype))) % 1000
    sim = Simulation(cfg, IMPLEMENTATIONS[implementation], seed)
    W = cfg.conv_width
    # Spec decoding: sequence i owns slots table[i] (num_spec + 1 of them); plain decoding runs
    # in separate caches, sequence i in slot i.
    table = [[i * (NUM_SPEC + 1) + j for j in range(NUM_SPEC + 1)] for i in range(NUM_SEQS)]
    spec_conv, spec_ssm = sim.layer["conv_state"].clone(), sim.layer["ssm_state"].clone()
    plain_conv, plain_ssm = spec_conv[:NUM_SEQS].clone(), spec_ssm[:NUM_SEQS].clone()

    # Both start from the same prefill without initial state.
    qkvz, ba = sim.random_tokens(NUM_SEQS * PREFILL)
    prefill = dict(lens=[PREFILL] * NUM_SEQS, has_state=[False] * NUM_SEQS)
    sim.call(qkvz, ba, spec_conv, spec_ssm, **Simulation.non_spec(
        slots=[row[0] for row in table], **prefill))
    sim.call(qkvz, ba, plain_conv, plain_ssm, **Simulation.non_spec(
        slots=list(range(NUM_SEQS)), **prefill))

    accepted = [1] * NUM_SEQS  # after a prefill, the state sits in column 0
    for step, lens in enumerate(ROW_LENGTHS):
        # Each row: the next true token, then drafts. The first acc tokens turn out accepted
        # (the true continuation); the rest are rejected drafts (other tokens).
        qkvz, ba = sim.random_tokens(sum(lens))
        out = sim.call(qkvz, ba, spec_conv, spec_ssm,
                       **Simulation.spec(lens, table, accepted))
        accepted = [int(torch.randint(1, L + 1, (), generator=sim.gen)) for L in lens]
        if step == 0:
            accepted[0] = lens[0]  # all of a full row: the next step reads column num_spec

        # Plain decoding of the accepted tokens, one token per call.
        starts = [0] + list(itertools.accumulate(lens))
        for t in range(max(accepted)):
            seqs = [i for i in range(NUM_SEQS) if t < accepted[i]]
            rows = [starts[i] + t for i in seqs]
            plain_out = sim.call(qkvz[rows], ba[rows], plain_conv, plain_ssm,
                                 **Simulation.non_spec([1] * len(seqs), seqs, [True] * len(seqs)))
            assert_close(f"step {step} token {t}: core_attn_out", out[rows], plain_out, dtype)

        # What this step leaves for the next one: the SSM state in column acc-1, and the conv
        # history where the next step reads it.
        for i in range(NUM_SEQS):
            col = accepted[i] - 1
            where = f"step {step} sequence {i} (acc {accepted[i]} of {lens[i]})"
            assert_close(f"{where}: ssm_state", spec_ssm[table[i][col]], plain_ssm[i],
                         state_dtype)
            if spec_conv_per_slot:
                history = spec_conv[table[i][col], :W - 1]
            else:
                history = spec_conv[table[i][0], col:col + W - 1]
            assert torch.equal(history, plain_conv[i, :W - 1]), f"{where}: conv history"
