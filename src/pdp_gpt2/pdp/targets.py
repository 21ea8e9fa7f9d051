"""Kept for importers outside the core: this name is pdp/core/targets.py itself (the same module object)."""
import sys

from pdp_gpt2.pdp.core import targets as _moved

sys.modules[__name__] = _moved
