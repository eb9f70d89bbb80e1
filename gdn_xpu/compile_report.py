"""What torch.compile makes of a model: graph breaks and the opaque nodes in its graphs."""

import dataclasses

import torch

LAYER_OP = "gdn_xpu.gdn_attention_core_xpu"


@dataclasses.dataclass
class CaptureReport:
    graph_count: int
    graph_break_count: int
    break_reasons: list[str]
    custom_op_calls: dict[str, int]  # custom-op name -> number of call nodes in the graphs

    @property
    def layer_op_calls(self) -> int:
        return self.custom_op_calls.get(LAYER_OP, 0)


def _op_name(target):
    """'namespace.name' of a torch.ops call target, else None."""
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name.replace("::", ".")
    if isinstance(target, torch._ops.OpOverloadPacket):
        return target._qualified_op_name.replace("::", ".")
    return None


def capture(fn, *args) -> CaptureReport:
    """Trace fn(*args) with Dynamo (torch._dynamo.explain) without running compiled code."""
    explanation = torch._dynamo.explain(fn)(*args)
    calls: dict[str, int] = {}
    for graph in explanation.graphs:
        for node in graph.graph.nodes:
            name = _op_name(node.target) if node.op == "call_function" else None
            if name and name.split(".")[0] not in ("aten", "prims"):
                calls[name] = calls.get(name, 0) + 1
    return CaptureReport(
        graph_count=explanation.graph_count,
        graph_break_count=explanation.graph_break_count,
        break_reasons=[str(r.reason) for r in explanation.break_reasons],
        custom_op_calls=calls,
    )
