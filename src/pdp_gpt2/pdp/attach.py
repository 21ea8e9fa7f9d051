"""The one entry point: ``attach(model, method, config)`` -> a mask driver (methods: pdp/registry.py).

``attach`` puts the method's parametrization on every target weight, with
torch.nn.utils.parametrize's side effects: the module's class becomes ``ParametrizedConv1D`` etc.,
state_dict keys move to ``...parametrizations.weight.original``, and the model can't be pickled.
``finalize`` bakes hard masks in and undoes all of that (state_dict keys equal a fresh model's);
``remove`` is the inverse of ``attach`` that restores the dense weights untouched.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn.utils import parametrize

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp import registry
from pdp_gpt2.pdp.config import PDPConfig
from pdp_gpt2.pdp.driver import MaskDriver, global_budgets  # noqa: F401  (re-exported)
from pdp_gpt2.pdp.fused import KernelOptions
from pdp_gpt2.pdp.param import PDPMask
from pdp_gpt2.pdp.targets import Target, find_targets


class Pruner(MaskDriver):
    """PDP: soft masks from each weight's own magnitude, thresholds refreshed after every step."""

    description = ("Parameter-free Differentiable Pruning (PDP; Cho, Adya, Naik, NeurIPS 2023, arXiv:2305.11203) "
                   "while fine-tuning: soft masks from each weight's magnitude, sparsity on a schedule, "
                   "exact zeros at the end")

    def make_mask(self, t: Target) -> nn.Module:
        c = self.config
        return PDPMask(t.module.weight.shape, t.out_dim, pattern=self.pattern, tau=c.tau, tau_mode=c.tau_mode,
                       beta=c.beta if c.improved_masking else None, bits=c.bits if c.quantize else None,
                       kernels=self.kernels)

    def update(self, t: Target, sparsity: float) -> None:
        self.update_all([t], [sparsity])

    def update_all(self, targets: list[Target], sparsities: list[float]) -> None:
        """Every target's threshold in one batched selection (pdp/select.py: one host transfer in a
        steady state, however many targets; the same code on shards)."""
        masks = [self.mask_of(t) for t in targets]
        ks = [m._k(s) for m, s in zip(masks, sparsities)]
        ts, hints, positive = self.pattern.thresholds([self.part(t) for t in targets], ks,
                                                      [m._hint for m in masks], self.kernels)
        for m, s, t, h, pos in zip(masks, sparsities, ts, hints, positive):
            m.set_threshold(s, t, h, pos)

    def set_tau(self, tau: float) -> None:
        """Soft-mask temperature of every target (the tau schedule calls this).  Each mask reads
        its ``tau`` at every forward; thresholds do not depend on it, so nothing is recomputed."""
        if not (0.0 < tau < float("inf")):
            raise ValueError(f"tau must be finite and > 0, got {tau}")
        for t in self.targets:
            self.mask_of(t).tau = float(tau)


def method_description(method: str) -> str:
    """One line about a registered method, for people (model cards, reports)."""
    cls = registry.get(method).driver_class()
    if cls is None:
        return "no pruning: dense fine-tuning only"
    return cls.description or (cls.__doc__ or method).strip().splitlines()[0]


def driver_class(spec: registry.MethodSpec) -> type[MaskDriver] | None:
    """``spec``'s driver class, or a UsageError naming the method when a plugin's driver cannot be
    imported or is not a MaskDriver (found before any work, not when the masks go on)."""
    try:
        cls = spec.driver_class()
    except (ImportError, AttributeError) as e:
        raise UsageError(f"method {spec.name!r}: its driver {spec.driver!r} cannot be loaded "
                         f"({type(e).__name__}: {e})") from None
    if cls is not None and not (isinstance(cls, type) and issubclass(cls, MaskDriver)):
        raise UsageError(f"method {spec.name!r}: its driver {spec.driver!r} is not a MaskDriver subclass "
                         "(pdp_gpt2.pdp.driver.MaskDriver)")
    return cls


def check_fit(model: nn.Module, method: str, config: PDPConfig) -> list[Target]:
    """Everything about ``model``'s shapes that ``attach`` would refuse late, refused now in one line: the
    method's driver loads, the targets exist, and the pattern fits every target weight.  Returns the targets
    ([] for a method without masks)."""
    try:
        spec = registry.get(method)
    except KeyError:
        raise UsageError(f"unknown method {method!r}; choose from {', '.join(registry.names())}") from None
    if driver_class(spec) is None:
        return []
    targets = find_targets(model, config.targets)
    pattern = config.mask_pattern
    for t in targets:
        pattern.check_shape(t.name, t.module.weight.shape, t.out_dim)
    return targets


def method_record(method: str, config: PDPConfig) -> dict:
    """The method's own entry of pdp_pruning.json (``MaskDriver.record``): {} for a method without masks."""
    cls = registry.get(method).driver_class()
    record = getattr(cls, "record", None)  # a plugin's driver need not derive from MaskDriver
    return record(config) if callable(record) else {}


def attach(model: nn.Module, method: str | PDPConfig = "pdp", config: PDPConfig | None = None, *,
           calibration: torch.Tensor | None = None, kernels: KernelOptions | None = None,
           **overrides) -> MaskDriver | None:
    """Put ``method``'s masks on every target weight of ``model``; returns the driver (None for "dense").

    ``attach(model, cfg)`` is ``attach(model, "pdp", cfg)``.  ``calibration``: token blocks
    (n, length) for methods that need data (wanda).  ``kernels``: how PDP's kernels run.
    ``overrides`` are PDPConfig fields.  The model stays a normal HF model (same forward,
    same class API).
    """
    if isinstance(method, PDPConfig):
        if config is not None:
            raise TypeError("attach(model, config) or attach(model, method, config), not both configs")
        method, config = "pdp", method
    try:
        spec = registry.get(method)
    except KeyError:
        raise UsageError(f"unknown method {method!r}; choose from {', '.join(registry.names())}") from None
    if config is None:
        config = PDPConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    driver_cls = driver_class(spec)
    if driver_cls is None:
        return None
    targets = check_fit(model, method, config)
    for t in targets:
        if parametrize.is_parametrized(t.module, "weight"):
            raise ValueError(f"{t.name}.weight already has a parametrization (attached twice?)")
    driver = driver_cls(model, config, targets, kernels=kernels)
    driver.method, driver.spec = method, spec
    if config.allocation == "global":  # from the dense weights, before a method's prepare may change them
        driver.budgets = global_budgets({t.name: t.module.weight for t in targets}, config.sparsity,
                                        config.max_layer_sparsity)
    driver.prepare(calibration)  # before any mask: the weights are still plain
    for t in targets:
        parametrize.register_parametrization(t.module, "weight", driver.make_mask(t).to(t.module.weight.device))
    driver.hook_recompute()
    driver.start()
    return driver


def attach_baseline(model: nn.Module, method: str, config: PDPConfig | None = None, *,
                    calibration: torch.Tensor | None = None, **overrides) -> MaskDriver:
    """``attach(model, method, config, calibration=...)``: the name from before the method registry."""
    return attach(model, method, config, calibration=calibration, **overrides)


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
