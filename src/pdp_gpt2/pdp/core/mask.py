"""The mask contract: what every parametrization a driver puts on a target weight is.

A driver (pdp/core/driver.py) reads its masks through these methods only, so a new mask is one
subclass: the abstract methods are what every mask must have, and an optional capability is a
class attribute declared here once (``recomputable``), read from there, never sniffed with
``hasattr``. PDP's ``PDPMask`` and the baselines' ``HardMask`` are the two masks there are.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from pdp_gpt2.pdp.patterns import Part


class Mask(nn.Module, ABC):
    """A parametrization w -> masked w, with what stats, the optimizer and finalize ask of it."""

    # The mask can recompute its output in backward instead of keeping it (``recipe``; the driver
    # hooks pdp/kernels/recompute.py on exactly the masks that declare this).
    recomputable = False

    @property
    @abstractmethod
    def soft(self) -> bool:
        """A differentiable mask (True) or a 0/1 one; a subclass declares it as a class attribute."""

    @abstractmethod
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """The masked weight."""

    @abstractmethod
    def soft_mask(self, w: torch.Tensor) -> torch.Tensor:
        """The mask's values as floats, w's shape (stats, mask histograms, MaskAwareAdamW)."""

    @abstractmethod
    def local_soft_mask(self, part: Part) -> torch.Tensor:
        """The mask's values on the rows ``part`` holds (a shard under FSDP2)."""

    def final_keep(self, part: Part) -> torch.Tensor:
        """Finalize's boolean keep-mask of ``part``'s rows, for a mask that holds it (a hard mask).  A
        soft mask's keep depends on counts its driver owns: that driver overrides ``final_keeps``."""
        raise NotImplementedError(f"{type(self).__name__}: its driver chooses finalize's keep-masks")

    @abstractmethod
    def final_local(self, part: Part, keep: torch.Tensor) -> torch.Tensor:
        """``part``'s rows as finalize writes them: exact zeros where ``keep`` is False."""

    @abstractmethod
    def to_identity(self) -> None:
        """Mask nothing from now on (a finalized or removed sharded model keeps its parametrizations)."""

    def recipe(self, w: torch.Tensor):
        """A function that recomputes this forward's output for ``w`` later (pdp/kernels/recompute.py);
        only a mask that declares ``recomputable`` has one."""
        raise NotImplementedError(f"{type(self).__name__} is not recomputable")
