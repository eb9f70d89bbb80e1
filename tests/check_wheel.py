"""Checks of the built wheel (make wheel): python tests/check_wheel.py WHEEL PLATFORM EXTERNAL...

- Its tag is cp310-abi3-PLATFORM, and auditwheel agrees: the tag its symbol versions allow is
  PLATFORM, and the only libraries standing between the wheel and that tag are EXTERNAL (libsycl
  and libtorch, dependencies left to the environment on purpose, never vendored).
- It carries exactly one host library per libsycl soname (gdn_xpu/_C_sycl<N>.abi3.so), each
  linked against its own libsycl.so.N, none against libtorch_python or pybind11.
"""

import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def needed(path):
    out = subprocess.check_output(["readelf", "-d", path], text=True)
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out))


def main(wheel, platform, *external):
    wheel = Path(wheel)
    assert wheel.name.endswith(f"-cp310-abi3-{platform}.whl"), wheel.name
    auditwheel = Path(sys.executable).with_name("auditwheel")
    report = json.loads(subprocess.check_output([str(auditwheel), "show", "--json", str(wheel)]))
    assert report["sym_tag"] == platform, report["sym_tag"]
    to_eliminate = set(report["policy_upgrades"].get(platform, {}).get("libs_to_eliminate", []))
    assert to_eliminate <= set(external), f"auditwheel: {platform} also needs {to_eliminate}"
    assert set(report["external_libs"]) <= set(external), report["external_libs"]

    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        libraries = [n for n in z.namelist() if n.endswith(".so") or ".so." in n]
        majors = sorted(int(m.group(1)) for n in libraries
                        if (m := re.fullmatch(r"gdn_xpu/_C_sycl(\d+)\.abi3\.so", n)))
        assert majors == [8, 9] and len(libraries) == 2, libraries
        for name in libraries:
            path = z.extract(name, tmp)
            deps = needed(path)
            major = re.search(r"sycl(\d+)", name).group(1)
            assert f"libsycl.so.{major}" in deps, (name, deps)
            assert not any("torch_python" in d or "pybind" in d for d in deps), (name, deps)
            assert b"pybind11" not in Path(path).read_bytes(), name
    print(f"{wheel.name}: {platform} (auditwheel: symbol versions {report['sym_tag']}, external "
          f"{sorted(report['external_libs'])}), host libraries for libsycl.so.{majors}")


if __name__ == "__main__":
    main(*sys.argv[1:])
