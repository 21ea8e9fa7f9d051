"""SparseGPT's own settings: the block of columns pruned together and the Hessian's damping."""
from __future__ import annotations

from dataclasses import dataclass, field

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.core.config import PruningConfig, check_types

BLOCKSIZE = 128  # columns per block of adaptive mask selection and lazy updates (the paper's B_s)
PERCDAMP = 0.01  # damping, as a fraction of the mean diagonal of H


@dataclass
class SparseGPTConfig(PruningConfig):
    sparsegpt_blocksize: int = field(default=BLOCKSIZE, metadata={"help": "--method sparsegpt's columns per block of mask selection and lazy updates (the paper's B_s), >= 1"})
    sparsegpt_percdamp: float = field(default=PERCDAMP, metadata={"help": "--method sparsegpt's damping of the Hessian, a fraction of its mean live diagonal, > 0"})

    def _check_types(self) -> None:
        super()._check_types()
        check_types(self, numbers_=("sparsegpt_blocksize", "sparsegpt_percdamp"))

    def _check_values(self) -> None:
        super()._check_values()
        if int(self.sparsegpt_blocksize) != self.sparsegpt_blocksize or self.sparsegpt_blocksize < 1:
            raise UsageError(f"sparsegpt_blocksize must be an integer >= 1, got {self.sparsegpt_blocksize}")
        if not 0 < self.sparsegpt_percdamp < float("inf"):
            raise UsageError(f"sparsegpt_percdamp must be > 0 and finite, got {self.sparsegpt_percdamp}")
