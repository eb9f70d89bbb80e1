"""The forward-context registry the layer op reads: layer name -> layer, prefix -> metadata.

When vLLM is importable these are vLLM's own objects (vllm.forward_context), so a model run by
vLLM and one run by this package share one registry. Without vLLM, a small compatible
ForwardContext with the same field names stands in.
"""

import contextlib
import dataclasses
import functools
import importlib.util
from typing import Any, Iterator, Optional


@dataclasses.dataclass
class ForwardContext:
    """The part of vllm.forward_context.ForwardContext the GDN layer op uses."""

    no_compile_layers: dict[str, Any]
    attn_metadata: Optional[dict[str, Any]]


_current: Optional[ForwardContext] = None


@contextlib.contextmanager
def _override_own_context(context: Optional[ForwardContext]) -> Iterator[None]:
    global _current
    previous, _current = _current, context
    try:
        yield
    finally:
        _current = previous


def _get_own_context() -> ForwardContext:
    if _current is None:
        raise RuntimeError("gdn_xpu: no forward context is set: run the model inside "
                           "gdn_xpu.forward_context.set_forward_context(...)")
    return _current


@functools.cache
def _backend():
    """(ForwardContext class, get, override) of vLLM when installed, else this module's."""
    if importlib.util.find_spec("vllm") is not None:
        from vllm import forward_context as vllm_fc

        return vllm_fc.ForwardContext, vllm_fc.get_forward_context, vllm_fc.override_forward_context
    return ForwardContext, _get_own_context, _override_own_context


def uses_vllm() -> bool:
    return _backend()[0] is not ForwardContext


def get_forward_context():
    """The current forward context (vLLM's when vLLM is installed)."""
    return _backend()[1]()


@contextlib.contextmanager
def set_forward_context(attn_metadata: Optional[dict[str, Any]],
                        layers: dict[str, Any]) -> Iterator[None]:
    """Make `layers` (name -> layer) and `attn_metadata` (prefix -> metadata, or None for a
    profiling run) the current forward context."""
    context_class, _, override = _backend()
    extra = {"slot_mapping": {}} if uses_vllm() else {}
    with override(context_class(no_compile_layers=layers, attn_metadata=attn_metadata, **extra)):
        yield


def lookup_layer(layer_name: str):
    """(layer, its metadata or None) for a layer op call, with clear errors."""
    context = get_forward_context()
    layer = context.no_compile_layers.get(layer_name)
    if layer is None:
        known = ", ".join(sorted(context.no_compile_layers)) or "none"
        raise KeyError(f"gdn_xpu: layer {layer_name!r} is not in the forward context "
                       f"(registered layers: {known})")
    if context.attn_metadata is None:
        return layer, None
    metadata = context.attn_metadata.get(layer.prefix)
    if metadata is None:
        raise KeyError(f"gdn_xpu: no attention metadata for layer prefix {layer.prefix!r}")
    return layer, metadata
