"""The training loss of metrics.jsonl: the mean over the optimizer steps since the previous line.

Trainer computes the same number, but its window starts afresh when a run resumes, so a run
stopped between two log steps logged a different loss at the next one than an uninterrupted
run.  ``LossWindow`` sums the loss of each micro-batch exactly as Trainer sums its own (a
float32 tensor on the device, one in-place add per micro-batch, no host sync), is saved with
each checkpoint (every rank's sum) and restored on resume: the same additions in the same
order, so the same bits as Trainer's value in a run that was never stopped.
"""
from __future__ import annotations

import torch


def _ranks() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather(t: torch.Tensor) -> torch.Tensor:
    """``t`` of every rank, stacked (as Trainer's nested_gather does before its mean)."""
    if _ranks() == 1:
        return t.reshape(1)
    parts = [torch.zeros_like(t) for _ in range(_ranks())]
    torch.distributed.all_gather(parts, t)
    return torch.stack(parts)


class LossWindow:
    def __init__(self):
        self.sum: torch.Tensor | None = None  # this rank's loss summed since the last line
        self.since = 0  # the step of the last line (or where the run started)
        self.device = None

    def start(self, step: int, device, saved: dict | None = None) -> None:
        """At train begin: an empty window at ``step``, or the one saved in the checkpoint resumed from."""
        self.device, self.since, self.sum = device, step, None
        rank = torch.distributed.get_rank() if _ranks() > 1 else 0
        if saved and len(saved["sums"]) == _ranks():  # another number of ranks: a fresh window, as Trainer's
            self.since = int(saved["since"])
            self.sum = torch.tensor(float(saved["sums"][rank]), dtype=torch.float32, device=device)

    def add(self, loss: torch.Tensor) -> None:
        if self.sum is None:
            self.sum = torch.zeros((), dtype=torch.float32, device=loss.device)
        self.sum += loss.detach()  # what Trainer does with its tr_loss: same dtype, same order

    def take(self, step: int) -> float | None:
        """The mean loss per step since the last line (over all ranks), and a new window; None if
        nothing was added (a Trainer that does not feed the window: its own value stands)."""
        if self.sum is None or step <= self.since:
            return None
        value = _gather(self.sum).mean().item() / (step - self.since)  # every rank calls this (a collective)
        self.sum, self.since = None, step
        return value

    def state(self) -> dict:
        """Every rank's open sum (a collective: called on every rank at each save)."""
        t = self.sum if self.sum is not None else torch.zeros((), dtype=torch.float32, device=self.device)
        return {"sums": [float(x) for x in _gather(t).tolist()], "since": self.since}
