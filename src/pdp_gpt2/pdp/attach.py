"""The PDP lifecycle on a model: attach -> set_sparsity / step -> finalize (or remove).

``attach`` registers a :class:`PDPMask` parametrization on every target weight.
Side effects worth knowing (they are torch.nn.utils.parametrize's):
the module's class becomes ``ParametrizedConv1D`` etc., state_dict keys move to
``...parametrizations.weight.original``, and the model can't be pickled.
``finalize`` bakes hard masks in and undoes all of that, so the result is a plain
HF model whose state_dict keys equal a fresh model's; ``remove`` is the inverse
of ``attach`` that restores the dense weights untouched.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn.utils import parametrize

from pdp_gpt2.pdp.config import PDPConfig
from pdp_gpt2.pdp import mask as M
from pdp_gpt2.pdp.param import PDPMask
from pdp_gpt2.pdp.targets import Target, find_targets


class MaskDriver:
    """What every mask driver shares (PDP here, the hard-mask baselines in baselines.py):
    access to each target's parametrization, per-layer sparsity, finalize and remove."""

    def __init__(self, model: nn.Module, config: PDPConfig, targets: list[Target]):
        self.model, self.config, self.targets = model, config, targets
        self.sparsity = 0.0
        self.steps = 0
        # Fraction of the global target each tensor takes (1.0 each under 'layer').
        self.budgets: dict[str, float] = {t.name: 1.0 for t in targets}

    def mask_of(self, t: Target) -> nn.Module:
        return t.module.parametrizations.weight[0]

    def original(self, t: Target) -> nn.Parameter:
        return t.module.parametrizations.weight.original

    def layer_sparsity(self, name: str, sparsity: float | None = None) -> float:
        s = self.sparsity if sparsity is None else sparsity
        if self.config.sparsity == 0:
            return 0.0
        return min(self.config.max_layer_sparsity, s * self.budgets[name])

    @torch.no_grad()
    def finalize(self) -> nn.Module:
        """Bake hard masks: exact zeros, plain modules, original state_dict keys."""
        for t in self.targets:
            final = self.mask_of(t).final_weight(self.original(t))
            parametrize.remove_parametrizations(t.module, "weight", leave_parametrized=False)
            t.module.weight.copy_(final)
        self.targets = []
        return self.model

    @torch.no_grad()
    def remove(self) -> nn.Module:
        """Inverse of attach: drop the masks and restore the dense weights as they are."""
        for t in self.targets:
            parametrize.remove_parametrizations(t.module, "weight", leave_parametrized=False)
        self.targets = []
        return self.model

    @torch.no_grad()
    def masks(self) -> dict[str, torch.Tensor]:
        """Current masks by module name, each the shape of its weight."""
        return {t.name: self.mask_of(t).soft_mask(self.original(t)) for t in self.targets}


class Pruner(MaskDriver):
    """State of one PDP run on one model: targets, per-layer budgets, current sparsity."""

    # ---- lifecycle -----------------------------------------------------------------
    def set_sparsity(self, sparsity: float) -> None:
        """Move every target to ``sparsity`` (global meaning) and refresh thresholds."""
        if not (0.0 <= sparsity < 1.0):
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        self.sparsity = float(sparsity)
        self.refresh()

    def step(self) -> None:
        """Call once after each optimizer step: thresholds follow the updated weights."""
        self.steps += 1
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        for t in self.targets:
            self.mask_of(t).refresh(self.original(t), self.layer_sparsity(t.name))

    # ---- introspection ---------------------------------------------------------------
    @torch.no_grad()
    def stats(self) -> dict:
        """Per-layer target sparsity, hard sparsity and soft band, from the current masks.

        "hard" is the fraction of entries below their threshold (m < 0.5): the zeros
        a finalize would make right now.  "band" is the fraction with 0.05 < m < 0.95.
        Cheap enough to call at every log step (no sort).
        """
        lo, hi = M.BAND
        layers, total, zeros, band, msum = {}, 0, 0, 0, 0.0
        for t in self.targets:
            m = self.mask_of(t).soft_mask(self.original(t))
            n = m.numel()
            z = int((m < 0.5).sum())
            b = int(((m > lo) & (m < hi)).sum())
            s = float(m.sum())
            layers[t.name] = {"target": self.layer_sparsity(t.name), "hard": z / n, "band": b / n,
                              "mean_mask": s / n, "numel": n}
            total, zeros, band, msum = total + n, zeros + z, band + b, msum + s
        total = max(total, 1)
        return {"sparsity_target": self.sparsity, "sparsity_hard": zeros / total, "band": band / total,
                "mask_mean": msum / total, "layers": layers}

    # ---- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"sparsity": self.sparsity, "steps": self.steps, "budgets": dict(self.budgets),
                "config": self.config.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.budgets = {k: float(v) for k, v in state["budgets"].items()}
        self.steps = int(state["steps"])
        self.set_sparsity(float(state["sparsity"]))


@torch.no_grad()
def global_budgets(weights: dict[str, torch.Tensor], sparsity: float) -> dict[str, float]:
    """Per-tensor share of the global target from one magnitude ranking over all tensors.

    Returns b_l = (fraction of tensor l below the global threshold) / sparsity, so a
    tensor's sparsity at global level s is s * b_l (exact at s = sparsity; the
    weighted mean of b_l is 1).
    """
    if sparsity == 0:
        return {k: 1.0 for k in weights}
    flat = torch.cat([w.detach().abs().reshape(-1).float().cpu() for w in weights.values()])
    t = M.threshold(flat, M.num_pruned(flat.numel(), sparsity))
    return {k: float((w.detach().abs().float() < t).float().mean()) / sparsity for k, w in weights.items()}


def attach(model: nn.Module, config: PDPConfig | None = None, **overrides) -> Pruner:
    """Put PDP soft masks on every target weight of ``model`` at ``config.sparsity``.

    The model stays a normal HF model (same forward, same class API).  Returns the
    :class:`Pruner` that drives the masks.  ``overrides`` are PDPConfig fields.
    """
    if config is None:
        config = PDPConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    targets = find_targets(model, config.targets)
    for t in targets:
        if parametrize.is_parametrized(t.module, "weight"):
            raise ValueError(f"{t.name}.weight already has a parametrization (attached twice?)")
    beta = config.beta if config.improved_masking else None
    bits = config.bits if config.quantize else None
    pruner = Pruner(model, config, targets)
    if config.allocation == "global":
        pruner.budgets = global_budgets({t.name: t.module.weight for t in targets}, config.sparsity)
    for t in targets:
        w = t.module.weight
        p = PDPMask(w.shape, t.out_dim, pattern=config.pattern, nm=config.nm, tau=config.tau,
                    tau_mode=config.tau_mode, beta=beta, bits=bits).to(w.device)
        parametrize.register_parametrization(t.module, "weight", p)
    pruner.set_sparsity(config.sparsity)
    return pruner


@torch.no_grad()
def sparsity_report(model: nn.Module, targets: list[str] | None = None) -> dict:
    """Fraction of exact zeros in each target weight and over all of them.

    Reads the weights as the model computes them (``module.weight``), so on a
    finalized model it counts the zeros that will be saved.
    """
    layers, total, zeros = {}, 0, 0
    for t in find_targets(model, targets):
        w = t.module.weight
        z = int((w == 0).sum())
        layers[t.name] = {"zeros": z, "numel": w.numel(), "sparsity": z / w.numel()}
        total, zeros = total + w.numel(), zeros + z
    return {"sparsity": zeros / max(total, 1), "zeros": zeros, "numel": total, "layers": layers}
