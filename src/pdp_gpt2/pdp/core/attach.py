"""The one entry point: ``attach(model, method, config)`` -> a mask driver (methods: pdp/core/registry.py).

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
from pdp_gpt2.pdp.core import registry
from pdp_gpt2.pdp.core.config import PDPConfig
from pdp_gpt2.pdp.core.driver import MaskDriver, global_budgets  # noqa: F401  (re-exported)
from pdp_gpt2.pdp.core.targets import find_targets
from pdp_gpt2.pdp.kernels.fused import KernelOptions


def method_description(method: str) -> str:
    """One line about a registered method, for people (model cards, reports)."""
    cls = registry.get(method).driver_class()
    if cls is None:
        return "no pruning: dense fine-tuning only"
    return cls.description or (cls.__doc__ or method).strip().splitlines()[0]


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
    driver_cls = spec.driver_class()
    if driver_cls is None:
        return None
    targets = find_targets(model, config.targets)
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
