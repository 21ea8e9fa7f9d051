"""Wanda's own setting: which weights compete with each other for the pruned places."""
from __future__ import annotations

from dataclasses import dataclass, field

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.core.config import PruningConfig


@dataclass
class WandaConfig(PruningConfig):
    wanda_groups: str = field(
        default="output",
        metadata={"help": "--method wanda's comparison group: 'output' (the paper's: each output row ranks its own "
                          "weights; every row prunes floor(r cols), and so many rows one more (those whose next-lowest "
                          "score is lowest) that the tensor has exactly floor(r n) zeros, as under every method) or "
                          "'tensor' (the floor(r n) lowest scores of the whole tensor); N:M and 'row' keep their own "
                          "groups (pdp/methods/wanda/driver.py)"},
    )

    def _check_values(self) -> None:
        super()._check_values()
        if self.wanda_groups not in ("output", "tensor"):
            raise UsageError(f"wanda_groups must be 'output' or 'tensor', got {self.wanda_groups!r}")
