"""Schedules: pure functions of the optimizer step, and the one small object that drives a pruner with them.

Sparsity: ``linear`` (the original tool's), or ``cubic``, Zhu & Gupta (2017): s_t = s_f (1 - (1 - p)^3),
fast while the network has many redundant weights, slow near the target.

Temperature: ``constant`` keeps ``PDPConfig.tau``; ``exp`` (geometric) and ``cosine`` (gentle at
both ends) anneal it from ``tau`` to ``tau_final`` over a window, by default the recovery phase
after the ramp, so the masks harden while sparsity no longer moves and the soft model the run ends
with is (almost) the hard one that ships. Both interpolate in log tau, since tau spans orders of
magnitude: with p the progress through the window in [0, 1],

* ``exp``:    log tau = log tau0 + p (log tau_f - log tau0)
* ``cosine``: log tau = log tau_f + (log tau0 - log tau_f) (1 + cos(pi p)) / 2
"""
from __future__ import annotations

import math


def _progress(step: int, start: int, ramp: int) -> float:
    if ramp <= 0:
        return 1.0 if step >= start else 0.0
    return min(1.0, max(0.0, (step - start) / ramp))


def linear(step: int, final: float, ramp: int, start: int = 0) -> float:
    return final * _progress(step, start, ramp)


def cubic(step: int, final: float, ramp: int, start: int = 0) -> float:
    return final * (1.0 - (1.0 - _progress(step, start, ramp)) ** 3)


SCHEDULES = {"linear": linear, "cubic": cubic}
TAU_SCHEDULES = ("constant", "exp", "cosine")


def sparsity_at(kind: str, step: int, final: float, ramp: int, start: int = 0) -> float:
    """Target sparsity after ``step`` optimizer steps: 0 at ``start``, ``final`` from ``start + ramp`` on."""
    try:
        fn = SCHEDULES[kind]
    except KeyError:
        raise ValueError(f"unknown schedule {kind!r}; choose from {sorted(SCHEDULES)}") from None
    return fn(step, final, ramp, start)


def tau_at(kind: str, step: int, tau0: float, tau_final: float | None, start: int, end: int) -> float:
    """Temperature after ``step`` optimizer steps: ``tau0`` up to ``start``, ``tau_final`` from ``end`` on."""
    if kind == "constant":
        return float(tau0)
    if kind not in TAU_SCHEDULES:
        raise ValueError(f"unknown tau schedule {kind!r}; choose from {list(TAU_SCHEDULES)}")
    if tau_final is None:
        raise ValueError(f"tau schedule {kind!r} needs tau_final")
    p = _progress(step, start, end - start)
    if p <= 0.0 or p >= 1.0:  # exact at both ends: a run ends at tau_final itself
        return float(tau0 if p <= 0.0 else tau_final)
    lo, hi = math.log(tau_final), math.log(tau0)
    if kind == "exp":
        return math.exp(hi + p * (lo - hi))
    return math.exp(lo + (hi - lo) * (1.0 + math.cos(math.pi * p)) / 2.0)


def plan_end(plan: dict) -> int:
    """The step at which a schedule plan (``PruningSchedule.state_dict()["schedule"]``) is done: its
    sparsity ramp has ended and, unless tau is constant, its tau anneal too.  A resumed run may not
    end earlier (it would finalize in the middle of its plan); later steps stay at the target and tau_final."""
    ramp_end = int(plan["ramp_steps"])
    if plan.get("tau_schedule", "constant") == "constant":
        return ramp_end
    return max(ramp_end, int(plan.get("tau_end", plan["total_steps"])))


class PruningSchedule:
    """Drives a pruner (PDP's or a baseline's) along the sparsity and tau schedules, step by step.

    For a plain PyTorch / accelerate loop::

        pruner = pdp_gpt2.attach(model, cfg)
        sched = pdp_gpt2.PruningSchedule(pruner, total_steps=1000)  # ramp over the first half
        for batch in loader:
            model(**batch).loss.backward()
            opt.step(); opt.zero_grad()
            sched.step()                # sparsity, tau and thresholds follow the updated weights
        pruner.finalize()               # exact zeros, plain model

    ``ramp_steps`` (default ``round(ramp_fraction * total_steps)``, at most ``total_steps``): steps
    over which the sparsity rises from 0 to ``pruner.config.sparsity``.  The tau schedule comes from
    ``pruner.config`` (``tau``, ``tau_schedule``, ``tau_final``) unless given here; its window
    is [``tau_start``, ``tau_end``], by default [ramp end, ``total_steps``].
    Construction moves the pruner to ``start_step`` (0: no sparsity yet).  Checkpoint
    ``state_dict()`` with the model and optimizer; to continue exactly after a restart:
    attach, build the schedule, *then* load the model's state_dict (a gmp keep-mask is a
    buffer in it) and ``load_state_dict`` the schedule.  The loaded state brings its plan (ramp
    length, tau window) with it, so a schedule built for more steps continues the old plan: an
    extended run stays at the target sparsity and ``tau_final`` after the old end instead of
    re-planning the ramp; one built for fewer steps than the plan needs is a ValueError.
    """

    def __init__(self, pruner, total_steps: int, *, ramp_steps: int | None = None, ramp_fraction: float = 0.5,
                 schedule: str = "cubic", tau_schedule: str | None = None, tau_final: float | None = None,
                 tau_start: int | None = None, tau_end: int | None = None, start_step: int = 0):
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if ramp_steps is None:
            if not 0.0 <= ramp_fraction <= 1.0:
                raise ValueError(f"ramp_fraction must be in [0, 1], got {ramp_fraction}")
            ramp_steps = round(ramp_fraction * total_steps)
        if ramp_steps < 0:
            raise ValueError(f"ramp_steps must be >= 0, got {ramp_steps}")
        if ramp_steps > total_steps:
            # The sparsity would stop short of its target when the run ends, and finalize would
            # bake in that lower value (10 of 100 cubic steps: 0.24 for a 0.9 target).
            raise ValueError(f"ramp_steps {ramp_steps} is longer than the run (total_steps {total_steps}): the "
                             f"sparsity would not reach its target; use ramp_steps <= {total_steps}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose from {sorted(SCHEDULES)}")
        cfg = pruner.config
        self.pruner, self.total_steps, self.ramp_steps, self.schedule = pruner, int(total_steps), int(ramp_steps), schedule
        self.final_sparsity = cfg.sparsity
        tau = self.drives_tau  # only a method with a temperature has tau settings (in its config)
        self.tau0 = cfg.tau if tau else None
        self.tau_schedule = tau_schedule or (cfg.tau_schedule if tau else "constant")
        self.tau_final = tau_final if tau_final is not None else (cfg.tau_final if tau else None)
        self.tau_start = self.ramp_steps if tau_start is None else int(tau_start)
        self.tau_end = self.total_steps if tau_end is None else int(tau_end)
        if self.drives_tau:
            tau_at(self.tau_schedule, 0, self.tau0, self.tau_final, self.tau_start, self.tau_end)  # validates
        self.apply(start_step)

    @property
    def steps(self) -> int:
        """Optimizer steps done: the driver's count, which it alone writes (``set_step``, ``step``)."""
        return self.pruner.steps

    @property
    def drives_tau(self) -> bool:
        """The method's masks have a temperature: its MethodSpec says so (``uses_tau``)."""
        return self.pruner.spec.uses_tau

    def sparsity_at(self, step: int) -> float:
        return sparsity_at(self.schedule, step, self.final_sparsity, self.ramp_steps)

    def tau_at(self, step: int) -> float:
        return tau_at(self.tau_schedule, step, self.tau0, self.tau_final, self.tau_start, self.tau_end)

    def apply(self, step: int) -> None:
        """Put the pruner where the schedules are after ``step`` optimizer steps (refreshes thresholds)."""
        self.pruner.set_step(step)
        if self.drives_tau:
            self.pruner.set_tau(self.tau_at(self.steps))
        self.pruner.set_sparsity(self.sparsity_at(self.steps))

    def step(self) -> None:
        """Call once after each optimizer step."""
        self.apply(self.steps + 1)

    @property
    def tau(self) -> float | None:
        return self.tau_at(self.steps) if self.drives_tau else None

    def metrics(self, layers: bool = False) -> dict:
        """Scalars worth logging now: target and hard sparsity, soft band, mean mask, tau (PDP),
        and with ``layers`` each target's hard sparsity and band."""
        st = self.pruner.stats()
        out = {"sparsity": st["sparsity_target"], "sparsity_hard": st["sparsity_hard"], "band": st["band"],
               "mask_mean": st["mask_mean"]}
        if self.drives_tau:
            out["tau"] = self.tau
        if layers:
            for name, d in st["layers"].items():
                out[f"layer_sparsity/{name}"] = d["hard"]
                out[f"layer_band/{name}"] = d["band"]
        return out

    # ---- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The pruner's state (budgets, sparsity, steps) plus where the schedules stand (JSON-safe)."""
        return {**self.pruner.state_dict(), "steps": self.steps, "tau": self.tau,
                "schedule": {"total_steps": self.total_steps, "ramp_steps": self.ramp_steps, "kind": self.schedule,
                             "tau_schedule": self.tau_schedule, "tau_final": self.tau_final,
                             "tau_start": self.tau_start, "tau_end": self.tau_end}}

    def load_state_dict(self, state: dict) -> None:
        """Restore the plan, budgets and the step; the masks themselves come back with the model's state_dict."""
        if state.get("schedule"):
            self._continue(state["schedule"])
        self.pruner.load_state_dict(state)
        self.apply(int(state["steps"]))

    def _continue(self, plan: dict) -> None:
        """Adopt a saved plan: the ramp and tau window as they were planned when the run started."""
        mine = {"kind": self.schedule}
        if self.drives_tau:  # a run without a temperature once recorded the flat config's tau plan
            mine.update(tau_schedule=self.tau_schedule, tau_final=self.tau_final)
        differ = [k for k, v in mine.items() if k in plan and plan[k] != v]
        if differ:
            raise ValueError("the saved schedule has other " + ", ".join(f"{k} ({plan[k]!r}, here {mine[k]!r})"
                                                                       for k in differ) + "; resume with the same")
        end = plan_end(plan)
        if self.total_steps < end:
            raise ValueError(f"the saved schedule is planned to end at step {end} (sparsity ramp "
                             f"{plan['ramp_steps']} steps, tau {plan.get('tau_schedule', 'constant')}); this one has "
                             f"total_steps {self.total_steps}: resume with at least {end}")
        self.ramp_steps = int(plan["ramp_steps"])
        self.tau_start = int(plan.get("tau_start", self.ramp_steps))
        self.tau_end = int(plan.get("tau_end", plan["total_steps"]))
