"""What a resume may not change: the flags a checkpoint depends on must equal those of the run
that wrote it (its run directory's run_config.json). A longer run is allowed (steps.py)."""
from __future__ import annotations

import json
from pathlib import Path

from pdp_gpt2.errors import UsageError
from pdp_gpt2.train import flags
from pdp_gpt2.train.config import TrainConfig

# Flags that change what a run computes: a resume must not change them (the masks, the data
# order, the optimizer state and the schedules' plan in the checkpoint belong to the old values).
# --max_steps / --num_epochs may change: a longer run continues the planned schedules (plan_steps).
SAME_ON_RESUME = ("model", "dataset", "streaming", "method", "seed", "batch_size", "gradient_accumulation_steps",
                  "max_length", "learning_rate", "weight_decay", "lr_scheduler", "lr_warmup_steps", "max_grad_norm",
                  "custom_optimizer", "precision", "schedule", "warmup_steps", "warmup_epochs", "distill",
                  "distill_temperature", "pdp")


def check_resume_config(cfg: TrainConfig, checkpoint: Path) -> None:
    """One check for ``--resume`` and ``--resume DIR/checkpoint-N``: the flags the checkpoint depends on
    equal those of the run that wrote it (``run_config.json`` in the checkpoint's run directory,
    wherever the resumed run writes)."""
    run_dir = checkpoint.parent
    path = run_dir / "run_config.json"
    try:
        old_cfg = json.loads(path.read_text())
        if not isinstance(old_cfg, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        why = "there is none" if not path.is_file() else f"it does not parse ({e})"
        raise UsageError(f"--resume {checkpoint}: the flags it was trained with cannot be checked: {path}: {why}; "
                         "resume from a checkpoint inside the run directory that wrote it") from None

    def flat(d: dict) -> dict:  # PDP fields are flags too (--sparsity, --tau, ...)
        out = {**{k: v for k, v in d.items() if k in SAME_ON_RESUME and k != "pdp"}, **(d.get("pdp") or {})}
        if out.get("warmup_steps") is not None:
            out.pop("warmup_epochs", None)  # ignored next to --warmup_steps: a change to it changes nothing
        return out

    old, new = flat(old_cfg), flat(flags.recorded(cfg))  # a flag the method ignores may change
    changed = [k for k in new if k in old and old[k] != new[k]]
    if changed:
        raise UsageError(f"--resume with different {', '.join('--' + k for k in changed)} than the run in "
                         f"{run_dir} (see its run_config.json); resume with the same flags")
