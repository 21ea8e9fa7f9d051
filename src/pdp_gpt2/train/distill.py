"""Knowledge distillation from the starting model: ``--distill ALPHA [--distill_temperature T]``.

The teacher is a frozen copy of the model before any mask went on (``frozen_copy``); per step

    loss = (1 - alpha) * LM + alpha * T**2 * KL(p_teacher || p_student)

with p = softmax(logits / T) over the vocabulary, the teacher's logits computed under no_grad on
the same batch. The direction is the one Hinton's, DistilBERT's and movement pruning's code train
with (the student covers everything the teacher gives probability to; the mode-seeking reverse is
not); T**2 keeps the gradient's size independent of T. The KL is averaged over the tokens the LM
loss averages over (labels not -100, Trainer's ``num_items_in_batch`` when given), so alpha weighs
like against like. :class:`DistillMixin` is the public way in for your own Trainer (docs/api.md)
and what the CLI run's Trainer uses; of the package it imports only the TrainConfig schema.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from pdp_gpt2.train.config import DISTILL_TEMPERATURE as DEFAULT_TEMPERATURE  # 2.0: DistilBERT's, movement pruning's

IGNORE_INDEX = -100  # the label Hugging Face's losses skip


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for a teacher: same device and dtype, eval mode (no dropout), no gradients.

    Take it before masks are attached: a copy of a masked model would carry the masks along."""
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    return teacher


def kl_per_position(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) over the last (vocabulary) axis, one value per
    position, in float32 at least (half-precision logits are upcast, as Hugging Face's LM loss does)."""
    log_s = F.log_softmax(_at_least_float32(student_logits) / temperature, dim=-1)
    log_t = F.log_softmax(_at_least_float32(teacher_logits) / temperature, dim=-1)
    return F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(dim=-1)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def distill_loss(lm_loss: torch.Tensor, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 labels: torch.Tensor, alpha: float, temperature: float = DEFAULT_TEMPERATURE,
                 num_items: torch.Tensor | int | None = None) -> torch.Tensor:
    """(1 - alpha) * lm_loss + alpha * T**2 * (mean KL per token) for a causal LM batch.

    ``labels`` are the batch's unshifted labels (``labels = input_ids``, -100 where ignored): the
    logits at position t predict label t + 1, so position t counts when ``labels[..., t + 1] != -100``
    and the last position never does, exactly as in the LM loss.  ``num_items``: the count of
    tokens the LM loss was divided by (Trainer's ``num_items_in_batch``); None: the counted tokens
    of this batch.  The masking stays on the device (no boolean gather, no host round trip)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    keep = labels[..., 1:] != IGNORE_INDEX
    kl = kl_per_position(student_logits[..., :-1, :], teacher_logits[..., :-1, :], temperature)
    total = torch.where(keep, kl, torch.zeros((), dtype=kl.dtype, device=kl.device)).sum()
    denom = keep.sum().clamp(min=1) if num_items is None else num_items
    return (1.0 - alpha) * lm_loss + (alpha * temperature ** 2) * (total / denom)


class DistillMixin:
    """Put before ``transformers.Trainer`` in a subclass's bases; ``distill_from(teacher, alpha, T)``
    turns it on.  It overrides only ``compute_loss`` (Trainer's own computes the LM loss and the
    student's logits; the KL is added to it), in training only: an evaluation loss stays the LM loss.

    The teacher is not given to Trainer, so nothing wraps it (DDP, accelerate's autocast patch):
    each process holds its own copy, moved on first use to the device of the batch and run under
    ``accelerator.autocast()``, the student's mixed precision.  Nor is it saved in checkpoints: a
    resumed run makes it again from the starting model."""

    teacher: nn.Module | None = None
    distill_alpha: float = 0.0
    distill_temperature: float = DEFAULT_TEMPERATURE

    def distill_from(self, teacher: nn.Module | None, alpha: float, temperature: float = DEFAULT_TEMPERATURE):
        """Distil from ``teacher`` (a :func:`frozen_copy`) with weight ``alpha``; None or alpha 0: off."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.teacher, self.distill_alpha, self.distill_temperature = teacher, float(alpha), float(temperature)
        return self

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.teacher is None or not self.distill_alpha or not model.training or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        labels = inputs["labels"]
        teacher_logits = self._teacher_logits(inputs)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        kl_denom = num_items_in_batch
        if kl_denom is not None:
            # Trainer multiplies the model's token-mean loss by this factor when it counted the tokens
            # over every process (average_tokens_across_devices), so that DDP's mean of the gradients is
            # the mean over all tokens; the KL term, divided by the same count, needs the same factor.
            kl_denom = kl_denom / self._token_mean_factor()
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[1]
        loss = distill_loss(loss, logits, teacher_logits, labels, self.distill_alpha, self.distill_temperature,
                            num_items=kl_denom)
        return (loss, outputs) if return_outputs else loss

    def _teacher_logits(self, inputs) -> torch.Tensor:
        device = inputs["input_ids"].device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        with torch.no_grad(), self.accelerator.autocast():
            return self.teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits

    def _token_mean_factor(self) -> float:
        """What Trainer.compute_loss multiplied the model's loss by (1 unless tokens were counted over processes)."""
        if not (self.args.average_tokens_across_devices and (self.model_accepts_loss_kwargs or self.compute_loss_func)):
            return 1.0
        return float(self.args.n_gpu if self.args.n_gpu > 1 else self.accelerator.num_processes // self.get_tp_size())
