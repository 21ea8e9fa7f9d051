"""PruningConfig: the settings every pruning method shares (sparsity, allocation, pattern,
quantization, targets, the layer cap), validated in ``__post_init__`` so the library and the CLI
reject bad input in one place, with one clear message. A method with settings of its own
subclasses it in its package (methods/pdp/config.py) and names the class in its registration.

A plain schema: importing it loads no torch (report and sweep read configs without a model
stack). Only validating a pattern spec imports the pattern registry (pdp/patterns/)."""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import asdict, dataclass, field

from typing import TYPE_CHECKING

from pdp_gpt2.errors import UsageError, UsageTypeError

if TYPE_CHECKING:
    from pdp_gpt2.pdp.patterns import Pattern


def _shown(v) -> str:
    return f"the string {v!r}" if isinstance(v, str) else repr(v)


def check_types(cfg, *, numbers_: tuple = (), optional_numbers: tuple = (), strings: tuple = (),
                flags: tuple = ()) -> None:
    """Refuse a value of the wrong type before any range check: "0.9" compared to a number fails
    obscurely, "false" is a true string."""
    for name in numbers_ + optional_numbers:
        v = getattr(cfg, name)
        if not (name in optional_numbers and v is None) and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            raise UsageTypeError(f"{name} must be a number, got {_shown(v)}")
    for name in strings:
        if not isinstance(getattr(cfg, name), str):
            raise UsageTypeError(f"{name} must be a string, got {_shown(getattr(cfg, name))}")
    for name in flags:
        if not isinstance(getattr(cfg, name), bool):
            raise UsageTypeError(f"{name} must be True or False, got {_shown(getattr(cfg, name))}")


@dataclass
class PruningConfig:
    sparsity: float = field(default=0.9, metadata={"help": "target fraction of zeros among target weights, in [0, 1), at most max_layer_sparsity"})
    allocation: str = field(
        default="layer",
        metadata={"help": "'layer': every tensor at the same sparsity; 'global': per-layer budgets from one global magnitude ranking at attach time"},
    )
    pattern: str = field(default="unstructured", metadata={"help": "which weights are pruned together, a name in the pattern registry (pdp/patterns/)"})
    quantize: bool = field(default=False, metadata={"help": "fake-quantize masked weights per output channel (STE)"})
    bits: int = field(default=8, metadata={"help": "bits for quantization masking, 2..8"})
    targets: list[str] | None = field(
        default=None,
        metadata={"help": "module-name glob patterns to prune; default: every Linear/Conv1D inside the repeated blocks"},
    )
    max_layer_sparsity: float = field(
        default=0.99, metadata={"help": "cap on every tensor's sparsity, under both allocations; a sparsity above it is refused (raise this, < 1, for more)"}
    )

    def __post_init__(self) -> None:
        self._check_types()
        self._check_values()
        # The pattern parses its own spec and says which sparsity and allocation it allows.
        self.mask_pattern.check(self.sparsity, self.allocation)

    def _check_values(self) -> None:
        """The range checks; a method's config adds its own after these (``super()._check_values()``)."""
        if not (0.0 <= self.sparsity < 1.0):
            raise UsageError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.allocation not in ("layer", "global"):
            raise UsageError(f"allocation must be 'layer' or 'global', got {self.allocation!r}")
        if not (2 <= int(self.bits) <= 8) or int(self.bits) != self.bits:
            raise UsageError(f"bits must be an integer in 2..8, got {self.bits}")
        if not (0.0 < self.max_layer_sparsity < 1.0):
            raise UsageError(f"max_layer_sparsity must be in (0, 1), got {self.max_layer_sparsity}")
        if self.sparsity > self.max_layer_sparsity:  # every tensor stops at the cap: the target is out of reach
            raise UsageError(f"sparsity {self.sparsity} exceeds max_layer_sparsity {self.max_layer_sparsity}, the cap "
                             "on every tensor; raise max_layer_sparsity (< 1) to prune that far")

    def _check_types(self) -> None:
        """Types first (a string of targets is matched character by character); a method's config
        adds its own fields' (``super()._check_types()``)."""
        check_types(self, numbers_=("sparsity", "max_layer_sparsity"), strings=("allocation", "pattern"),
                    flags=("quantize",))
        if isinstance(self.bits, bool) or not isinstance(self.bits, numbers.Real):
            raise UsageTypeError(f"bits must be an integer, got {_shown(self.bits)}")
        if self.targets is not None:
            if isinstance(self.targets, str) or not isinstance(self.targets, (list, tuple)):
                raise UsageTypeError(f"targets must be a list of module-name patterns, got {_shown(self.targets)} "
                                     f"(a list such as [{self.targets!r}])" if isinstance(self.targets, str) else
                                     f"targets must be a list of module-name patterns, got {_shown(self.targets)}")
            if bad := [t for t in self.targets if not isinstance(t, str)]:
                raise UsageTypeError(f"targets must be a list of module-name patterns, got {_shown(bad[0])} in it")
            self.targets = list(self.targets)


    @property
    def mask_pattern(self) -> Pattern:
        """The :class:`~pdp_gpt2.pdp.patterns.Pattern` that ``pattern`` names."""
        from pdp_gpt2.pdp.patterns import get_pattern  # the patterns need torch; the schema does not

        return get_pattern(self.pattern)

    @classmethod
    def own_fields(cls) -> tuple[str, ...]:
        """The fields this class adds to the shared ones (a method's own settings)."""
        shared = {f.name for f in dataclasses.fields(PruningConfig)}
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in shared)

    @classmethod
    def from_config(cls, other: PruningConfig):
        """This class's fields taken from any config (the flat PDPConfig included); the others default."""
        return cls(**{f.name: getattr(other, f.name) for f in dataclasses.fields(cls) if hasattr(other, f.name)})

    def to_dict(self) -> dict:
        return asdict(self)
