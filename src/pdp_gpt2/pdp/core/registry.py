"""The method registry: every pruning method by name, with the capabilities it declares.

No torch and nothing of the core is imported, so the config schemas, the report and ``sweep`` can
ask about methods without loading a model stack; a driver class is named as ``"module:attr"`` and
loaded on first use (:meth:`MethodSpec.driver_class`). Everything outside this module asks the
spec (calibration, trainable state, soft or hard, schedule, tau), never compares
a method's name. Third-party methods register through the entry-point group ``pdp_gpt2.methods``
(docs/architecture.md, "Methods as plugins"), found without importing them (:func:`names`); in
one process, :func:`register` adds a spec directly.
"""
from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from pdp_gpt2.errors import UsageError

ENTRY_POINT_GROUP = "pdp_gpt2.methods"


class PluginError(UsageError):
    """An installed method plugin that cannot be used; the message is one line naming its package."""


# A colour hint's form (whether matplotlib can draw a name is the report's to find out).
_COLOUR_HINT = re.compile(r"|#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})|(?:[a-z]+:)?[a-z][a-z ]*")


@dataclass(frozen=True)
class MethodSpec:
    """A pruning method and what it can do.  The driver owns the masks (pdp/core/driver.py)."""

    name: str
    # "module:attr" of the MaskDriver subclass (or the class itself); None: no masks at all (dense)
    driver: object = None
    # Styling hints for the report, which owns labels, palettes and fallbacks (report/methods.py,
    # report/style.py): how titles name it, and a colour ("#rrggbb" or a matplotlib name).  Optional.
    label: str = ""
    colour: str = ""
    soft: bool = False  # the mask is differentiable (gradient through it) rather than 0/1
    gradual: bool = False  # follows the sparsity schedule; False: pruned once at the target
    uses_tau: bool = False  # tau, its schedule and improved masking apply
    calibration: bool = False  # needs calibration token blocks before attach (attach(..., calibration=))
    trainable_state: bool = False  # brings parameters of its own (scores) that the optimizer trains
    # the pattern kinds it can prune ("unstructured", "row", "N:M", "neurons", "heads"); empty: every pattern.
    # Checked when a run is configured, before any work (the driver refuses too, for library callers)
    patterns: tuple = ()
    # the flags only this method reads (Wanda's wanda_groups, its config's own fields): every other
    # method ignores them (ignored_flags: one warning, left out of its record; a sweep may set them for
    # every trial), and the report names a run by the values it changed
    options: tuple = ()
    # "module:attr" of its config class (or the class), a PruningConfig subclass: ``attach`` hands the
    # driver that part of any config it is given.  None: the flat PDPConfig (every built-in setting)
    config: object = None
    summary: str = ""  # one line for people (model cards, --help)
    extras: dict = field(default_factory=dict)  # anything else a plugin wants to declare

    def __post_init__(self) -> None:
        """The styling hints are checked here, when a method (a plugin's too) registers."""
        if not isinstance(self.label, str) or "\n" in self.label:
            raise ValueError(f"method {self.name!r}: label must be one line of text, got {self.label!r}")
        if not isinstance(self.colour, str) or not _COLOUR_HINT.fullmatch(self.colour):
            raise ValueError(f"method {self.name!r}: colour hint {self.colour!r} is neither '#rrggbb' (or "
                             "#rgb, #rrggbbaa) nor a colour name such as 'olive' or 'tab:olive'")

    @property
    def prunes(self) -> bool:
        return self.driver is not None

    def accepts(self, pattern_spec: str) -> bool:
        """Whether this method can prune the pattern a spec names ('2:4' is of kind N:M)."""
        kind = "N:M" if re.fullmatch(r"\s*\d+\s*:\s*\d+\s*", pattern_spec) else pattern_spec
        return not self.patterns or kind in self.patterns

    def check_pattern(self, pattern_spec: str) -> None:
        """A one-line UsageError unless this method can prune the pattern ``pattern_spec`` names."""
        if not self.accepts(pattern_spec):
            raise UsageError(f"method {self.name} prunes only {', '.join(self.patterns)} patterns, not {pattern_spec!r}")

    def ignored_flags(self) -> tuple[str, ...]:
        """The train flags this method does not take: those of every capability it lacks
        (CAPABILITY_FLAGS) and the other methods' own options.  They change nothing in its run, so
        its record leaves them out."""
        out: list[str] = []
        for capability, flags in capability_flags().items():
            if not getattr(self, capability):
                out += [f for f in flags if f not in out]
        others = [o for s in _specs.values() if s.name != self.name for o in s.options if o not in self.options]
        return tuple(out + [o for o in others if o not in out])

    def driver_class(self):
        """The MaskDriver subclass (imported on first call); None for a method without masks."""
        return _load_named(self.driver)

    def config_class(self):
        """Its config class (a PruningConfig subclass; imported on first call, no torch)."""
        return _load_named(self.config or FLAT_CONFIG)


def flat_config_class():
    """PDPConfig, every built-in setting in one class (what the CLI's flags fill)."""
    return _load_named(FLAT_CONFIG)


def _load_named(d):
    """A "module:attr" string's object (imported now), or ``d`` itself."""
    if d is None or not isinstance(d, str):
        return d
    module, _, attr = d.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


# The train flags a capability brings: a method without the capability ignores them.  Pruning brings
# the shared settings (PruningConfig's fields, added by capability_flags) and the mask-aware optimizer.
CAPABILITY_FLAGS: dict[str, tuple[str, ...]] = {
    "prunes": ("custom_optimizer",),
    "gradual": ("schedule", "warmup_epochs", "warmup_steps"),  # the sparsity ramp
    "uses_tau": ("tau", "tau_mode", "tau_schedule", "tau_final", "improved_masking", "beta"),
}


def capability_flags() -> dict[str, tuple[str, ...]]:
    """CAPABILITY_FLAGS with every shared setting (PruningConfig's fields) under ``prunes`` (no torch)."""
    import dataclasses

    from pdp_gpt2.pdp.core.config import PruningConfig  # a plain schema: no torch on import

    shared = tuple(f.name for f in dataclasses.fields(PruningConfig))
    return {**CAPABILITY_FLAGS, "prunes": shared + CAPABILITY_FLAGS["prunes"]}


_CORE = "pdp_gpt2.pdp"
FLAT_CONFIG = f"{_CORE}.config:PDPConfig"  # every built-in setting: what a plugin's driver is given
_SHARED = f"{_CORE}.core.config:PruningConfig"
BUILTIN: tuple[MethodSpec, ...] = (
    MethodSpec("pdp", f"{_CORE}.methods.pdp.driver:Pruner", soft=True, gradual=True,
               uses_tau=True, config=f"{_CORE}.methods.pdp.config:PDPMaskConfig", summary="soft masks from each weight's magnitude (the paper)"),
    MethodSpec("dense", None, summary="fine-tune only, no pruning"),
    MethodSpec("magnitude", f"{_CORE}.methods.magnitude.driver:Magnitude",
               config=_SHARED,
               summary="one-shot |w| at the target, mask frozen"),
    MethodSpec("gmp", f"{_CORE}.methods.gmp.driver:GMP", gradual=True, config=_SHARED,
               summary="gradual magnitude pruning on the schedule"),
    MethodSpec("wanda", f"{_CORE}.methods.wanda.driver:Wanda", calibration=True,
               options=("wanda_groups",), config=f"{_CORE}.methods.wanda.config:WandaConfig", patterns=("unstructured", "row", "N:M"),
               summary="one-shot |w|*||x|| on calibration data, calibrated block by block, compared per output row "
               "as published (--wanda_groups tensor: across the tensor), exactly floor(r n) zeros; mask frozen"),
    MethodSpec("movement", f"{_CORE}.methods.movement.driver:Movement", gradual=True,
               config=_SHARED, trainable_state=True, patterns=("unstructured", "N:M", "neurons", "heads"),
               summary="movement pruning (Sanh et al. 2020): scores learned from -w*dL/dw, top-k on the schedule"),
    MethodSpec("sparsegpt", f"{_CORE}.methods.sparsegpt.driver:SparseGPT", calibration=True,
               options=("sparsegpt_blocksize", "sparsegpt_percdamp"), config=f"{_CORE}.methods.sparsegpt.config:SparseGPTConfig",
               patterns=("unstructured", "N:M"), summary="one-shot SparseGPT on calibration data (weights reconstructed layer by layer), mask frozen"),
)

# The method this package ships (--method's default): the report's findings measure every other
# pruning method against it; the others are its baselines, whoever registered them.
SHIPPED = "pdp"


def shipped_defaults() -> dict:
    """The settings the built-in methods run with when none are given (their config classes' field
    defaults; ``tau_final`` None means the schedule's default, tau / 100).  Read without torch."""
    import dataclasses

    return {f.name: f.default for s in BUILTIN if s.prunes for f in dataclasses.fields(s.config_class())
            if f.default is not dataclasses.MISSING}

_specs: dict[str, MethodSpec] = {s.name: s for s in BUILTIN}
_plugins_loaded: set[str] = set()


def register(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add ``spec`` to this process's registry (a plugin's entry point does this for every process)."""
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"register() takes a MethodSpec, got {type(spec).__name__}")
    if spec.name in _specs and not replace:
        raise ValueError(f"method {spec.name!r} is already registered (pass replace=True to replace it)")
    _specs[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a method registered in this process (built-ins cannot be removed)."""
    if any(s.name == name for s in BUILTIN):
        raise ValueError(f"{name!r} is a built-in method")
    _specs.pop(name, None)
    _plugins_loaded.discard(name)
    _problems.pop(name, None)


_problems: dict[str, str] = {}  # plugin name -> why it cannot be used (a failed import is not retried)
_warned: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        print(f"pdp-gpt2: warning: {msg}", file=sys.stderr, flush=True)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def _origin(ep) -> str:
    """'package foo-plugin 0.1, entry point foo = foo_plugin:SPEC': where a user finds the plugin."""
    dist = getattr(ep, "dist", None)
    return (f"package {dist.name} {dist.version}, " if dist is not None else "") + f"entry point {ep.name} = {ep.value}"


def _entry_points() -> dict:
    out = {}
    builtin = {s.name for s in BUILTIN}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in builtin:  # a built-in's name always means the built-in
            _warn_once(f"method plugin {ep.name!r} ({_origin(ep)}) is ignored: {ep.name!r} is a built-in method")
        else:
            out.setdefault(ep.name, ep)
    return out


def registered() -> list[MethodSpec]:
    """The specs this process holds now: built-ins, registered here, plugins already loaded (none is imported)."""
    return list(_specs.values())


def names() -> list[str]:
    """Every method name: built-ins, registered in this process, and installed plugins (not imported)."""
    return list(dict.fromkeys([*_specs, *_entry_points()]))


def get(name: str) -> MethodSpec:
    """The spec of ``name``; a plugin's entry point is loaded on first use.  KeyError if unknown;
    PluginError (one line naming the plugin's package) if its plugin cannot be used."""
    if name in _specs:
        return _specs[name]
    if name in _problems:
        raise PluginError(_problems[name])
    ep = _entry_points().get(name)
    if ep is None:
        raise KeyError(name)
    try:
        spec = _load(ep)
    except PluginError as e:
        _problems[name] = str(e)
        raise
    _plugins_loaded.add(name)
    return _specs.setdefault(name, spec)


def owner_of(option: str) -> MethodSpec | None:
    """The method (built in, or registered in this process) that declares a setting as its own."""
    return next((s for s in _specs.values() if option in s.options), None)


def _load(ep) -> MethodSpec:
    try:  # a plugin's own bug must not take the other methods down: any exception is its failure
        spec = ep.load()
        if callable(spec) and not isinstance(spec, MethodSpec):
            spec = spec()
    except Exception as e:
        raise PluginError(f"method plugin {ep.name!r} ({_origin(ep)}) failed to load: "
                          f"{type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(spec, MethodSpec):
        raise PluginError(f"method plugin {ep.name!r} ({_origin(ep)}) is refused: it names a "
                          f"{type(spec).__name__}, not a MethodSpec")
    if spec.name != ep.name:
        raise PluginError(f"method plugin {ep.name!r} ({_origin(ep)}) is refused: its MethodSpec is called "
                          f"{spec.name!r}; the entry point's name and the spec's must be the same")
    return spec


def all_specs() -> list[MethodSpec]:
    """Every method's spec (plugins imported); a plugin that cannot be used is left out, in one warning line."""
    out = []
    for n in names():
        try:
            out.append(get(n))
        except PluginError as e:
            _warn_once(str(e))
    return out
