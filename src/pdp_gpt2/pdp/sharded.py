"""Kept for importers outside the core: this name is pdp/kernels/sharded.py itself (the same module object)."""
import sys

from pdp_gpt2.pdp.kernels import sharded as _moved

sys.modules[__name__] = _moved
