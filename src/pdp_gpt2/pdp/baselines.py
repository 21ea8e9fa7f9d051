"""Kept for importers outside the core (plugins): the hard masks live in pdp/core/hard.py, the
drivers in pdp/methods/magnitude/ and pdp/methods/gmp/."""
from pdp_gpt2.pdp.core.hard import HardMask, HardPruner, final_values  # noqa: F401
from pdp_gpt2.pdp.methods.gmp.driver import GMP  # noqa: F401
from pdp_gpt2.pdp.methods.magnitude.driver import Magnitude  # noqa: F401
