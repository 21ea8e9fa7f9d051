"""Fused kernels for the per-step work PDP adds: the masked weight, its gradient, and the counting
pass of threshold selection.

The autograd Function saves only ``w`` and recomputes m in backward, with
d(w m)/dw = m + 2 a w^2 dm/dz (dm/dz = m (1 - m) for the sigmoid; the improved blend adds its tanh
term), the math of :func:`pdp_gpt2.pdp.kernels.mask.soft_mask`. a and b are 0-d tensors with tau folded
in ((1/t^2, 1) / tau relative, (1, t^2) / tau absolute), so z = w^2 a - b needs no host sync and no
division per entry. Large tensors run a ``torch.compile``'d version (one pass each way instead of
a dozen eager ones); small ones stay eager; if compiling fails we warn once and stay eager.
Gradients too small for Adam's second moment are flushed to 0 (:func:`underflow_level`).

Public APIs only: the backward writes into a fresh tensor or into the masked weight that
pdp/kernels/recompute.py hands over (:func:`offer_buffer`). Options come as :class:`KernelOptions`
through ``attach``; nothing here reads environment variables (the CLI does).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from pdp_gpt2.pdp.kernels.mask import Z_FLOOR, saturated_sigmoid

@dataclass(frozen=True)
class KernelOptions:
    """How the PDP kernels run.  None of these changes a mask; ``flush`` changes gradients
    only below float32's normal range (see :func:`underflow_level`)."""

    compile: bool = True  # torch.compile the kernels of tensors with >= compile_min_numel entries
    flush: bool = True  # return gradients too small for Adam's second moment as 0
    # GPT-2 small's smallest target has 589,824 entries; tests lower this to compile tiny tensors.
    compile_min_numel: int = 1 << 18
    # recompute each masked weight in backward instead of keeping it from forward (pdp/kernels/recompute.py),
    # when the targets' weights together take at least recompute_min_bytes: below that, keeping the masked
    # weights costs little memory (2.4 MB on the bundled model) while the recompute costs one more mask pass
    # per target a step (about 5% of the bundled model's step on a CPU); GPT-2 small's 340 MB are recomputed
    recompute: bool = True
    recompute_min_bytes: int = 32 << 20
    # how threshold selection collects candidates (pdp/kernels/select.py Plan): "auto" (fixed-size on a GPU,
    # which reads nothing back from the device; compact on a CPU, where reading back is free),
    # "fixed" or "compact"; all give the same thresholds
    collect: str = "auto"

    def __post_init__(self) -> None:
        if self.collect not in ("auto", "fixed", "compact"):
            raise ValueError(f"KernelOptions.collect must be auto, fixed or compact, got {self.collect!r}")


DEFAULT = KernelOptions()

# Compiled kernels by name; "failed" set once compiling has failed in this process.  Process-wide on
# purpose: a compile cache (a kernel compiles once per process, whichever driver calls it first).
_compiled: dict = {}


def clear_compiled() -> None:
    """Forget compiled kernels and any earlier compile failure (the next large call compiles again)."""
    _compiled.clear()


def compiled_kernels() -> set[str]:
    """Names of the kernels compiled so far in this process ("failed" once compiling failed)."""
    return set(_compiled)


def _fast(name: str, expr, eager, kernels: KernelOptions | None, *args):
    """``expr(*args)`` compiled when worthwhile, else ``eager(*args)`` (same values).

    ``args[0]`` is the large tensor (its size decides); the others are tensors,
    0-d tensors, or Python floats (compiled as inputs, not constants).
    """
    kernels = kernels or DEFAULT
    if not kernels.compile or "failed" in _compiled or args[0].numel() < kernels.compile_min_numel:
        return eager(*args)
    fn = _compiled.get(name)
    if fn is None:
        fn = _compiled[name] = torch.compile(expr, dynamic=True, fullgraph=True)
    try:
        return fn(*args)
    except Exception as e:  # compile-time failures surface at the first call
        _compiled["failed"] = True
        warnings.warn(f"pdp_gpt2: torch.compile of the PDP kernels failed ({type(e).__name__}: {e}); "
                      "using eager kernels (slower, same results)", RuntimeWarning, stacklevel=2)
        return eager(*args)


# ---- the masked weight ----------------------------------------------------------------


def _mask_and_slope(w, a, b, beta: float | None):
    z = w * w * a - b
    s = saturated_sigmoid(z)  # exact 0 when saturated: subnormal masks slow every op that reads them
    if beta is None:
        return s, s * (1 - s)
    th = torch.tanh(beta * z)
    return 0.7 * s + 0.15 * (th + 1), 0.7 * s * (1 - s) + 0.15 * beta * (1 - th * th)


def _local_grad(w, a, b, beta: float | None):
    m, slope = _mask_and_slope(w, a, b, beta)
    return m + 2.0 * a * (w * w) * slope


def underflow_level(dtype: torch.dtype, enabled: bool = True) -> float:
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
    same (tests/pdp/test_perf_equivalence.py trains both ways and compares).  float16
    gradients (whose sqrt(tiny) is 0.008) are never flushed; ``enabled=False``
    (``KernelOptions(flush=False)``) turns the flush off.
    """
    if enabled and dtype in (torch.float32, torch.bfloat16, torch.float64):
        return 128 * math.sqrt(torch.finfo(dtype).tiny)
    return 0.0


# Compiled forms: one expression each, returning a new tensor.


def _forward(w, a, b, beta: float | None):
    m, _ = _mask_and_slope(w, a, b, beta)
    return w * m


def _backward(grad, w, a, b, beta: float | None, flush: float):
    g = grad * _local_grad(w, a, b, beta)
    return torch.where(g.abs() < flush, 0.0, g)


def _backward_into(out, grad, w, a, b, beta: float | None, flush: float):
    out.copy_(_backward(grad, w, a, b, beta, flush))
    return out


# Eager forms: the same values, built in place on their own fresh tensors to allocate less.


def _forward_eager(w, a, b, beta: float | None):
    z = torch.mul(w, w).mul_(a).sub_(b)
    th = None if beta is None else torch.tanh(z * beta)
    saturated = z < Z_FLOOR  # mask.saturated_sigmoid, in place
    m = z.clamp_min_(Z_FLOOR).sigmoid_().masked_fill_(saturated, 0.0)
    if th is not None:
        m = m.mul_(0.7).add_(th.add_(1).mul_(0.15))
    return m.mul_(w)


def _backward_eager(grad, w, a, b, beta: float | None, flush: float):
    m, slope = _mask_and_slope(w, a, b, beta)
    # m + 2a w^2 slope, built in place on `slope` (ours), then times the incoming gradient
    g = slope.mul_(w).mul_(w).mul_(a * 2.0).add_(m).mul_(grad)
    if flush > 0:
        g.masked_fill_(g.abs() < flush, 0.0)
    return g


class SoftMaskedWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, a, b, beta, kernels: KernelOptions):
        with torch.no_grad():
            if w.is_contiguous():
                out = _fast("forward", _forward, _forward_eager, kernels, w.view(-1), a, b, beta).view_as(w)
            else:
                out = _forward_eager(w, a, b, beta)
        ctx.save_for_backward(w, a, b)
        ctx.beta, ctx.kernels = beta, kernels
        ctx.pdp_spare = []  # buffers handed over by the backward recompute (offer_buffer)
        return out

    @staticmethod
    def backward(ctx, grad):
        w, a, b = ctx.saved_tensors
        beta, kernels = ctx.beta, ctx.kernels
        flush = underflow_level(grad.dtype, kernels.flush)
        spare = ctx.pdp_spare.pop() if ctx.pdp_spare else None
        ctx.pdp_spare.clear()
        if (spare is not None and not torch.is_grad_enabled() and w.is_contiguous() and spare.is_contiguous()
                and spare.shape == w.shape and spare.dtype == grad.dtype and spare.device == grad.device):
            # the gradient goes into the recomputed masked weight's memory, which is ours alone now
            grad = grad.contiguous()
            g = _fast("backward_into", _backward_into, _backward_into_eager, kernels, spare.view(-1),
                      grad.view(-1), w.view(-1), a, b, beta, flush).view_as(w)
        elif w.is_contiguous():
            grad = grad.contiguous()  # a no-op unless autograd handed us a strided view
            g = _fast("backward", _backward, _backward_eager, kernels, grad.view(-1), w.view(-1), a, b,
                      beta, flush).view_as(w)
        else:
            g = _backward_eager(grad, w, a, b, beta, flush)
        return g, None, None, None, None


def _backward_into_eager(out, grad, w, a, b, beta: float | None, flush: float):
    return out.copy_(_backward_eager(grad, w, a, b, beta, flush))


def offer_buffer(node, buf: torch.Tensor) -> bool:
    """Hand ``buf`` to the backward of the masked weight whose autograd node is ``node``, to
    write its gradient into instead of a new tensor.  The caller promises that nothing else
    reads or holds ``buf`` by the time that backward runs (pdp/kernels/recompute.py: a masked weight
    recomputed for the consumer's backward, which has run by then).  False if ``node`` is not
    a masked weight's (e.g. a fake-quantized output)."""
    spare = getattr(node, "pdp_spare", None)
    if not isinstance(spare, list):
        return False
    spare.append(buf)
    return True


def soft_masked_weight(w, t, tau: float, tau_mode: str, beta: float | None, kernels: KernelOptions | None = None):
    """w * m(w) for a cached threshold t (0-d tensor), memory-lean (see the module docstring)."""
    t2 = t * t
    if tau_mode == "relative":  # z = (w^2 / t^2 - 1) / tau
        a, b = 1.0 / (t2 * tau), torch.full_like(t2, 1.0 / tau)
    else:  # z = (w^2 - t^2) / tau
        a, b = torch.full_like(t2, 1.0 / tau), t2 / tau
    a, b = a.to(w.dtype), b.to(w.dtype)
    if torch.compiler.is_compiling():
        # Inside a caller's torch.compile: plain ops, which that compiler fuses itself
        # (a nested compile is not traceable).
        m, _ = _mask_and_slope(w, a, b, beta)
        return w * m
    return SoftMaskedWeight.apply(w, a, b, beta, kernels or DEFAULT)


# ---- counting for threshold selection ---------------------------------------------------


def _row_block_counts_expr(body, lo, hi):
    """The counting pass of pdp/kernels/select.py, per row and block of ``body`` ((rows, blocks, SB)),
    with the row's bounds ``lo``, ``hi`` (shape (rows,)): how many |x| < lo, and how many
    lo <= |x| <= hi.

    Counts are summed as float32 (exact: at most SB per block), which vectorizes far better
    than integer sums on CPU; the caller sums the blocks in float64 (exact at any size; inside
    the compiled loop a float64 total made it 7x slower on CPU).
    """
    a = body.abs()
    lo3, hi3 = lo[:, None, None], hi[:, None, None]
    below = (a < lo3).to(torch.float32).sum(dim=2)
    inside = ((a >= lo3) & (a <= hi3)).to(torch.float32).sum(dim=2)
    return below, inside


def row_block_counts(body: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, kernels: KernelOptions | None = None):
    """``_row_block_counts_expr``, compiled on large inputs."""
    return _fast("block_counts", _row_block_counts_expr, _row_block_counts_expr, kernels, body, lo, hi)


def _mask_counts_expr(w, keep):
    """Per block of a hard mask's rows ((blocks, B) views): entries pruned, and kept entries
    that are nonzero.  float32 per block (exact), summed by the caller in float64: a float64
    total inside the compiled loop is several times slower on CPU."""
    pruned = (~keep).to(torch.float32).sum(dim=1)
    nonzero = ((w != 0) & keep).to(torch.float32).sum(dim=1)
    return pruned, nonzero


def mask_counts(w: torch.Tensor, keep: torch.Tensor, kernels: KernelOptions | None = None) -> torch.Tensor:
    """(entries pruned, kept entries that are nonzero) of a hard mask, a float64 pair, in one fused
    pass: gmp's per-step test that its mask would come back unchanged (eager, it took four passes
    and three full-size temporaries, ~15 ms a GPT-2-small tensor on one CPU thread)."""
    flat_w, flat_k = w.reshape(-1), keep.reshape(-1)
    n_body = flat_w.numel() - flat_w.numel() % _COUNT_BLOCK
    pruned_b, nonzero_b = _fast("mask_counts", _mask_counts_expr, _mask_counts_expr, kernels,
                                flat_w[:n_body].view(-1, _COUNT_BLOCK), flat_k[:n_body].view(-1, _COUNT_BLOCK))
    tw, tk = flat_w[n_body:], flat_k[n_body:]
    return torch.stack([pruned_b.sum(dtype=torch.float64) + (~tk).sum(),
                        nonzero_b.sum(dtype=torch.float64) + ((tw != 0) & tk).sum()])


_COUNT_BLOCK = 4096
