"""The Intel GPU ISA of gdn_xpu's run-time-compiled kernels, without an Intel GPU.

1. Capture. A subprocess runs the raw op on small CPU tensors for every configuration, so the
   run-time compile builds each kernel set (step: gdn_prepare, gdn_recurrent,
   gdn_conv_state_update; chunked_prefill), from the working tree's kernel source,
   with the persistent kernel cache off and the launcher's GPU build variant
   (GDN_XPU_BUILD_FOR=gpu). An LD_PRELOAD interposer (spirv_capture.c, built with gcc) saves
   each SPIR-V module the runtime hands the OpenCL CPU device (clCreateProgramWithIL), the
   backend options it builds it with, and the frontend options it asks the backend to
   translate. It also reports the target GPU's shared local memory as the device's, because the
   launcher picks the chunk of gdn_chunked_prefill from it: so each target gets its own
   capture.
2. Build options: the ones the SYCL runtime would pass on a Level Zero GPU (backend_options).
3. Compile each module with Debian's ocloc (IGC 1.0.12504) for each target, zebin output, with
   IGC's shader dumps on; parse the dumps (.asm per kernel and attempt) and the zebin's .ze_info.

    python tests/gpu_isa.py            prints the table (needs make ocloc and gdn_xpu installed)
"""

import dataclasses
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# The working tree's kernel source (GDN_XPU_ISA_SOURCE: another file, e.g. a variant to try);
# the installed host extension must be the one built from the same tree (make setup).
KERNEL_SOURCE = Path(os.environ.get("GDN_XPU_ISA_SOURCE",
                                    REPO / "csrc" / "kernels" / "gdn_kernels.sycl"))
OCLOC_ROOT = REPO / ".tools" / "ocloc" / "root"  # make ocloc unpacks Debian's packages here
RESULTS = REPO / "benchmarks" / "results"

# Target -> shared local memory per work-group, as the GPU driver reports it
# (CL_DEVICE_LOCAL_MEM_SIZE / ze maxSharedLocalMemory): 128 KiB on Xe-HPC, 64 KiB on Xe-HPG.
TARGETS = {"pvc": 128 * 1024, "acm-g10": 64 * 1024}
DTYPES = ("bf16", "f16", "f32")
# (activation dtype, state dtype, K = V): every dtype pair at 128, bf16/f32 at 64 and 256.
CONFIGS = [(act, state, 128) for act in DTYPES for state in ("f32", "bf16", "f16")] + [
    ("bf16", "f32", 64), ("bf16", "f32", 256)]
CHUNKED_FROM = 64  # GDN_XPU_CHUNKED_FROM in the capture: a prefill this long takes the chunked kernel
STATE_BYTES = {"f32": 4, "bf16": 2, "f16": 2}

# The backend options the SYCL runtime would give Level Zero, from what it gave OpenCL.
#
# sycl/source/detail/program_manager/program_manager.cpp (intel/llvm), appendCompileOptionsFromImage
# and appendCompileOptionsForGRFSizeProperties: the build options are the image's compile
# options; an image property sycl-grf-size (syclexp::grf_size<N>; the older
# sycl-register-alloc-mode likewise) adds -ze-opt-large-register-file for 256 and
# -ze-intel-enable-auto-large-GRF-mode for 0 ("auto"), for every backend ("This option works
# for both LO AND OCL backends"); 128 adds nothing. Then the image's optLevel property, as the
# frontend option -O<n>, is translated by the backend (urPlatformGetBackendOption).
# Verified on the pinned runtime (2026.1.2): libsycl.so.9 holds exactly those strings; our
# images carry optLevel 2 (the runtime asks for "-O2"), and the OpenCL adapter gives "" for it,
# so the OpenCL build options were empty; a probe kernel with grf_size<256> built through the
# kernel compiler got "-ze-opt-large-register-file" in its OpenCL build options (which the CPU
# compiler then rejects: spirv_capture.c drops -ze-* options before the CPU build).
#
# unified-runtime's Level Zero adapter, urPlatformGetBackendOption
# (unified-runtime/source/adapters/level_zero/platform.cpp; the strings are in the pinned
# libur_adapter_level_zero.so): -O0 -> -ze-opt-disable; -O1/-O2/-O3 -> -ze-opt-level=2;
# -ftarget-compile-fast -> -igc_opts 'PartitionUnit=1,SubroutineThreshold=50000';
# -foffload-fp32-prec-div/-sqrt -> -ze-fp32-correctly-rounded-divide-sqrt. The OpenCL adapter's
# translations of the same (dropped here before the Level Zero ones are added): -O0 ->
# -cl-opt-disable, -O1..-O3 -> nothing, -foffload-fp32-prec-* ->
# -cl-fp32-correctly-rounded-divide-sqrt, -ftarget-compile-fast -> erased off Intel GPUs.
LEVEL_ZERO_OPTION = {
    "-O0": "-ze-opt-disable", "-O1": "-ze-opt-level=2", "-O2": "-ze-opt-level=2",
    "-O3": "-ze-opt-level=2",
    "-ftarget-compile-fast": "-igc_opts 'PartitionUnit=1,SubroutineThreshold=50000'",
    "-foffload-fp32-prec-div": "-ze-fp32-correctly-rounded-divide-sqrt",
    "-foffload-fp32-prec-sqrt": "-ze-fp32-correctly-rounded-divide-sqrt",
}
OPENCL_TRANSLATIONS = {"-cl-opt-disable", "-cl-fp32-correctly-rounded-divide-sqrt"}


def backend_options(frontend: list, opencl_build_options: str) -> str:
    """The Level Zero build options of one image: the options the runtime gave OpenCL, less
    OpenCL's translations of frontend options, plus Level Zero's translations of them."""
    unknown = [f for f in frontend if f not in LEVEL_ZERO_OPTION]
    if unknown:
        raise ValueError(f"no Level Zero translation known for frontend options {unknown}: "
                         "read urPlatformGetBackendOption and extend LEVEL_ZERO_OPTION")
    options = [o for o in opencl_build_options.split() if o not in OPENCL_TRANSLATIONS]
    for f in frontend:
        if LEVEL_ZERO_OPTION[f] not in options:
            options.append(LEVEL_ZERO_OPTION[f])
    return " ".join(options)


# ---- capture --------------------------------------------------------------------------------

@dataclasses.dataclass
class Image:
    """One SPIR-V module the run-time compile built."""
    spv: Path
    config: str        # e.g. bf16_f32_k128_v128_w4
    kernel_set: str    # step | chunked_prefill
    options: str       # Level Zero build options
    # kernel -> state rows per work-group in the capture's launch (V x heads x sequences /
    # work-groups), so gdn_recurrent's rows per thread follow whatever split the launcher picks
    rows_per_work_group: dict = dataclasses.field(default_factory=dict)


def config_name(act: str, state: str, dim: int) -> str:
    return f"{act}_{state}_k{dim}_v{dim}_w4"


def _build_interposer(directory: Path) -> Path:
    library = directory / "spirv_capture.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(library),
                    str(TESTS / "spirv_capture.c"), "-ldl", "-lpthread"], check=True)
    return library


def capture(target: str, out_dir: Path) -> list:
    """Every kernel set's SPIR-V for every configuration, as built for `target`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, LD_PRELOAD=str(_build_interposer(out_dir)),
               GDN_CAPTURE_DIR=str(out_dir), GDN_CAPTURE_LOCAL_MEM=str(TARGETS[target]),
               GDN_CAPTURE_NO_RUN="1", GDN_XPU_CACHE_DIR="", GDN_XPU_BUILD_FOR="gpu",
               GDN_XPU_CHUNKED_FROM=str(CHUNKED_FROM))
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--capture-into",
                           str(out_dir)], cwd=TESTS, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"SPIR-V capture for {target} failed:\n{done.stdout}\n{done.stderr}")
    # events.log: frontend options belong to the next module; build options to their program.
    pending, modules, program_of, launches = [], {}, {}, {}
    for line in (out_dir / "events.log").read_text().splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "frontend":
            pending.append(rest.strip())
        elif kind == "il":
            name, program = rest.split()
            modules[name] = dict(frontend=pending, build="")
            program_of[program] = name
            pending = []
        elif kind == "build":
            program, _, options = rest.partition(" ")
            modules[program_of[program]]["build"] = options.strip()
        elif kind == "launch":
            kernel, sizes = rest.split(" ", 1)
            global_size, local_size = (s.split() for s in sizes.split("/"))
            groups = _product(global_size) // max(1, _product(local_size))
            launches[kernel.removeprefix("__sycl_kernel_")] = groups
    images = []
    for entry in json.loads((out_dir / "manifest.json").read_text()):
        m = modules[entry["spv"]]
        v = int(re.search(r"_v(\d+)_", entry["config"]).group(1))
        rows = {name.removesuffix("_" + entry["config"]): v * entry["rows_in_batch"] / groups
                for name, groups in launches.items() if name.endswith("_" + entry["config"])}
        images.append(Image(out_dir / entry["spv"], entry["config"], entry["kernel_set"],
                            backend_options(m["frontend"], m["build"]), rows))
    return images


def _product(sizes) -> int:
    n = 1
    for s in sizes:
        n *= int(s)
    return n


def _capture_main(out_dir: Path) -> None:
    """In the capture subprocess: build every kernel set of every configuration, recording
    which modules each build made."""
    import torch
    import gdn_xpu  # noqa: F401  (registers the op)
    from gdn_xpu import _runtime
    from batches import GDNConfig, make_batch

    _runtime.extension().set_kernel_source(KERNEL_SOURCE.read_text())
    torch_dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
    manifest = []
    for act, state, dim in CONFIGS:
        cfg = GDNConfig(1, 1, dim, dim, dtype=torch_dtype[act], state_dtype=torch_dtype[state],
                        num_slots=2)
        print("capturing", config_name(act, state, dim), file=sys.stderr, flush=True)
        before = set(out_dir.glob("*.spv"))
        # A decode and a prefill long enough for the chunked kernel: both kernel sets.
        torch.ops.gdn_xpu.gdn_attention(
            **make_batch(cfg, decode_lens=(1,), prefill_lens=(CHUNKED_FROM,)))
        new = sorted(set(out_dir.glob("*.spv")) - before)
        sets = {"chunked_prefill" if b"gdn_chunked_prefill_" in p.read_bytes() else "step"
                for p in new}
        if sets != {"step", "chunked_prefill"}:
            raise RuntimeError(f"{config_name(act, state, dim)}: built {sets}, not both sets")
        # rows_in_batch: (sequences x v-heads) of the batch, each holding V state rows
        manifest += [dict(spv=p.name, config=config_name(act, state, dim),
                          kernel_set="chunked_prefill" if b"gdn_chunked_prefill_" in p.read_bytes()
                          else "step", rows_in_batch=2 * cfg.num_v_heads) for p in new]
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))


# ---- ocloc and IGC's dumps ------------------------------------------------------------------

def ocloc_available() -> bool:
    return (OCLOC_ROOT / "usr" / "bin" / "ocloc").is_file()


def _ocloc_env(dump_dir: Path) -> dict:
    libs = [str(p) for p in (OCLOC_ROOT / "usr" / "lib").glob("*-linux-gnu")]
    libs += [str(p / "intel-opencl") for p in (OCLOC_ROOT / "usr" / "lib").glob("*-linux-gnu")]
    return dict(os.environ, LD_LIBRARY_PATH=":".join(libs + [os.environ.get("LD_LIBRARY_PATH", "")]),
                IGC_ShaderDumpEnable="1", IGC_DumpToCustomDir=str(dump_dir))


@dataclasses.dataclass
class Attempt:
    """One IGC compile of a kernel: IGC recompiles a kernel that spilled with other settings
    (the retry, dump files named ..._1_simd...); the last attempt is what the binary holds."""
    retry: int
    simd: int
    grf: int
    spill: int          # bytes (//.spill size; absent: 0)
    instructions: int   # //.instCount
    asm: str


@dataclasses.dataclass
class KernelISA:
    kernel: str         # gdn_recurrent, gdn_chunked_prefill, ...
    config: str
    kernel_set: str
    target: str
    options: str
    attempts: list
    slm: int            # bytes, from the zebin's .ze_info
    simd: int
    grf: int
    work_group: list
    decode_loop: dict = None  # gdn_recurrent: token step, tile and kernel instructions per row

    @property
    def spill(self) -> int:
        """What the check holds against the kernel: the prefill kernel's largest spill of any
        attempt (issue 16: prefill must not depend on IGC's retry), the other kernels' spill in
        the binary IGC keeps (its last attempt; the table shows the first one too)."""
        if self.kernel == "gdn_chunked_prefill":
            return max(a.spill for a in self.attempts)
        return self.attempts[-1].spill

    def __repr__(self) -> str:  # short in pytest's failure reports
        return f"KernelISA({self.kernel} {self.config} {self.target}, spill {self.spill})"

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["spill"] = self.spill
        return d


def _ze_info(zebin: Path) -> str:
    """The .ze_info section (YAML) of a zebin ELF."""
    data = zebin.read_bytes()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_offset = sections[shstrndx][4]
    for name, _type, _flags, _addr, offset, size in sections:
        end = data.index(b"\0", names_offset + name)
        if data[names_offset + name:end] == b".ze_info":
            return data[offset:offset + size].decode()
    raise ValueError(f"{zebin}: no .ze_info section")


def _kernels_of_ze_info(text: str) -> dict:
    """kernel name -> {slm_size, simd_size, grf_count, required_work_group_size}."""
    kernels, current, in_kernels = {}, None, False
    for line in text.splitlines():
        if line and not line[0].isspace():
            in_kernels = line.startswith("kernels:")
            continue
        if not in_kernels:
            continue
        m = re.match(r"  - name:\s+(\S+)", line)
        if m:
            current = kernels.setdefault(m.group(1), {"slm_size": 0})
            continue
        m = re.match(r"\s+(slm_size|simd_size|grf_count):\s+(\d+)", line)
        if m and current is not None:
            current[m.group(1)] = int(m.group(2))
        m = re.match(r"\s+required_work_group_size:\s+\[([\d, ]+)\]", line)
        if m and current is not None:
            current["required_work_group_size"] = [int(x) for x in m.group(1).split(",")]
    return kernels


ASM_NAME = re.compile(r"^OCL_asm[0-9a-f]+(?:_(\d+))?_simd(\d+)_entry_\d+\.asm$")


def _asm_lines(path: Path) -> list:
    return path.read_text(errors="replace").splitlines()


def _header(lines: list, key: str):
    for line in lines:
        if line.startswith(key):
            return line[len(key):].strip()
    return None


def _instruction_lines(lines: list):
    """(line number, block index) of each instruction after the first block label."""
    block = None
    for n, line in enumerate(lines):
        m = re.match(r"// B(\d+):", line)
        if m:
            block = int(m.group(1))
            continue
        s = line.strip()
        if block is None or not s or s.startswith("//") or re.fullmatch(r"[\w.$]+:", s):
            continue
        yield n, block


FLOAT_OP = re.compile(r"^\s*(?:\([^)]*\)\s*)*(?:mad|mul|add)\b.*:f\b")


def decode_loops(lines: list) -> tuple:
    """Instructions of gdn_recurrent's token step and of its tile, as IGC laid them out: the
    token step is the innermost loop doing the most float arithmetic (mad/mul/add on :f; the
    kernel's `for (tt < n) token_step(tt)`), the tile the outermost loop around it (the tile's
    conv, gates, q/k norms and the token loop). A loop is the blocks from its header to the
    block branching back to it (IGC lays a loop's blocks out contiguously)."""
    succs, counts, float_ops = {}, {}, {}
    for line in lines:
        m = re.match(r"// B(\d+):.*Succs:\{([^}]*)\}", line)
        if m:
            succs[int(m.group(1))] = [int(s[1:]) for s in re.findall(r"B\d+", m.group(2))]
    for n, block in _instruction_lines(lines):
        counts[block] = counts.get(block, 0) + 1
        if FLOAT_OP.match(lines[n]):
            float_ops[block] = float_ops.get(block, 0) + 1
    loops = sorted({(s, b) for b, ss in succs.items() for s in ss if s <= b})

    def inside(inner, outer):
        return inner != outer and outer[0] <= inner[0] and inner[1] <= outer[1]

    def total(loop, per_block):
        return sum(per_block.get(b, 0) for b in range(loop[0], loop[1] + 1))

    innermost = [loop for loop in loops if not any(inside(other, loop) for other in loops)]
    step = max(innermost, key=lambda loop: total(loop, float_ops))
    tile = min((loop for loop in loops if inside(step, loop)), key=lambda loop: loop[0],
               default=step)
    return total(step, counts), total(tile, counts)


def compile_image(image: Image, target: str, work: Path) -> list:
    """ocloc for one module and target; one KernelISA per kernel in it."""
    dump, out = work / "dump", work / "bin"
    for d in (dump, out):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    cmd = [str(OCLOC_ROOT / "usr" / "bin" / "ocloc"), "compile", "-q", "-spirv_input",
           "-file", str(image.spv), "-device", target, "-out_dir", str(out), "--format", "zebin"]
    if image.options:
        cmd += ["-options", image.options]
    done = subprocess.run(cmd, env=_ocloc_env(dump), capture_output=True, text=True)
    bins = list(out.glob("*.bin"))
    if done.returncode != 0 or not bins:
        raise RuntimeError(f"ocloc {target} {image.spv.name} ({image.config}) failed:\n"
                           f"{done.stdout}\n{done.stderr}")
    info = _kernels_of_ze_info(_ze_info(bins[0]))
    attempts = {}
    for path in sorted(dump.glob("*.asm")):
        m = ASM_NAME.match(path.name)
        if not m:
            continue  # Intel_Symbol_Table_Void_Program
        lines = _asm_lines(path)
        name = _header(lines, "//.kernel")
        thread = _header(lines, "//.thread_config") or ""
        grf = re.search(r"numGRF=(\d+)", thread)
        attempts.setdefault(name, []).append((Attempt(
            retry=int(m.group(1) or 0), simd=int(m.group(2)), grf=int(grf.group(1)) if grf else 0,
            spill=int(_header(lines, "//.spill size") or 0),
            instructions=int(_header(lines, "//.instCount") or 0), asm=path.name), lines))
    results = []
    for name, props in info.items():
        if name not in attempts:
            continue
        simd = props.get("simd_size", 0)
        tries = sorted((a for a in attempts[name] if a[0].simd == simd), key=lambda a: a[0].retry)
        kernel = name.removeprefix("__sycl_kernel_").removesuffix("_" + image.config)
        isa = KernelISA(kernel=kernel, config=image.config, kernel_set=image.kernel_set,
                        target=target, options=image.options, attempts=[a for a, _ in tries],
                        slm=props.get("slm_size", 0), simd=simd,
                        grf=props.get("grf_count", 0),
                        work_group=props.get("required_work_group_size", []))
        rows = image.rows_per_work_group.get(kernel)
        if kernel == "gdn_recurrent" and tries and rows and isa.work_group:
            rows_per_thread = rows / max(1, _product(isa.work_group) // simd)
            isa.decode_loop = decode_loop(tries[-1][1], tries[-1][0].instructions, rows_per_thread)
        results.append(isa)
    return results


def decode_loop(lines: list, instructions: int, rows_per_thread: float) -> dict:
    """gdn_recurrent in the final binary, per state row one hardware thread (one sub-group)
    updates, in instructions per token. The token step: every thread runs it once per token,
    a lower bound. The tile: what a one-token tile (decode) lays out, every instruction once,
    though the conv's paths are alternatives and one sub-group alone computes gates and norms.
    The whole kernel: an upper bound (every instruction once)."""
    step, tile = decode_loops(lines)
    return dict(rows_per_thread=rows_per_thread, token_step=step, tile=tile,
                token_step_per_row=step / rows_per_thread, tile_per_row=tile / rows_per_thread,
                kernel_per_row=instructions / rows_per_thread)


# ---- the check ------------------------------------------------------------------------------

def run_check(work: Path, targets=tuple(TARGETS)) -> list:
    """KernelISA of every kernel, configuration and target."""
    results = []
    for target in targets:
        for image in capture(target, work / target / "capture"):
            results += compile_image(image, target, work / target / "ocloc")
    return results


def table(results: list) -> str:
    """Markdown: one row per kernel, configuration and target. Spill and instructions list
    every IGC attempt at the binary's SIMD width (first / retry); the decode column is
    gdn_recurrent's token step and tile in instructions per token and state row (decode_loop;
    rows per thread)."""
    options = sorted({f"{r.target}: {r.options or '(none)'}" for r in results})
    lines = ["Level Zero build options passed to ocloc: " + "; ".join(options), "",
             "| kernel | act/state K=V | target | GRF | spill B | SIMD | SLM B | instructions "
             "| token step / tile per row |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        spills = " / ".join(str(a.spill) for a in r.attempts)
        insts = " / ".join(str(a.instructions) for a in r.attempts)
        act, state, k = r.config.split("_")[:3]
        d = r.decode_loop
        loop = (f"{d['token_step_per_row']:.0f} / {d['tile_per_row']:.0f} "
                f"({d['rows_per_thread']:g})" if d else "-")
        lines.append(f"| {r.kernel} | {act}/{state} {k[1:]} | {r.target} | {r.grf} | {spills} | "
                     f"{r.simd} | {r.slm} | {insts} | {loop} |")
    return "\n".join(lines)


def problems(results: list) -> list:
    """What fails the check: a spill in any attempt, shared local memory over the target's."""
    found = []
    for r in results:
        name = f"{r.kernel} {r.config} on {r.target}"
        if r.spill:
            found.append(f"{name}: spills ({' / '.join(str(a.spill) for a in r.attempts)} B)")
        if r.slm > TARGETS[r.target]:
            found.append(f"{name}: {r.slm} B of shared local memory, the target has "
                         f"{TARGETS[r.target]}")
    return found


def write_results(results: list, directory: Path = RESULTS) -> Path:
    """gpu_isa.json (read by benchmarks/projection.py) and gpu_isa.md."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "gpu_isa.md").write_text(table(results) + "\n")
    path = directory / "gpu_isa.json"
    path.write_text(json.dumps([r.as_dict() for r in results], indent=1))
    return path


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--capture-into":
        _capture_main(Path(sys.argv[2]))
    else:
        with tempfile.TemporaryDirectory(prefix="gdn_gpu_isa_") as tmp:
            found = run_check(Path(tmp))
        write_results(found)
        print(table(found))
