"""pdp/kernels/select.py: exact order statistics of many tensors at once, counting on the device.

* thresholds and keep-masks equal the definitions (mask.threshold, mask.hard_mask_from_scores)
  bit for bit: every dtype, ties across signs and at zero, -0.0, any hint (stale or absurd),
  drifting weights under a ramp, many tensors in one call, on CUDA where one is present;
* a refresh of a whole model reads the device at most twice, for 8 tensors as for 32
  (counted with a dispatch probe: item/tolist/bool, nonzero, masked_select, boolean indexing,
  unique), for PDP and for gmp;
* the compiled counting kernel equals the eager one (slow: it compiles).
"""
import warnings

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode  # counts host reads at dispatch; tests only

import pdp_gpt2
from pdp_gpt2 import PDPConfig
from pdp_gpt2.pdp.kernels import fused as F
from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.kernels import select as SEL
from pdp_gpt2.pdp.kernels.fused import KernelOptions

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _bits(a: torch.Tensor) -> bytes:
    return a.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes()


def _thresholds(ws, ks, hints=None, kernels=None):
    """Thresholds of many tensors through the batched selection (what a refresh does)."""
    hints = hints or [None] * len(ws)
    live = [i for i, k in enumerate(ks) if k > 0]  # k = 0 prunes nothing: threshold 0, no selection
    qs = [SEL.Query(ws[i], min(ks[i], ws[i].numel()), ws[i].numel(), hints[i]) for i in live]
    found, _ = SEL.select(qs, kernels=kernels)
    out = [torch.zeros((), dtype=w.dtype) for w in ws]
    new = [None] * len(ws)
    for i, q, f in zip(live, qs, found):
        out[i], new[i] = (f.lo if q.k >= q.n else (f.lo + f.hi) / 2), f.hint
    return out, new


FIXED, COMPACT = KernelOptions(collect="fixed"), KernelOptions(collect="compact")


def _check(ws, ks, hints=None, kernels=None):
    if kernels is None:  # both ways of collecting candidates give the definition's answer
        for k_opts in (FIXED, COMPACT):
            new = _check(ws, ks, hints, k_opts)
        return new
    ts, new = _thresholds(ws, ks, hints, kernels)
    for w, k, t in zip(ws, ks, ts):
        ref = M.threshold(w.abs().cpu(), k)
        assert t.dtype == ref.dtype and _bits(t) == _bits(ref), (k, t, ref)
    keeps = SEL.keep_masks([SEL.Query(w, k, w.numel()) for w, k in zip(ws, ks)], kernels=kernels)
    for w, k, keep in zip(ws, ks, keeps):
        assert torch.equal(keep.cpu(), M.hard_mask_from_scores(w.abs().cpu(), k)), k
    return new


# ---- bit-identical to the definitions ----------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_equals_the_definitions_on_random_tensors(dtype, device):
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(50_003, generator=g) * 0.02).to(dtype).to(device)  # not a multiple of the block
    n = w.numel()
    ks = [1, 2, 17, n // 2, M.num_pruned(n, 0.9), n - 2, n - 1, n]
    _check([w] * len(ks), ks)  # many queries in one call


@pytest.mark.parametrize("device", DEVICES)
def test_ties_across_signs_zeros_and_negative_zero(device):
    g = torch.Generator().manual_seed(1)
    levels = torch.randint(0, 12, (40_000,), generator=g).float() / 8  # many exact ties, 1/12 zeros
    w = levels * (torch.randint(0, 2, (40_000,), generator=g) * 2 - 1)  # +-: |w| ties across signs
    w[::13] = -0.0
    w = w.to(device)
    sorted_abs = w.abs().sort().values
    boundaries = ((sorted_abs[1:] != sorted_abs[:-1]).nonzero().squeeze(1) + 1).tolist()
    ks = {1, 5, 100, 20_000, 39_999}
    for b in boundaries:
        ks |= {b - 1, b, b + 1}
    ks = sorted(k for k in ks if 0 < k < w.numel())
    _check([w] * len(ks), ks)


def test_any_hint_gives_the_same_answer():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(64, 1024, generator=g) * 0.05
    k = M.num_pruned(w.numel(), 0.8)
    (good,) = _check([w], [k])
    assert good.k == k and float(good.density) > 0

    def hint(k_, value, density, miss):
        return SEL.Hint(k_, *(torch.tensor(float(v), dtype=torch.float64) for v in (value, density, miss)))

    bad = [good, hint(k, -5.0, 1e-9, 0.0), hint(k, 100.0, 1e12, 0.0), hint(k, float(good.value), 0.0, 0.0),
           hint(1, float(good.value), float(good.density), 1.0), hint(w.numel() - 1, 0.0, float(good.density), 0.0),
           hint(k, float("nan"), 1.0, 0.0), hint(k, float("inf"), float("inf"), float("inf"))]
    _check([w] * len(bad), [k] * len(bad), bad)
    ks = [1, 10, k - 5000, k + 5000, w.numel() - 1]
    _check([w] * len(ks), ks, [good] * len(ks))  # a stale hint for another k


def test_follows_drifting_weights_and_a_ramp():
    g = torch.Generator().manual_seed(3)
    ws = [torch.randn(300, 700, generator=g) * 0.02, torch.randn(256, 512, generator=g) * 0.05]
    hints = [None, None]
    for step in range(30):
        for w in ws:
            w += torch.randn(w.shape, generator=g) * 1e-4  # an optimizer step
        ks = [M.num_pruned(w.numel(), min(0.9, 0.9 * (1 - (1 - step / 20) ** 3) if step < 20 else 0.9))
              for w in ws]  # the cubic ramp moves k too
        hints = _check(ws, ks, hints)


def test_non_contiguous_small_and_empty_edge_sizes():
    w = torch.randn(512, 96).t()  # a transposed view
    _check([w], [M.num_pruned(w.numel(), 0.7)])
    small = torch.randn(10, 10)  # sorted whole
    _check([small, small, small], [1, 37, 100])
    keep = SEL.keep_masks([SEL.Query(small, 0, 100), SEL.Query(small, 100, 100)])
    assert keep[0].all() and not keep[1].any()


def test_an_unknown_collection_mode_is_refused():
    with pytest.raises(ValueError, match="collect must be auto, fixed or compact"):
        KernelOptions(collect="sometimes")


def test_nan_scores_follow_the_definition():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(30_000, generator=g)
    w[::100] = float("nan")
    for k in (10, 29_000, 29_800):  # the last one prunes into the NaNs
        keep = SEL.keep_masks([SEL.Query(w, k, w.numel())])[0]
        assert torch.equal(keep, M.hard_mask_from_scores(w.abs(), k)), k


def test_pruner_thresholds_stay_exact_across_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.Linear(512, 256))
    pruner = pdp_gpt2.attach(model, PDPConfig(sparsity=0.9, targets=["0", "1"]))
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 1e-4)
        pruner.set_sparsity(0.9 - 0.1 * (step % 2))
        pruner.step()
        for t in pruner.targets:
            w = pruner.original(t)
            ref = M.threshold(w.abs(), M.num_pruned(w.numel(), pruner.layer_sparsity(t.name)))
            assert torch.equal(pruner.mask_of(t).t, ref)
            assert pruner._hints[t.name] is not None  # the bracket path ran, and warm-starts the next


# ---- host transfers per refresh ----------------------------------------------------------------


class SyncProbe:
    """Counts the operations that wait for the device: item/tolist/bool/int/float reads, nonzero,
    masked_select, boolean-mask indexing, unique (at the torch-function level, where tolist and
    boolean indexing are visible, and at the dispatch level, where internal .item() calls are)."""

    SYNC = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique", "_unique2",
            "unique_dim", "unique_consecutive", "argwhere", "nonzero_static"}
    READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "masked_select",
             "unique", "argwhere"}

    def __init__(self):
        self.ops = []
        self.inside = False  # within a counted read: its own _local_scalar_dense is not another wait
        probe = self

        class Functions(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                name = getattr(func, "__name__", "")
                if name in probe.READS:
                    counted = name
                elif name in ("__getitem__", "__setitem__") and _bool_index(args[1] if len(args) > 1 else None):
                    counted = "bool-index"
                else:
                    return func(*args, **(kwargs or {}))
                probe.ops.append(counted)
                outer, probe.inside = probe.inside, True
                try:
                    return func(*args, **(kwargs or {}))
                finally:
                    probe.inside = outer

        class Dispatch(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.overloadpacket.__name__ in probe.SYNC and not probe.inside:
                    probe.ops.append(func.overloadpacket.__name__)
                return func(*args, **(kwargs or {}))

        self.modes = [Functions(), Dispatch()]

    def __enter__(self):
        for m in self.modes:
            m.__enter__()
        return self

    def __exit__(self, *exc):
        for m in reversed(self.modes):
            m.__exit__(*exc)

    @property
    def count(self) -> int:
        return len(self.ops)


def _bool_index(idx) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _model(n_targets: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(192, 128) for _ in range(n_targets)])  # 24,576 entries each: bracketed


@pytest.mark.parametrize("method", ["pdp", "gmp", "movement"])
def test_a_refresh_reads_the_device_at_most_twice_whatever_the_number_of_tensors(method):
    counts = {}
    for n in (8, 32):
        model = _model(n)
        cfg = PDPConfig(sparsity=0.9, targets=[str(i) for i in range(n)])
        pruner = pdp_gpt2.attach(model, method, cfg, kernels=FIXED)  # the GPU's way of collecting, here on CPU
        pruner.set_sparsity(0.9)
        for _ in range(2):  # an optimizer step moves the weights; the refreshes warm up
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 1e-5)
            pruner.step()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 1e-5)
        with SyncProbe() as probe:
            pruner.step()
        counts[n] = probe.count
        if method == "pdp":  # and the thresholds are still the definition's
            for t in pruner.targets:
                w = pruner.original(t)
                assert torch.equal(pruner.mask_of(t).t, M.threshold(w.abs(), M.num_pruned(w.numel(), 0.9)))
    assert counts[8] == counts[32] and 1 <= counts[8] <= 2, counts


def test_the_probe_sees_per_tensor_reads():
    """The probe would catch the old design: a read per tensor."""
    ws = [torch.randn(1000) for _ in range(4)]
    with SyncProbe() as probe:
        for w in ws:
            int((w > 0).sum())
            w[w > 0].sum()
            w.nonzero()
    assert probe.count >= 12


# ---- compiled counting -------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_counting_gives_exact_thresholds():
    opts = KernelOptions(compile_min_numel=1 << 12)
    g = torch.Generator().manual_seed(4)
    w = torch.randn(200, 333, generator=g) * 0.02
    body = w.reshape(1, -1)[:, :w.numel() - w.numel() % SEL.SB].reshape(1, -1, SEL.SB)
    lo, hi = torch.tensor([0.01]), torch.tensor([0.02])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed compile fails the test
        compiled = F.row_block_counts(body, lo, hi, opts)
    assert "block_counts" in F.compiled_kernels()
    assert all(torch.equal(a, b) for a, b in zip(F._row_block_counts_expr(body, lo, hi), compiled))
    hints = None
    for k in (1, 1000, M.num_pruned(w.numel(), 0.9), w.numel() - 1):
        hints = _check([w], [k], hints, opts)
