"""gdn-xpu: Gated DeltaNet attention as a SYCL kernel and torch custom ops.

Importing the package registers torch.ops.gdn_xpu.gdn_attention (the raw kernel op) and
torch.ops.gdn_xpu.gdn_attention_core_xpu (the layer op).
"""

from gdn_xpu import _runtime  # noqa: F401  (sets up the OpenCL runtime before anything loads it)
from gdn_xpu import ops  # noqa: F401

__version__ = "0.1.0"
