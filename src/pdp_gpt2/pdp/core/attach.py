"""The one entry point: ``attach(model, method, config)`` -> a mask driver (methods: pdp/core/registry.py).

``attach`` puts the method's parametrization on every target weight, with
torch.nn.utils.parametrize's side effects: the module's class becomes ``ParametrizedConv1D`` etc.,
state_dict keys move to ``...parametrizations.weight.original``, and the model can't be pickled.
``finalize`` bakes hard masks in and undoes all of that (state_dict keys equal a fresh model's);
``remove`` is the inverse of ``attach`` that restores the dense weights untouched.
"""
from __future__ import annotations

import dataclasses
import warnings

import torch
from torch import nn
from torch.nn.utils import parametrize

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.core import registry
from pdp_gpt2.pdp.core.config import PruningConfig
from pdp_gpt2.pdp.core.driver import MaskDriver, global_budgets  # noqa: F401  (re-exported)
from pdp_gpt2.pdp.core.groups import group
from pdp_gpt2.pdp.core.mask import Mask
from pdp_gpt2.pdp.core.targets import Target, find_targets
from pdp_gpt2.pdp.kernels.fused import KernelOptions


def method_description(method: str) -> str:
    """One line about a registered method, for people (model cards, reports)."""
    cls = registry.get(method).driver_class()
    if cls is None:
        return "no pruning: dense fine-tuning only"
    return cls.description or (cls.__doc__ or method).strip().splitlines()[0]


def method_record(method: str, config: PruningConfig) -> dict:
    """The method's own entry of pdp_pruning.json (``MaskDriver.record``): {} for a method without masks."""
    spec = registry.get(method)
    cls = driver_class(spec)
    return {} if cls is None else cls.record(own_config(spec, config))


def method_settings(method: str, config: PruningConfig) -> dict:
    """The settings only ``method`` takes (its config class's own fields), as pdp_pruning.json records them."""
    spec = registry.get(method)
    if not spec.prunes:
        return {}
    own = own_config(spec, config)
    return {k: getattr(own, k) for k in type(own).own_fields()}


def own_config(spec: registry.MethodSpec, config: PruningConfig | None, overrides: dict | None = None) -> PruningConfig:
    """The part of ``config`` (any config: the flat PDPConfig, or another method's) and ``overrides``
    that ``spec``'s method owns, as its config class.  An override only another method takes is
    left out, with a DeprecationWarning (attach(model, "gmp", tau=...) once went into one flat config)."""
    cls = spec.config_class()
    own = {f.name for f in dataclasses.fields(cls)}
    overrides = dict(overrides or {})
    flat = {f.name for f in dataclasses.fields(registry.flat_config_class())}
    if foreign := sorted(k for k in overrides if k not in own and k in flat):
        warnings.warn(f"method {spec.name!r} does not take {', '.join(foreign)}: ignored", DeprecationWarning,
                      stacklevel=3)
        overrides = {k: v for k, v in overrides.items() if k not in foreign}
    if type(config) is cls and not overrides:
        return config
    given = {} if config is None else {k: getattr(config, k) for k in own if hasattr(config, k)}
    return cls(**{**given, **overrides})


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
                         "(pdp_gpt2.pdp.core.driver.MaskDriver)")
    return cls


def check_fit(model: nn.Module, method: str, config: PruningConfig) -> list[Target]:
    """Everything about ``model``'s shapes that ``attach`` would refuse late, refused now in one line: the
    method's driver loads, the targets exist, and the pattern fits every target weight.  Returns the targets
    ([] for a method without masks)."""
    try:
        spec = registry.get(method)
    except KeyError:
        raise UsageError(f"unknown method {method!r}; choose from {', '.join(registry.names())}") from None
    if driver_class(spec) is None:
        return []
    spec.check_pattern(config.pattern)
    pattern = config.mask_pattern
    targets, _ = group(model, pattern, find_targets(model, config.targets), explicit=config.targets is not None)
    for t in targets:
        pattern.check_shape(t.name, t.module.weight.shape, t.out_dim)
    return targets


def attach(model: nn.Module, method: str | PruningConfig = "pdp", config: PruningConfig | None = None, *,
           calibration: torch.Tensor | None = None, kernels: KernelOptions | None = None,
           **overrides) -> MaskDriver | None:
    """Put ``method``'s masks on every target weight of ``model``; returns the driver (None for "dense").

    ``attach(model, cfg)`` is ``attach(model, "pdp", cfg)``.  ``calibration``: token blocks
    (n, length) for methods that need data (wanda).  ``kernels``: how PDP's kernels run.
    ``config``: any config (the flat PDPConfig, or the method's own class); the driver gets the
    method's own part of it and of ``overrides`` (:func:`own_config`).  The model stays a normal HF
    model (same forward, same class API).
    """
    if isinstance(method, PruningConfig):
        if config is not None:
            raise TypeError("attach(model, config) or attach(model, method, config), not both configs")
        method, config = "pdp", method
    try:
        spec = registry.get(method)
    except KeyError:
        raise UsageError(f"unknown method {method!r}; choose from {', '.join(registry.names())}") from None
    driver_cls = driver_class(spec)
    if driver_cls is None:
        return None
    config = own_config(spec, config, overrides)
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
        mask = driver.make_mask(t)
        if not isinstance(mask, Mask):  # the contract the driver and the optimizer read masks through
            raise UsageError(f"method {method!r}: make_mask returned a {type(mask).__name__}, not a Mask "
                             "(pdp_gpt2.pdp.core.mask.Mask)")
        parametrize.register_parametrization(t.module, "weight", mask.to(t.module.weight.device))
    driver.hook_recompute()
    driver.start()
    return driver


def pruned_targets(model: nn.Module, config: PruningConfig) -> list[Target]:
    """The weights ``config`` prunes in ``model`` (a coupled pattern keeps only its structures' members)."""
    pattern = config.mask_pattern
    return group(model, pattern, find_targets(model, config.targets), explicit=config.targets is not None)[0]


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
