"""The persistent kernel cache: a second process loads the compiled program instead of compiling
it; a corrupt, stale, unwritable or switched-off cache falls back to compiling; concurrent
processes leave one whole entry; the chunked prefill kernel is its own build and entry, made only
when a batch chunks. Every run checks its results against the reference."""

import json
import os
import pathlib
import subprocess
import sys

TESTS = pathlib.Path(__file__).parent

# One small mixed batch in a fresh process, checked against the reference; prints where the
# kernels came from and the time of the first call.
RUN = f"""
import json, sys, time, torch, gdn_xpu
sys.path.insert(0, {str(TESTS)!r})
from batches import GDNConfig, assert_close, clone_args, make_batch
from gdn_xpu.reference import gdn_attention_reference
extension = gdn_xpu._runtime.extension()
if len(sys.argv) > 1:  # a changed kernel source
    extension.set_kernel_source(open(sys.argv[1]).read())
cfg = GDNConfig(num_k_heads=1, num_v_heads=2, head_k_dim=16, head_v_dim=16, num_slots=4)
args = make_batch(cfg, decode_lens=(1,), prefill_lens=(5,), seed=3)
ref = clone_args(args)
start = time.perf_counter()
torch.ops.gdn_xpu.gdn_attention(**args)
first_call = time.perf_counter() - start
gdn_attention_reference(**ref)
for name in ("core_attn_out", "ssm_state", "conv_state"):
    assert_close(name, args[name], ref[name], cfg.dtype)
print(json.dumps(dict(builds=extension.jit_build_count(), loads=extension.cache_load_count(),
                      first_call=first_call)))
"""


def start(cache_dir, *argv, chunked_from=None):
    env = {**os.environ, "GDN_XPU_CACHE_DIR": str(cache_dir)}
    if chunked_from is not None:
        env["GDN_XPU_CHUNKED_FROM"] = str(chunked_from)
    return subprocess.Popen([sys.executable, "-c", RUN, *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process) -> dict:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, out + err
    return json.loads(out.strip().splitlines()[-1])


def run(cache_dir, *argv, chunked_from=None) -> dict:
    return finish(start(cache_dir, *argv, chunked_from=chunked_from))


def entries(cache_dir):
    return sorted(p.name for p in pathlib.Path(cache_dir).iterdir())


def test_second_process_loads_the_program_and_a_corrupt_entry_is_rebuilt(tmp_path):
    cold = run(tmp_path)
    assert (cold["builds"], cold["loads"]) == (1, 0)
    [entry] = entries(tmp_path)
    assert entry.endswith(".bin")
    warm = run(tmp_path)
    assert (warm["builds"], warm["loads"]) == (0, 1)
    assert warm["first_call"] < cold["first_call"]

    path = tmp_path / entry
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte: the checksum no longer matches
    path.write_bytes(bytes(data))
    assert (run(tmp_path)["builds"], entries(tmp_path)) == (1, [entry])
    path.write_bytes(path.read_bytes()[:20])  # a truncated entry
    assert run(tmp_path)["builds"] == 1
    assert run(tmp_path)["loads"] == 1  # the rebuilt entry is whole again


def test_chunked_prefill_kernel_is_built_and_cached_apart_when_a_batch_chunks(tmp_path):
    # The CPU device never chunks by default: the step kernels only. Chunking from 4 tokens (the
    # batch has a 5-token prefill) adds the chunked prefill kernel, its own build and entry.
    assert run(tmp_path)["builds"] == 1
    chunked = run(tmp_path, chunked_from=4)
    assert (chunked["builds"], chunked["loads"], len(entries(tmp_path))) == (1, 1, 2)
    assert run(tmp_path, chunked_from=4)["loads"] == 2


def test_changed_source_is_a_new_entry_not_a_stale_hit(tmp_path):
    run(tmp_path)
    changed = tmp_path.parent / "changed.sycl"
    changed.write_text((TESTS.parent / "csrc" / "kernels" / "gdn_kernels.sycl").read_text()
                       + "\n// changed\n")
    assert run(tmp_path, str(changed))["builds"] == 1
    assert len(entries(tmp_path)) == 2


def test_unwritable_or_switched_off_cache_still_computes(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert run(blocker / "cache")["builds"] == 1  # the directory cannot be created
    assert run("")["builds"] == 1  # GDN_XPU_CACHE_DIR="" turns the cache off
    assert entries(tmp_path) == ["a_file"]


def test_concurrent_processes_leave_one_whole_entry(tmp_path):
    results = [finish(p) for p in [start(tmp_path), start(tmp_path)]]
    assert all(r["builds"] + r["loads"] == 1 for r in results)
    [entry] = entries(tmp_path)  # no temporary files left behind
    assert run(tmp_path)["loads"] == 1
