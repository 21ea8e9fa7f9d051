"""Kept for importers outside the core: this name is pdp/kernels/fused.py itself (the same module object)."""
import sys

from pdp_gpt2.pdp.kernels import fused as _moved

sys.modules[__name__] = _moved
