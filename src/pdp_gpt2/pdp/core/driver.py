"""The MaskDriver contract: what every pruning method (PDP, the baselines, a new one) is.

A driver owns one model's masks from ``attach`` to ``finalize``. A method defines ``make_mask``
(the parametrization on a target's weight; ``PDPMask`` and the baselines' ``HardMask`` are the two
there are, and a new method usually reuses one), ``update`` or ``update_all`` (recompute the masks
for a sparsity; the built-in methods do every target in one batched selection), and optionally
``prepare(calibration)``, ``start()``, the flags ``one_shot`` / ``keeps_history`` and a
``description``. Methods are registered in pdp/core/registry.py; docs/architecture.md has a toy.

Everything else is shared here: ``set_sparsity``, ``step``, per-layer budgets, ``stats``,
``state_dict`` / ``load_state_dict``, ``finalize`` and ``remove``. Sharded weights (FSDP2) take the
same paths, as :class:`~pdp_gpt2.pdp.patterns.Part` objects; only :meth:`part` asks about sharding.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.kernels import sharded
from pdp_gpt2.pdp.core.config import PruningConfig
from pdp_gpt2.pdp.core.groups import Group, group
from pdp_gpt2.pdp.kernels.fused import KernelOptions
from pdp_gpt2.pdp.patterns import Part
from pdp_gpt2.pdp.kernels.recompute import RecomputeHooks
from pdp_gpt2.pdp.core.targets import Target


class MaskDriver:
    """State of one pruning run on one model: targets, per-layer budgets, current sparsity."""

    # One line for people (the model card's "Method:"); default: the class docstring's first line.
    description = ""
    # Pruned once at attach, to the final target; the schedule's set_sparsity is ignored.
    one_shot = False
    # The masks depend on past steps (not on the weights alone): they come back from the
    # model's state_dict on resume, and load_state_dict must not recompute them.
    keeps_history = False

    def __init__(self, model: nn.Module, config: PruningConfig, targets: list[Target], *,
                 kernels: KernelOptions | None = None):
        self.model, self.config, self.targets = model, config, targets
        if any(sharded.is_sharded(t.module.weight) for t in targets):
            raise ValueError("attach the masks before sharding the model (fully_shard): FSDP must shard the "
                             "parameter inside each parametrization")
        self.pattern = config.mask_pattern
        # What each selection ranks: one target each, or (a coupled pattern) one structure's targets.
        self.targets, self.groups = group(model, self.pattern, targets, explicit=True)
        self.kernels = kernels or KernelOptions()
        self.sparsity = 0.0
        self.steps = 0
        # Fraction of the global target each tensor takes (1.0 each under 'layer').
        self.budgets: dict[str, float] = {t.name: 1.0 for t in targets}
        self.method = type(self).__name__.lower()  # attach() sets the name it is registered under
        self.spec = None  # and its registry.MethodSpec
        self._recompute: list[RecomputeHooks] = []

    # ---- what a method defines ------------------------------------------------------------
    def prepare(self, calibration) -> None:
        """Before any mask is attached (the weights are still plain): e.g. collect statistics."""

    def make_mask(self, t: Target) -> nn.Module:
        raise NotImplementedError

    def update(self, t: Target, sparsity: float) -> None:
        """Recompute target t's mask at ``sparsity`` (this tensor's share, see layer_sparsity)."""
        raise NotImplementedError

    def update_all(self, targets: list[Target], sparsities: list[float]) -> None:
        """Recompute every target's mask; a method that can batch the work across targets overrides this."""
        for t, s in zip(targets, sparsities):
            self.update(t, s)

    @classmethod
    def record(cls, config: PruningConfig) -> dict:
        """What a run's pdp_pruning.json says about this method beyond the shared settings (its
        comparison group, how its count is defined, its calibration); nothing by default."""
        return {}

    def start(self) -> None:
        """The masks right after attach: at the final target (a gradual method may start dense)."""
        self.sparsity = self.config.sparsity
        self.refresh()

    # ---- access ---------------------------------------------------------------------------
    def mask_of(self, t: Target) -> nn.Module:
        return t.module.parametrizations.weight[0]

    def original(self, t: Target) -> nn.Parameter:
        return t.module.parametrizations.weight.original

    def part(self, t: Target) -> Part:
        """Target t's weight as this process holds it: the whole tensor, or (FSDP2) its shard."""
        w = self.original(t)
        if sharded.is_sharded(w):
            return Part(w.to_local().detach(), t.out_dim, sharded.layout(w))
        return Part(w.detach(), t.out_dim)

    # ---- groups: what one selection ranks (pdp/core/groups.py) -------------------------------------
    def pools(self, g: Group, live: bool = False) -> list:
        """Each member's tensors holding the units, as (tensor, axis): its weight and, where it has one,
        its bias (``live``: the parameters themselves, for a forward; else detached)."""
        out = []
        for m in g.members:
            if sharded.is_sharded(self.original(m.target)):
                raise UsageError(f"pattern {self.pattern.name!r} does not run under FSDP2 (a unit spans several "
                                 "tensors, each sharded on its own): use DDP")
            pool = [(self.original(m.target), m.slot)]
            if m.bias is not None:
                pool.append((m.target.module.bias, m.bias))
            out.append([(x if live else x.detach(), a) for x, a in pool])
        return out

    def group_part(self, g: Group) -> Part:
        """What the pattern ranks for ``g``: the target's weight, or one score per unit of the structure."""
        if not g.coupled:
            return self.part(g.lead)
        return Part(self.pattern.unit_sq(self.pools(g)).sqrt(), 0)

    def member_keeps(self, g: Group, keep: torch.Tensor) -> list[torch.Tensor]:
        """A keep-mask over what ``group_part`` ranked, as each member's keep-mask (its whole shape)."""
        if not g.coupled:
            return [keep]
        return [m.slot.spread(keep, m.target.module.weight.shape).expand(m.target.module.weight.shape)
                for m in g.members]

    def groups_of(self, targets: list[Target], sparsities: list[float]) -> tuple[list[Group], list[float]]:
        """The groups whose members are among ``targets``, each with its lead member's sparsity."""
        of = dict(zip((t.name for t in targets), sparsities))
        chosen = [g for g in self.groups if g.lead.name in of]
        return chosen, [of[g.lead.name] for g in chosen]

    def layer_sparsity(self, name: str, sparsity: float | None = None) -> float:
        s = self.sparsity if sparsity is None else sparsity
        if self.config.sparsity == 0:
            return 0.0
        return min(self.config.max_layer_sparsity, s * self.budgets[name])

    # ---- lifecycle ----------------------------------------------------------------------------
    def hook_recompute(self) -> None:
        """Masks that can recompute their output (``Mask.recomputable``) are not kept alive from
        forward to backward (pdp/kernels/recompute.py) when the targets' weights take at least
        ``kernels.recompute_min_bytes``; attach calls this, finalize and remove undo it."""
        weights = sum(self.original(t).numel() * self.original(t).element_size() for t in self.targets)
        if not self.kernels.recompute or weights < self.kernels.recompute_min_bytes:
            return
        # HF models flag activation checkpointing on the modules that do it (the flag exists from
        # construction, False until gradient_checkpointing_enable); its saved-tensor hooks must win.
        flagged = [m for m in self.model.modules() if isinstance(getattr(m, "gradient_checkpointing", None), bool)]

        def checkpointing() -> bool:
            return any(m.gradient_checkpointing for m in flagged)

        for t in self.targets:
            mask = self.mask_of(t)
            if mask.recomputable:
                self._recompute.append(RecomputeHooks(t.module, mask, self.original(t), skip=checkpointing))

    @property
    def recomputing(self) -> bool:
        """Whether masked weights are recomputed in backward rather than kept from forward."""
        return bool(self._recompute)

    def _unhook_recompute(self) -> None:
        for h in self._recompute:
            h.remove()
        self._recompute = []

    def set_sparsity(self, sparsity: float) -> None:
        """Move every target to ``sparsity`` (global meaning) and recompute the masks."""
        if not (0.0 <= sparsity < 1.0):
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        if self.one_shot:
            return  # pruned once at attach; the schedule does not apply
        self.sparsity = float(sparsity)
        self.refresh()

    def set_step(self, step: int) -> None:
        """Where the run is: ``step`` optimizer steps done (the schedule moves the driver with this)."""
        self.steps = int(step)

    def step(self) -> None:
        """Call once after each optimizer step: the masks follow the updated weights."""
        self.steps += 1
        if not self.one_shot:
            self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        self.update_all(self.targets, [self.layer_sparsity(t.name) for t in self.targets])

    @torch.no_grad()
    def finalize(self) -> nn.Module:
        """Bake hard masks: exact zeros, plain modules, original state_dict keys.  Under FSDP2 every
        rank writes the zeros into its own shard and the parametrizations stay, as the identity
        (FSDP holds the parameters inside them); ``pdp_gpt2.fsdp.gather_plain_model`` then gives
        the plain model."""
        self._unhook_recompute()
        keeps = self.final_keeps()
        for g in self.groups:  # a pruned unit's bias entries go with it
            for m in g.members:
                if m.bias is not None:
                    unit = m.slot.any(keeps[m.target.name])
                    m.target.module.bias.masked_fill_(~m.bias.spread(unit, m.target.module.bias.shape), 0.0)
        for t in self.targets:
            mask, part = self.mask_of(t), self.part(t)
            final = mask.final_local(part, keeps[t.name])
            if part.shard is not None:
                self.original(t).to_local().copy_(final)
                mask.to_identity()
            else:
                parametrize.remove_parametrizations(t.module, "weight", leave_parametrized=False)
                t.module.weight.copy_(final)
        self.targets, self.groups = [], []
        return self.model

    @torch.no_grad()
    def final_keeps(self) -> dict[str, torch.Tensor]:
        """Each target's keep-mask (of this process's rows) for finalize: its mask's own by default."""
        return {t.name: self.mask_of(t).final_keep(self.part(t)) for t in self.targets}

    @torch.no_grad()
    def remove(self) -> nn.Module:
        """Inverse of attach: drop the masks and restore the dense weights as they are (under FSDP2
        the masks stay but become the identity: removing a parametrization would pull the parameter
        out from under FSDP)."""
        self._unhook_recompute()
        for t in self.targets:
            if self.part(t).shard is not None:
                self.mask_of(t).to_identity()
            else:
                parametrize.remove_parametrizations(t.module, "weight", leave_parametrized=False)
        self.targets, self.groups = [], []
        return self.model

    # ---- introspection ------------------------------------------------------------------------
    @torch.no_grad()
    def masks(self) -> dict[str, torch.Tensor]:
        """Current masks by module name, each the shape of its weight."""
        return {t.name: self.mask_of(t).soft_mask(self.original(t)) for t in self.targets}

    @torch.no_grad()
    def stats(self) -> dict:
        """Per-layer target sparsity, hard sparsity and soft band, from the current masks.

        "hard" is the fraction of entries below their threshold (m < 0.5): the zeros
        a finalize would make right now.  "band" is the fraction with 0.05 < m < 0.95
        (always 0 for a hard 0/1 mask).  Cheap enough to call at every log step (no sort,
        one host transfer for every target; under FSDP2 one all-reduce sums the shards' counts).
        """
        lo, hi = M.BAND
        rows, parts = [], []
        for t in self.targets:
            part = self.part(t)
            m = self.mask_of(t).local_soft_mask(part)
            rows.append(torch.stack([(m < 0.5).sum(), ((m > lo) & (m < hi)).sum(), m.sum()]).double())
            parts.append(part)
        counts = sharded.all_reduce(torch.stack(rows), parts[0].group).tolist() if rows else []
        layers, total, zeros, band, msum = {}, 0, 0, 0, 0.0
        for t, part, (z, b, s) in zip(self.targets, parts, counts):
            n = int(torch.Size(part.shape).numel())
            z, b = int(z), int(b)
            layers[t.name] = {"target": self.layer_sparsity(t.name), "hard": z / n, "band": b / n,
                              "mean_mask": s / n, "numel": n}
            total, zeros, band, msum = total + n, zeros + z, band + b, msum + s
        total = max(total, 1)
        return {"sparsity_target": self.sparsity, "sparsity_hard": zeros / total, "band": band / total,
                "mask_mean": msum / total, "layers": layers}

    # ---- checkpointing (mask buffers travel in the model's state_dict) ------------------------
    def state_dict(self) -> dict:
        return {"sparsity": self.sparsity, "steps": self.steps, "budgets": dict(self.budgets),
                "method": self.method, "config": self.config.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.budgets = {k: float(v) for k, v in state["budgets"].items()}
        self.steps = int(state["steps"])
        if self.one_shot:
            return
        if self.keeps_history:  # the masks come back with the checkpoint's weights and buffers
            self.sparsity = float(state["sparsity"])
        else:
            self.set_sparsity(float(state["sparsity"]))


@torch.no_grad()
def global_budgets(weights: dict[str, torch.Tensor], sparsity: float, cap: float = 1.0) -> dict[str, float]:
    """Per-tensor share of the global target from one magnitude ranking over all tensors.

    Returns b_l = (fraction of tensor l below the global threshold) / sparsity, so a
    tensor's sparsity at global level s is s * b_l (exact at s = sparsity; the
    weighted mean of b_l is 1).  No tensor goes past ``cap`` (max_layer_sparsity): a tensor
    the ranking would prune further is held at the cap and the rest of the target is ranked
    again over the others, so the weighted mean stays 1 (clipping alone ended a 0.98 run at
    0.978).
    """
    if sparsity == 0:
        return {k: 1.0 for k in weights}
    mags = {k: w.detach().abs().reshape(-1).float().cpu() for k, w in weights.items()}
    total = M.num_pruned(sum(m.numel() for m in mags.values()), sparsity)
    capped: set = set()
    while True:  # each round caps at least one more tensor or ends: at most len(weights) rounds
        free = [k for k in mags if k not in capped]
        k_free = total - sum(M.num_pruned(mags[k].numel(), cap) for k in capped)
        fracs = {k: 0.0 for k in free}
        if free and k_free > 0:
            flat = torch.cat([mags[k] for k in free])
            t = M.threshold(flat, min(k_free, flat.numel()))
            fracs = {k: float((mags[k] < t).float().mean()) for k in free}
        over = {k for k in free if fracs[k] > cap}
        if not over:
            break
        capped |= over
    fracs.update({k: cap for k in capped})
    return {k: fracs[k] / sparsity for k in mags}
