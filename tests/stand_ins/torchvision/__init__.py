"""A test-only stand-in for torchvision: NOT torchvision, and never installed.

PyPI's torchvision does not load beside the CPU torch of the vLLM test environment, yet vLLM's
Qwen3.5 module imports qwen3_vl, which imports transformers' Qwen2-VL image processor, which
imports torchvision at module level. tests/test_vllm_qwen35.py puts this directory's parent
(tests/stand_ins) on the PYTHONPATH of its engine subprocesses only, so that those imports
succeed; text-only generation never processes an image.

Any `torchvision.*` submodule is created on demand (a meta-path finder and loader); any
attribute of this package or of such a submodule is a placeholder class, the same object on
every access. Attribute access on a placeholder class returns the class itself (so
`InterpolationMode.BILINEAR` or `T.Compose` still import and evaluate); instantiating or
calling one raises TorchvisionStandInError. Dunder names are never faked (AttributeError).
"""

import importlib.abc
import importlib.machinery
import sys

# Not a real torchvision version: 0.0.0 makes version checks (transformers compares with
# 0.27 at import time) take their "old torchvision" branch; the local part names the stand-in.
__version__ = "0.0.0+test.stand.in"
STAND_IN = True


class TorchvisionStandInError(RuntimeError):
    pass


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


class _PlaceholderMeta(type):
    """Class attribute access returns the class; calling it (instantiation) raises."""

    def __getattr__(cls, name):
        if _dunder(name):
            raise AttributeError(name)
        return cls

    def __call__(cls, *args, **kwargs):
        raise TorchvisionStandInError(
            f"{cls.__module__}.{cls.__qualname__} was called, but this torchvision is a "
            f"test-only stand-in (tests/stand_ins/torchvision): it only lets modules that "
            f"import torchvision load; it has no functionality")

    def __getitem__(cls, item):  # generic-style use in annotations: Placeholder[...]
        return cls


def _placeholder(module, name: str) -> type:
    cls = _PlaceholderMeta(name, (), {"__module__": module.__name__, "__qualname__": name,
                                      "__doc__": "torchvision test stand-in placeholder"})
    setattr(module, name, cls)  # the same object on every later access
    return cls


def _module_getattr(module):
    def __getattr__(name):
        if _dunder(name):
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
        return _placeholder(module, name)
    return __getattr__


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and creates every torchvision.* submodule (each a package, so that deeper
    submodules import too)."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(__name__ + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        module.STAND_IN = True
        module.__getattr__ = _module_getattr(module)


__getattr__ = _module_getattr(sys.modules[__name__])

if not any(isinstance(f, _StandInFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _StandInFinder())
