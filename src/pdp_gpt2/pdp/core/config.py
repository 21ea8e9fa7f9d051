"""PDPConfig: every setting of the mask math, validated in ``__post_init__`` so the library
and the CLI reject bad input in one place, with one clear message.

A plain schema: importing it loads no torch (report and sweep read configs without a model
stack).  Only validating a pattern spec imports the pattern registry (patterns.py), where each
pattern parses its own spec."""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field

from typing import TYPE_CHECKING

from pdp_gpt2.errors import UsageError, UsageTypeError

if TYPE_CHECKING:
    from pdp_gpt2.pdp.patterns import Pattern

@dataclass
class PDPConfig:
    sparsity: float = field(default=0.9, metadata={"help": "target fraction of zeros among target weights, in [0, 1), at most max_layer_sparsity"})
    # Defaults from the benchmark (docs/results.md): a wide band (tau 0.1, |w|/t in ~[0.84, 1.14])
    # while the sparsity ramps, annealed geometrically to tau/100 over the recovery phase, so the
    # model that ships (hard zeros) keeps what the soft masks found: lower perplexity than a
    # constant 0.02 at every learning rate and ramp tried, and no soft-to-hard gap.
    tau: float = field(
        default=0.1,
        metadata={"help": "soft-mask temperature (the start of the tau schedule); dimensionless, in units of the threshold's square (see pdp/kernels/mask.py)"},
    )
    tau_mode: str = field(
        default="relative",
        metadata={"help": "'relative' (x = w^2/t^2 - 1, scale-free, default) or 'absolute' (x = w^2 - t^2, the paper's raw form)"},
    )
    tau_schedule: str = field(
        default="exp",
        metadata={"help": "tau over training: 'constant', or anneal from tau to tau_final in log tau, 'exp' (geometric) or 'cosine', over the recovery phase after the sparsity ramp (pdp/core/schedule.py)"},
    )
    tau_final: float | None = field(
        default=None, metadata={"help": "tau at the end of an 'exp' or 'cosine' tau_schedule, finite and > 0 (default: tau / 100)"}
    )
    allocation: str = field(
        default="layer",
        metadata={"help": "'layer': every tensor at the same sparsity; 'global': per-layer budgets from one global magnitude ranking at attach time"},
    )
    pattern: str = field(default="unstructured", metadata={"help": "which weights are pruned together, a name in the pattern registry (pdp/patterns/)"})
    improved_masking: bool = field(default=False, metadata={"help": "blend 0.7*sigmoid + 0.3*tanh-step (needs beta)"})
    beta: float = field(default=5.0, metadata={"help": "steepness of the tanh part of improved masking, > 0"})
    quantize: bool = field(default=False, metadata={"help": "fake-quantize masked weights per output channel (STE)"})
    bits: int = field(default=8, metadata={"help": "bits for quantization masking, 2..8"})
    targets: list[str] | None = field(
        default=None,
        metadata={"help": "module-name glob patterns to prune; default: every Linear/Conv1D inside the repeated blocks"},
    )
    wanda_groups: str = field(
        default="output",
        metadata={"help": "--method wanda's comparison group: 'output' (the paper's: each output row ranks its own "
                          "weights; every row prunes floor(r cols), and so many rows one more (those whose next-lowest "
                          "score is lowest) that the tensor has exactly floor(r n) zeros, as under every method) or "
                          "'tensor' (the floor(r n) lowest scores of the whole tensor); N:M and 'row' keep their own "
                          "groups (pdp/methods/wanda/driver.py)"},
    )
    max_layer_sparsity: float = field(
        default=0.99, metadata={"help": "cap on every tensor's sparsity, under both allocations; a sparsity above it is refused (raise this, < 1, for more)"}
    )

    def __post_init__(self) -> None:
        self._check_types()
        if not (0.0 <= self.sparsity < 1.0):
            raise UsageError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if not 0 < self.tau < float("inf"):
            raise UsageError(f"tau must be > 0 and finite, got {self.tau}")
        if self.tau_schedule not in ("constant", "exp", "cosine"):
            raise UsageError(f"tau_schedule must be constant, exp or cosine, got {self.tau_schedule!r}")
        if self.tau_schedule == "constant" and self.tau_final is not None:
            raise UsageError("tau_final needs tau_schedule exp or cosine (constant keeps tau)")
        if self.tau_schedule != "constant" and self.tau_final is None:
            self.tau_final = self.tau / 100  # two decades: the band ends ~100x narrower, as hard as a step
        if self.tau_final is not None and not 0 < self.tau_final < float("inf"):
            raise UsageError(f"tau_final must be > 0 and finite, got {self.tau_final}")
        if self.tau_mode not in ("relative", "absolute"):
            raise UsageError(f"tau_mode must be 'relative' or 'absolute', got {self.tau_mode!r}")
        if self.allocation not in ("layer", "global"):
            raise UsageError(f"allocation must be 'layer' or 'global', got {self.allocation!r}")
        if self.wanda_groups not in ("output", "tensor"):
            raise UsageError(f"wanda_groups must be 'output' or 'tensor', got {self.wanda_groups!r}")
        if not 0 < self.beta < float("inf"):
            raise UsageError(f"beta must be > 0 and finite, got {self.beta}")
        if not (2 <= int(self.bits) <= 8) or int(self.bits) != self.bits:
            raise UsageError(f"bits must be an integer in 2..8, got {self.bits}")
        if not (0.0 < self.max_layer_sparsity < 1.0):
            raise UsageError(f"max_layer_sparsity must be in (0, 1), got {self.max_layer_sparsity}")
        if self.sparsity > self.max_layer_sparsity:  # every tensor stops at the cap: the target is out of reach
            raise UsageError(f"sparsity {self.sparsity} exceeds max_layer_sparsity {self.max_layer_sparsity}, the cap "
                             "on every tensor; raise max_layer_sparsity (< 1) to prune that far")
        # The pattern parses its own spec and says which sparsity and allocation it allows.
        self.mask_pattern.check(self.sparsity, self.allocation)

    def _check_types(self) -> None:
        """Refuse a value of the wrong type before any range check: "0.9" compared to a number fails
        obscurely, "false" is a true string, and a string of targets is matched character by character."""
        def shown(v) -> str:
            return f"the string {v!r}" if isinstance(v, str) else repr(v)

        for name in ("sparsity", "tau", "beta", "max_layer_sparsity", "tau_final"):
            v = getattr(self, name)
            if not (name == "tau_final" and v is None) and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                raise UsageTypeError(f"{name} must be a number, got {shown(v)}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, numbers.Real):
            raise UsageTypeError(f"bits must be an integer, got {shown(self.bits)}")
        for name in ("tau_mode", "tau_schedule", "allocation", "pattern"):
            if not isinstance(getattr(self, name), str):
                raise UsageTypeError(f"{name} must be a string, got {shown(getattr(self, name))}")
        for name in ("improved_masking", "quantize"):
            if not isinstance(getattr(self, name), bool):
                raise UsageTypeError(f"{name} must be True or False, got {shown(getattr(self, name))}")
        if self.targets is not None:
            if isinstance(self.targets, str) or not isinstance(self.targets, (list, tuple)):
                raise UsageTypeError(f"targets must be a list of module-name patterns, got {shown(self.targets)} "
                                     f"(a list such as [{self.targets!r}])" if isinstance(self.targets, str) else
                                     f"targets must be a list of module-name patterns, got {shown(self.targets)}")
            if bad := [t for t in self.targets if not isinstance(t, str)]:
                raise UsageTypeError(f"targets must be a list of module-name patterns, got {shown(bad[0])} in it")
            self.targets = list(self.targets)

    @property
    def mask_pattern(self) -> Pattern:
        """The :class:`~pdp_gpt2.pdp.patterns.Pattern` that ``pattern`` names."""
        from pdp_gpt2.pdp.patterns import get_pattern  # the patterns need torch; the schema does not

        return get_pattern(self.pattern)

    def to_dict(self) -> dict:
        return asdict(self)
