"""The raw op's memory does not grow across calls: resident memory stays flat over many decode
steps (after a warm-up that compiles or loads the kernels, sizes the thread's conv workspace and
settles the allocators). The served engine's memory over rounds of load (test_vllm_serve.py) is
vLLM's; this is the op's share."""

import pytest
import torch

import gdn_xpu  # noqa: F401

from batches import GDNConfig, make_batch


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="Linux only")
def test_rss_flat_over_repeated_calls():
    cfg = GDNConfig(num_k_heads=2, num_v_heads=4, head_k_dim=128, head_v_dim=128, num_slots=40,
                    dtype=torch.bfloat16, num_spec=2)
    batches = [make_batch(cfg, decode_lens=(1,) * 8, seed=1),
               make_batch(cfg, prefill_lens=(37, 5), decode_lens=(1, 1), seed=2),
               make_batch(cfg, spec_lens=(3, 1, 2), decode_lens=(1,), seed=3)]
    for _ in range(30):  # warm-up
        for args in batches:
            torch.ops.gdn_xpu.gdn_attention(**args)
    before = rss_bytes()
    for _ in range(300):
        for args in batches:
            torch.ops.gdn_xpu.gdn_attention(**args)
    growth = rss_bytes() - before
    print(f"RSS growth over 900 calls: {growth / 2**20:.2f} MiB")
    assert growth < 4 * 2**20, growth
