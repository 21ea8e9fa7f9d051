"""How long a run trains and over how many steps its sparsity ramps, from the data's size and the
flags, or, on a resume, from the schedule plan its checkpoint recorded."""
from __future__ import annotations

import math

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.core.schedule import plan_end
from pdp_gpt2.train.config import TrainConfig


def steps_per_epoch(n_blocks: int, cfg: TrainConfig, world: int) -> int:
    micro = math.ceil(n_blocks / (cfg.batch_size * world))
    return max(1, micro // cfg.gradient_accumulation_steps)


def plan_steps(n_blocks: int | None, cfg: TrainConfig, world: int, planned: dict | None = None) -> tuple[int, int]:
    """(total optimizer steps, sparsity-ramp steps).  A stream (n_blocks None) counts --max_steps as its epoch.
    ``planned``: the schedule plan of the checkpoint a run resumes from (its pdp_state.json), which the
    run continues: its ramp, whatever the new length (docs/runs.md, the resume contract)."""
    per_epoch = steps_per_epoch(n_blocks, cfg, world) if n_blocks is not None else cfg.max_steps
    total = cfg.max_steps if cfg.max_steps >= 0 else math.ceil(cfg.num_epochs * per_epoch)
    length = f"--max_steps {cfg.max_steps}" if cfg.max_steps >= 0 else f"--num_epochs {cfg.num_epochs:g}"
    if planned:
        end = plan_end(planned)
        if total < end:
            raise UsageError(f"--resume: {length} ends the run at step {total}, before the schedules planned when it "
                             f"started end at step {end} (sparsity ramp {planned['ramp_steps']} steps, tau "
                             f"{planned.get('tau_schedule', 'constant')}); resume with --max_steps {end} or more")
        return total, int(planned["ramp_steps"])
    if total == 0:  # --max_steps 0: no training (config.py allows it for methods that prune at attach)
        return 0, 0
    if cfg.warmup_steps is not None:
        if cfg.warmup_steps > total:  # the ramp would end past the last step, short of the target
            raise UsageError(f"--warmup_steps {cfg.warmup_steps} is longer than the run ({total} steps of {length}): "
                             f"the sparsity would not reach its target; use at most {total}")
        return total, cfg.warmup_steps  # asked for explicitly: as given
    ramp = round(cfg.warmup_epochs * per_epoch)
    if ramp >= total and total > 1:
        # A --max_steps shorter than --warmup_epochs would reach the target only on the
        # last step, with no steps left to recover at it: ramp over the first half instead.
        print(f"pdp-gpt2: --warmup_epochs {cfg.warmup_epochs:g} is longer than the run ({total} steps); "
              f"ramping sparsity over the first {total // 2} steps (set --warmup_steps to choose)", flush=True)
        ramp = total // 2
    return total, ramp
