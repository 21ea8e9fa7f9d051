"""Fused kernels for the per-step work PDP adds: the masked weight, its gradient, and
the counting pass of threshold selection.

Memory.  Plain autograd of ``w * sigmoid((w^2 * a - b) / tau)`` keeps several
full-size intermediates alive until backward (w^2, z, m, ...).  The Function here
saves only ``w`` (which the parameter holds anyway) and recomputes m in backward, using

    d(w m)/dw = m + w * dm/dz * dz/dw = m + (2 a / tau) * w^2 * dm/dz,

with dm/dz = m (1 - m) for the sigmoid and, for the improved (beta) blend,
0.7 s (1 - s) + 0.15 beta (1 - tanh(beta z)^2).  The math is the same as
:func:`pdp_gpt2.pdp.mask.soft_mask`; tests check both value and gradient.

a, b are 0-d tensors: (1/t^2, 1) in relative mode, (1, t^2) in absolute mode,
so z = (w^2 a - b) / tau covers both without a host sync.

Time.  Both directions are memory-bound: read w (and the incoming gradient),
write one tensor.  These things made a PDP step cost far more than that:

* Eager PyTorch runs each elementwise op as its own pass (about six forward,
  ten backward).  On large tensors we run a ``torch.compile``'d version of the
  same expression instead: one loop, one pass.  Small tensors (test models, tiny
  configs) stay eager, where compiling would cost more than it saves.  If
  compiling is unavailable or fails (no C++ compiler, no Triton, an unsupported
  platform) we warn once and stay eager for the rest of the process;
  ``PDP_GPT2_COMPILE=0`` turns it off up front.
* Fresh memory.  A new tensor of GPT-2's 85M masked weights is 340 MB of pages
  the kernel must fault in and zero on first touch, every step, which on CPU
  cost as much as the arithmetic.  So the masked weight is written into a
  buffer kept per parameter (:class:`OutBuffer`) and reused whenever nothing
  else still holds the previous one, and the gradient is computed in place in
  the incoming gradient when this backward is its only user.  Both checks are
  reference counts; whenever they fail we allocate, as before.
* Subnormal optimizer state: gradients too small to square are flushed to 0
  (:func:`underflow_level`), which leaves the trained weights the same.
* Thresholds: see ``mask.abs_threshold`` (the counting kernel lives here).

Inside a caller's own ``torch.compile`` none of this runs: the masked weight is
then plain differentiable ops, which that compiler fuses itself.
"""
from __future__ import annotations

import math
import os
import sys
import warnings

import torch

# Tensors smaller than this run eager (GPT-2 small's smallest target has 589,824 entries).
COMPILE_MIN_NUMEL = 1 << 18
# Threshold selection counts entries per block of this many (see mask.abs_threshold).
BLOCK = 256

_compiled: dict = {}
_OFF = ("0", "false", "no", "off")
_compile_ok = os.environ.get("PDP_GPT2_COMPILE", "1").strip().lower() not in _OFF
_flush_ok = os.environ.get("PDP_GPT2_FLUSH", "1").strip().lower() not in _OFF
_reuse_ok = os.environ.get("PDP_GPT2_REUSE", "1").strip().lower() not in _OFF


def _fast(name: str, expr, eager, *args):
    """``expr(*args)`` compiled when worthwhile, else ``eager(*args)`` (same values).

    ``args[0]`` is a flat contiguous tensor; the others are tensors of its size,
    0-d tensors, or Python floats (compiled as inputs, not constants).
    """
    global _compile_ok
    if not _compile_ok or args[0].numel() < COMPILE_MIN_NUMEL:
        return eager(*args)
    fn = _compiled.get(name)
    if fn is None:
        fn = _compiled[name] = torch.compile(expr, dynamic=True, fullgraph=True)
    try:
        return fn(*args)
    except Exception as e:  # compile-time failures surface at the first call
        _compile_ok = False
        warnings.warn(f"pdp_gpt2: torch.compile of the PDP kernels failed ({type(e).__name__}: {e}); "
                      "using eager kernels (slower, same results)", RuntimeWarning, stacklevel=2)
        return eager(*args)


# ---- who else holds a tensor? -----------------------------------------------------------


def _storage_refs(t: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


# Reference counts of a tensor nobody else holds, measured once by _measure_bases().
# -1 means "unknown": never reuse, never overwrite (the private APIs these counts
# come from are missing, or the probe could not run).
_BASE = {"storage": -1, "use": -1, "python": -1}
_measured = False
# How often each path was taken (tests check that the memory-saving ones are).
counts = {"out_reused": 0, "out_fresh": 0, "grad_in_place": 0, "grad_copied": 0}


def _measure_bases() -> None:
    global _measured
    if _measured:
        return
    _measured = True
    if not _reuse_ok:  # PDP_GPT2_REUSE=0: baselines stay unknown, so nothing is reused or overwritten
        return
    try:
        _BASE["storage"] = _storage_refs(torch.empty(1))
        with torch.inference_mode(False), torch.enable_grad():
            w = torch.zeros(2, requires_grad=True)
            (torch.ones(1, 2) @ _Probe.apply(w)).sum().backward()
    except Exception:  # an older or newer torch without these internals: just allocate
        _BASE.update(storage=-1, use=-1, python=-1)


class _Probe(torch.autograd.Function):
    """Measures the reference counts of a gradient inside a backward when no hook or
    other code holds it, along the same call path as SoftMaskedWeight.backward."""

    @staticmethod
    def forward(ctx, w):
        return w.clone()

    @staticmethod
    def backward(ctx, grad):
        _grad_is_ours(grad, None, probe=True)
        return grad


class OutBuffer:
    """Per-parameter storage for the masked weight, reused while nobody else holds it.

    Autograd keeps the masked weight (matmul saves it for its backward) until the
    backward is done, and a caller may keep ``module.weight``; each holds a reference
    to the storage.  Only when the count is back to ours alone is it overwritten.
    """

    def __init__(self):
        self.tensor: torch.Tensor | None = None

    def take(self, like: torch.Tensor) -> torch.Tensor:
        t = self.tensor
        usable = (t is not None and t.shape == like.shape and t.dtype == like.dtype
                  and t.device == like.device and t.is_inference() == torch.is_inference_mode_enabled())
        if usable and _BASE["storage"] > 0 and _storage_refs(t) <= _BASE["storage"]:
            counts["out_reused"] += 1
            return t
        counts["out_fresh"] += 1
        fresh = torch.empty_like(like, memory_format=torch.contiguous_format)
        if not usable:
            self.tensor = fresh
        return fresh


def _grad_is_ours(grad: torch.Tensor, like: torch.Tensor | None, probe: bool = False) -> bool:
    """Whether ``grad`` may be overwritten: no other tensor, graph node or Python name holds it.

    Call it straight from ``backward``: the Python reference count it reads depends
    on the call path, and _Probe records the baseline through this same function.
    """
    if probe:
        _BASE["use"], _BASE["python"] = grad._use_count(), sys.getrefcount(grad)
        return False
    return (_BASE["python"] > 0 and grad.dtype == like.dtype and grad.device == like.device
            and grad.is_contiguous() and not grad._is_view() and not grad.is_inference()
            and grad._use_count() <= _BASE["use"] and _storage_refs(grad) <= _BASE["storage"]
            and sys.getrefcount(grad) <= _BASE["python"])


# ---- the masked weight ----------------------------------------------------------------


def _mask_and_slope(w, a, b, tau: float, beta: float | None):
    z = (w * w * a - b) / tau
    s = torch.sigmoid(z)
    if beta is None:
        return s, s * (1 - s)
    th = torch.tanh(beta * z)
    return 0.7 * s + 0.15 * (th + 1), 0.7 * s * (1 - s) + 0.15 * beta * (1 - th * th)


def _local_grad(w, a, b, tau: float, beta: float | None):
    m, slope = _mask_and_slope(w, a, b, tau, beta)
    return m + (2.0 / tau) * a * (w * w) * slope


def underflow_level(dtype: torch.dtype) -> float:
    """Gradient entries smaller than this in magnitude are returned as 0 (see below).

    A pruned weight's gradient is its upstream gradient times m ~ sigmoid(-1/tau)
    (e^-50 ~ 2e-22 at tau = 0.02), so ~1e-27.  Adam squares it into its second
    moment v, where (1 - beta2) g^2 lands among float32's subnormal numbers
    (below 1.2e-38) or underflows to 0.  torch.optim.AdamW's default CPU path
    takes sqrt(v) with MKL, which runs ~30x slower on subnormals (and ~4x on
    zeros) than on normal numbers: with exact gradients that was ~0.5 s of a
    6 s GPT-2-small step on one thread.  So an entry with (1 - beta2) g^2 below
    the normal range for any beta2 <= 0.9999, i.e. |g| < 2^7 sqrt(tiny)
    (1.4e-17 for float32 and bfloat16), is returned as 0, and v gets a 0 instead
    of a subnormal.  Under AdamW such an entry moves its weight by at most
    lr * 1.4e-17 / eps (eps = 1e-8), under SGD by lr * 1.4e-17: at lr = 1e-3
    below half an ulp of any weight larger than ~1e-4, so the weights come out the
    same (tests/test_perf_equivalence.py trains both ways and compares).  float16
    gradients (whose sqrt(tiny) is 0.008) are never flushed; ``PDP_GPT2_FLUSH=0``
    turns the flush off.
    """
    if _flush_ok and dtype in (torch.float32, torch.bfloat16, torch.float64):
        return 128 * math.sqrt(torch.finfo(dtype).tiny)
    return 0.0


# Compiled forms: one expression each, written into a given tensor.


def _forward_into(out, w, a, b, tau: float, beta: float | None):
    m, _ = _mask_and_slope(w, a, b, tau, beta)
    out.copy_(w * m)


def _backward_into(grad, w, a, b, tau: float, beta: float | None, flush: float):
    g = grad * _local_grad(w, a, b, tau, beta)
    grad.copy_(torch.where(g.abs() < flush, 0.0, g))


# Eager forms: the same values, in place where possible to allocate less.


def _forward_into_eager(out, w, a, b, tau: float, beta: float | None):
    z = torch.mul(w, w, out=out).mul_(a).sub_(b).div_(tau)
    if beta is None:
        m = z.sigmoid_()
    else:
        th = torch.tanh(z * beta)
        m = z.sigmoid_().mul_(0.7).add_(th.add_(1).mul_(0.15))
    m.mul_(w)


def _backward_into_eager(grad, w, a, b, tau: float, beta: float | None, flush: float):
    m, slope = _mask_and_slope(w, a, b, tau, beta)
    # m + (2a/tau) w^2 slope, built in place on `slope` to keep one extra buffer
    grad.mul_(slope.mul_(w).mul_(w).mul_(a * (2.0 / tau)).add_(m))
    if flush > 0:
        grad.masked_fill_(grad.abs() < flush, 0.0)


class SoftMaskedWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, a, b, tau: float, beta, buffer: OutBuffer | None):
        _measure_bases()  # once, here rather than inside a backward
        with torch.no_grad():
            out = buffer.take(w) if buffer is not None else torch.empty_like(w, memory_format=torch.contiguous_format)
            if w.is_contiguous():
                _fast("forward", _forward_into, _forward_into_eager, out.view(-1), w.view(-1), a, b, tau, beta)
            else:
                _forward_into_eager(out, w.contiguous(), a, b, tau, beta)
        ctx.save_for_backward(w, a, b)
        ctx.tau, ctx.beta = tau, beta
        # A view, so the buffer itself never becomes a graph output: the graph holds
        # the view, which keeps the buffer's storage count up until it is freed.
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        w, a, b = ctx.saved_tensors
        if _grad_is_ours(grad, w):
            counts["grad_in_place"] += 1
        else:
            counts["grad_copied"] += 1
            grad = grad.clone(memory_format=torch.contiguous_format)
        flush = underflow_level(grad.dtype)
        if w.is_contiguous():
            _fast("backward", _backward_into, _backward_into_eager, grad.view(-1), w.view(-1), a, b,
                  ctx.tau, ctx.beta, flush)
        else:
            _backward_into_eager(grad, w, a, b, ctx.tau, ctx.beta, flush)
        return grad, None, None, None, None, None


def soft_masked_weight(w, t, tau: float, tau_mode: str, beta: float | None, buffer: OutBuffer | None = None):
    """w * m(w) for a cached threshold t (0-d tensor), memory-lean.

    ``buffer``: where to write it, reused across steps (see :class:`OutBuffer`).
    """
    t2 = t * t
    if tau_mode == "relative":
        a, b = 1.0 / t2, torch.ones_like(t2)
    else:
        a, b = torch.ones_like(t2), t2
    a, b = a.to(w.dtype), b.to(w.dtype)
    if torch.compiler.is_compiling():
        # Inside a caller's torch.compile: plain ops, which that compiler fuses itself
        # (the reference counting and nested compile above are not traceable).
        m, _ = _mask_and_slope(w, a, b, tau, beta)
        return w * m
    return SoftMaskedWeight.apply(w, a, b, tau, beta, buffer)


# ---- counting for threshold selection ---------------------------------------------------


def _block_counts_expr(flat, lo, hi):
    """Per block of BLOCK entries: how many |x| < lo, and how many lo <= |x| <= hi.

    Counts are summed as float32 (exact: at most BLOCK per block), which vectorizes
    far better than integer sums on CPU.
    """
    a = flat.abs().view(-1, BLOCK)
    below = (a < lo).to(torch.float32).sum(dim=1)
    inside = ((a >= lo) & (a <= hi)).to(torch.float32).sum(dim=1)
    return below, inside


def block_counts(flat: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """``_block_counts_expr`` on a flat tensor whose length is a multiple of BLOCK."""
    return _fast("block_counts", _block_counts_expr, _block_counts_expr, flat, lo, hi)
