"""Variant labels: how the report names a run ('pdp', 'pdp+improved', 'gmp+distill',
'pdp@tau=0.05'), from its summary alone, so a label means the same in every report."""
from __future__ import annotations

from functools import lru_cache

from pdp_gpt2.pdp.core import registry
from pdp_gpt2.report import methods
from pdp_gpt2.report.methods import SHIPPED

# Variant labels name what differs from plain constant-tau PDP at tau 0.02 (the reference every
# earlier run and the tau grid use), not from whatever the shipped default is today: a label must
# mean the same thing in a report of old runs and of new ones.  So an annealed run is
# 'pdp+tau-exp' (its start tau is in its config) and a constant one at tau 0.05 'pdp@tau=0.05'.
DEFAULT_TAU = 0.02
DEFAULT_TAU_SCHEDULE = "constant"


def variant(s: dict) -> str:
    """'pdp', 'pdp+improved', 'gmp+q8', 'gmp+distill', ...: the method plus the extensions that change it.
    Which extensions apply is the method's capability (its MethodSpec), not its name."""
    method = s.get("method", "?")
    spec = methods.spec(method)
    cfg = s.get("config") or {}
    distilled = ["distill"] if (cfg.get("distill") or 0) > 0 else []  # --distill: any method, dense too
    if not spec.prunes:
        return "+".join([method, *distilled])
    p = cfg.get("pdp") or {}
    parts = [method]
    if spec.uses_tau and p.get("improved_masking"):  # improved masking reshapes the tau-scaled soft mask
        parts.append("improved")
    if spec.uses_tau and p.get("tau_mode") == "absolute":
        parts.append("abs-tau")
    if p.get("quantize"):
        parts.append(f"q{p.get('bits', 8)}")
    if spec.soft and cfg.get("custom_optimizer"):  # scales by the mask: a no-op under hard 0/1 masks
        parts.append("maskopt")
    sched = p.get("tau_schedule") or "constant"  # older summaries have no schedule: constant tau
    if spec.uses_tau and sched != DEFAULT_TAU_SCHEDULE:
        parts.append(f"tau-{sched}")
    if p.get("allocation") == "global":
        parts.append("global")
    if p.get("pattern", "unstructured") != "unstructured":
        parts.append(p["pattern"])
    defaults = registry.shipped_defaults()
    parts += [str(p[o]) for o in spec.options if p.get(o) is not None and p[o] != defaults.get(o)]  # 'wanda+tensor'
    return "+".join(parts + distilled)



def with_tau(family: str, tau) -> str:
    """The family, plus '@tau=X' for a run of a method with tau whose constant tau is not the default
    (a tau schedule names its variant; its start tau is in its config)."""
    if methods.spec(methods.method_of(family)).uses_tau and tau and abs(tau - DEFAULT_TAU) > 1e-12 \
            and "tau-" not in family:
        return f"{family}@tau={tau:g}"
    return family


@lru_cache(maxsize=1)
def shipped_label() -> str:
    """The label of a run of the shipped method with its default settings ('pdp+tau-exp' while the
    default anneals tau): what the findings compare when a benchmark has no constant-tau pdp runs."""
    defaults = registry.shipped_defaults()
    return with_tau(variant({"method": SHIPPED, "config": {"pdp": defaults}}), defaults.get("tau"))
