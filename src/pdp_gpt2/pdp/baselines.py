"""Baseline mask drivers with the same interface as :class:`pdp_gpt2.pdp.attach.Pruner`.

The training harness (``train.run`` + ``PDPCallback``) only ever calls
``set_sparsity`` / ``step`` / ``stats`` / ``finalize`` / ``state_dict`` on its
pruner, so a baseline is just another driver:

* ``magnitude``: one-shot.  At attach the k = floor(r n) smallest |w| of each
  tensor are pruned at the *final* target and the mask is frozen; the schedule's
  ``set_sparsity`` calls are ignored (there is no ramp to follow).
* ``gmp``: gradual magnitude pruning (Zhu & Gupta 2017).  The callback moves the
  sparsity along the same schedule as PDP (``--schedule``, cubic by default) and
  the mask is recomputed from magnitudes after every optimizer step.  Decision:
  *pruned weights stay pruned* (the classic variant): scores are |w * mask|, so
  an already-pruned weight scores 0 and is chosen again while the target grows.
  Without that, a pruned weight - frozen, since it gets no gradient - could
  re-enter whenever a kept weight shrank below it, and the mask would flicker.
* ``wanda``: one-shot like ``magnitude`` but with the score |W| * ||X||_2 of the
  weight's input feature over a few calibration blocks (Sun et al. 2023).  The
  comparison group is the whole tensor (not Wanda's per-output row), so every
  method prunes exactly the same number of weights per tensor.

The mask is hard: ``HardMask`` multiplies by a 0/1 keep-mask, a plain product,
so no gradient flows through the mask and pruned weights get exactly zero
gradient.  The keep-mask is a buffer of the parametrization, so Trainer
checkpoints carry it and a resumed run continues with the same mask.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn.utils import parametrize

from pdp_gpt2.pdp.config import PDPConfig
from pdp_gpt2.pdp import mask as M
from pdp_gpt2.pdp.attach import MaskDriver
from pdp_gpt2.pdp.targets import Target, find_targets, from_in_last, in_last

BASELINES = ("magnitude", "gmp", "wanda")
ONE_SHOT = ("magnitude", "wanda")


def keep_from_scores(scores: torch.Tensor, sparsity: float, *, pattern: str, nm, out_dim: int) -> torch.Tensor:
    """Boolean keep-mask pruning the lowest ``scores`` (same shape as the weight).

    Exactly floor(r n) zeros for 'unstructured', floor(r rows) whole output rows
    for 'row', and floor(r M) (at most M - N) per group of M inputs for N:M.
    """
    if nm is not None:
        n, m = nm
        k = min(m - n, M.num_pruned(m, sparsity))
        return from_in_last(M.nm_hard_mask(in_last(scores, out_dim), k, m), out_dim)
    if pattern == "row":
        rows = (scores * scores).sum(dim=1 - out_dim)  # squared L2 norm of each output neuron
        keep_rows = M.hard_mask_from_scores(rows, M.num_pruned(rows.numel(), sparsity))
        shape = [1, 1]
        shape[out_dim] = -1
        return keep_rows.view(shape).expand_as(scores).clone()
    return M.hard_mask_from_scores(scores, M.num_pruned(scores.numel(), sparsity))


class HardMask(nn.Module):
    """Parametrization w -> w * keep (then fake-quant if ``bits``)."""

    def __init__(self, shape, out_dim: int, bits: int | None = None):
        super().__init__()
        self.out_dim, self.bits = out_dim, bits
        self.register_buffer("keep", torch.ones(shape, dtype=torch.bool))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        out = w * self.keep  # a product, not a where(): d out / d w = keep, so pruned weights get 0 gradient
        return M.fake_quant(out, self.bits, self.out_dim) if self.bits is not None else out

    @torch.no_grad()
    def soft_mask(self, w: torch.Tensor) -> torch.Tensor:
        """The mask as floats (what stats, mask histograms and MaskAwareAdamW read)."""
        return self.keep.to(w.dtype)

    @torch.no_grad()
    def final_weight(self, w: torch.Tensor) -> torch.Tensor:
        """Exact zeros as +0.0 (a product leaves -0.0 for negative pruned weights, and saved bytes
        should not depend on the signs of weights that are gone), as PDPMask.final_weight."""
        out = torch.where(self.keep, w, torch.zeros((), dtype=w.dtype, device=w.device))
        return (M.fake_quant(out, self.bits, self.out_dim) if self.bits is not None else out).detach()


class HardPruner(MaskDriver):
    """Hard-mask driver: one-shot (mask frozen at attach) or gradual (mask follows the schedule).

    Access, finalize, remove and masks come from MaskDriver (the same as PDP's Pruner),
    so optim.MaskAwareAdamW and the training callback work unchanged.
    """

    def __init__(self, model: nn.Module, config: PDPConfig, targets: list[Target], *, method: str,
                 scores: dict[str, torch.Tensor] | None = None):
        if method not in BASELINES:
            raise ValueError(f"unknown baseline {method!r}; choose from {BASELINES}")
        super().__init__(model, config, targets)
        self.method = method
        self.one_shot = method in ONE_SHOT
        self.scores = scores  # wanda's fixed scores by target name (None: magnitudes)

    # ---- lifecycle -------------------------------------------------------------------
    def set_sparsity(self, sparsity: float) -> None:
        """Gradual: move to ``sparsity`` and recompute masks.  One-shot: stays at the final target."""
        if not (0.0 <= sparsity < 1.0):
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        if self.one_shot:
            return  # pruned once at attach; the schedule does not apply
        self.sparsity = float(sparsity)
        self.refresh()

    def step(self) -> None:
        self.steps += 1
        if not self.one_shot:
            self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute every keep-mask at the current sparsity."""
        for t in self.targets:
            hm, w = self.mask_of(t), self.original(t)
            s = self.layer_sparsity(t.name)
            if self.scores is not None:
                score = self.scores[t.name].to(w.device)
            else:
                score = w.abs()
                k_new = M.num_pruned(w.numel(), s)
                pruned = int((~hm.keep).sum())
                if pruned <= k_new:
                    # Pruned stay pruned: they score 0, so they are chosen first again.
                    score = score * hm.keep
                    if pruned == k_new and self._unchanged(score, k_new):
                        continue
            hm.keep.copy_(keep_from_scores(score, s, pattern=self.config.pattern, nm=self.config.nm,
                                           out_dim=t.out_dim))

    def _unchanged(self, score: torch.Tensor, k: int) -> bool:
        """Whether recomputing an unstructured magnitude mask (k weights pruned already) would
        give it back unchanged: exactly k scores are 0 (the pruned weights) and every other
        is positive, so the k smallest are the pruned ones.  Between sparsity changes (after
        the ramp: every step) this one counting pass replaces a selection over the tensor."""
        if self.config.pattern != "unstructured" or self.config.nm is not None:
            return False
        return int(torch.count_nonzero(score)) == score.numel() - k

    @torch.no_grad()
    def stats(self) -> dict:
        """Same keys as Pruner.stats; a hard mask has no band and mean = kept fraction."""
        layers, total, zeros = {}, 0, 0
        for t in self.targets:
            keep = self.mask_of(t).keep
            n, z = keep.numel(), int((~keep).sum())
            layers[t.name] = {"target": self.layer_sparsity(t.name), "hard": z / n, "band": 0.0,
                              "mean_mask": 1 - z / n, "numel": n}
            total, zeros = total + n, zeros + z
        total = max(total, 1)
        return {"sparsity_target": self.sparsity, "sparsity_hard": zeros / total, "band": 0.0,
                "mask_mean": 1 - zeros / total, "layers": layers}

    # ---- checkpointing (the keep-masks themselves travel in the model's state_dict) ----
    def state_dict(self) -> dict:
        return {"sparsity": self.sparsity, "steps": self.steps, "budgets": dict(self.budgets),
                "method": self.method, "config": self.config.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.budgets = {k: float(v) for k, v in state["budgets"].items()}
        self.steps = int(state["steps"])
        if not self.one_shot:
            self.sparsity = float(state["sparsity"])  # masks come back with the checkpoint's weights


def attach_baseline(model: nn.Module, method: str, config: PDPConfig | None = None, *,
                    calibration: torch.Tensor | None = None, **overrides) -> HardPruner:
    """Put hard masks on every target weight.  One-shot methods prune to ``config.sparsity`` now;
    ``gmp`` starts at 0 and follows ``set_sparsity``.  ``calibration``: token blocks for wanda."""
    if config is None:
        config = PDPConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    targets = find_targets(model, config.targets)
    for t in targets:
        if parametrize.is_parametrized(t.module, "weight"):
            raise ValueError(f"{t.name}.weight already has a parametrization (attached twice?)")
    scores = None
    if method == "wanda":
        if calibration is None:
            raise ValueError("wanda needs calibration token blocks")
        scores = wanda_scores(model, targets, calibration)
    pruner = HardPruner(model, config, targets, method=method, scores=scores)
    if config.allocation == "global":
        from pdp_gpt2.pdp.attach import global_budgets

        pruner.budgets = global_budgets({t.name: t.module.weight for t in targets}, config.sparsity)
    bits = config.bits if config.quantize else None
    for t in targets:
        w = t.module.weight
        parametrize.register_parametrization(t.module, "weight", HardMask(w.shape, t.out_dim, bits).to(w.device))
    if pruner.one_shot:
        pruner.sparsity = config.sparsity
        pruner.refresh()
    return pruner


@torch.no_grad()
def wanda_scores(model: nn.Module, targets: list[Target], blocks: torch.Tensor, batch_size: int = 8) -> dict:
    """|W| * ||X||_2 per weight, X the inputs each target sees on ``blocks`` (n, length) of token ids."""
    sq = {t.name: None for t in targets}

    def hook(name):
        def fn(_module, inputs, _output):
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            s = (x * x).sum(0)
            sq[name] = s if sq[name] is None else sq[name] + s
        return fn

    handles = [t.module.register_forward_hook(hook(t.name)) for t in targets]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for i in range(0, len(blocks), batch_size):
            model(input_ids=blocks[i:i + batch_size].to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = {}
    for t in targets:
        norm = sq[t.name].sqrt()  # one value per input feature
        shape = [1, 1]
        shape[t.in_dim] = -1
        out[t.name] = t.module.weight.detach().abs().float() * norm.view(shape).to(t.module.weight.device)
    return out


def calibration_blocks(cfg, n_blocks: int = 32) -> torch.Tensor:
    """The first ``n_blocks`` training blocks of cfg's dataset (wanda's calibration set)."""
    from transformers import AutoTokenizer

    from pdp_gpt2.data.sources import load_split_texts, tokenize_and_group
    from pdp_gpt2.data.models import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.model))
    blocks = tokenize_and_group(tokenizer, load_split_texts(cfg.dataset, "train"), cfg.max_length)
    gen = torch.Generator().manual_seed(cfg.seed)
    return blocks[torch.randperm(len(blocks), generator=gen)[:n_blocks]]
