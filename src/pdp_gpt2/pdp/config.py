"""PDPConfig, the flat config: every built-in method's settings in one object, as the public API
and the CLI's flags take them. ``attach`` hands each method only its own part (its registered
config class, :meth:`~pdp_gpt2.pdp.core.config.PruningConfig.from_config`). A plain schema: no torch."""
from __future__ import annotations

from dataclasses import dataclass

from pdp_gpt2.pdp.core.config import PruningConfig  # noqa: F401  (importers of the old path)
from pdp_gpt2.pdp.methods.pdp.config import PDPMaskConfig
from pdp_gpt2.pdp.methods.sparsegpt.config import SparseGPTConfig
from pdp_gpt2.pdp.methods.wanda.config import WandaConfig


@dataclass
class PDPConfig(SparseGPTConfig, WandaConfig, PDPMaskConfig):
    """The shared settings, then PDP's, Wanda's and SparseGPT's (the order of the flags)."""
