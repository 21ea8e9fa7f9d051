"""PDP's own settings: the soft mask's temperature, its schedule, and improved masking."""
from __future__ import annotations

from dataclasses import dataclass, field

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.core.config import PruningConfig, check_types


@dataclass
class PDPMaskConfig(PruningConfig):
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
    improved_masking: bool = field(default=False, metadata={"help": "blend 0.7*sigmoid + 0.3*tanh-step (needs beta)"})
    beta: float = field(default=5.0, metadata={"help": "steepness of the tanh part of improved masking, > 0"})

    def _check_types(self) -> None:
        super()._check_types()
        check_types(self, numbers_=("tau", "beta"), optional_numbers=("tau_final",), strings=("tau_mode", "tau_schedule"),
                    flags=("improved_masking",))

    def _check_values(self) -> None:
        super()._check_values()
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
        if not 0 < self.beta < float("inf"):
            raise UsageError(f"beta must be > 0 and finite, got {self.beta}")
