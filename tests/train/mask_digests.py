"""Test-only launcher: ``python mask_digests.py DIR <pdp-gpt2 arguments>`` runs the CLI with one
more Trainer callback, which writes ``DIR/rank<r>.json`` ({step: digest of the masks after that
optimizer step}). test_ddp.py runs it under torchrun to compare the ranks' masks at every step."""
import hashlib
import json
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from pdp_gpt2.cli import main
from pdp_gpt2.train import distributed, run


@torch.no_grad()
def mask_digest(model: torch.nn.Module) -> str:
    """sha256 over every mask parametrization's buffers (PDP thresholds, baseline keep-masks)."""
    h = hashlib.sha256()
    for name, module in model.named_modules():
        plist = getattr(getattr(module, "parametrizations", None), "weight", None)
        if plist is None:
            continue
        for bname, buf in plist[0].named_buffers():
            h.update(f"{name}.{bname}".encode())
            h.update(buf.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class MaskDigest(TrainerCallback):
    # Runs after PruningCallback, i.e. on the thresholds just refreshed from this step's weights
    # and before any later forward (ddp_broadcast_buffers is off, so nothing overwrites them).
    def __init__(self, where: Path):
        self.where, self.steps = where, {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.steps[state.global_step] = mask_digest(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.where.mkdir(parents=True, exist_ok=True)
        (self.where / f"rank{distributed.rank()}.json").write_text(
            json.dumps({"world_size": distributed.world_size(), "steps": self.steps}))


class DigestTrainer(run.RunTrainer):
    def train(self, *args, **kwargs):
        self.add_callback(MaskDigest(Path(sys.argv[1])))  # last: after every callback the run adds
        return super().train(*args, **kwargs)


if __name__ == "__main__":
    run.RunTrainer = DigestTrainer  # run() builds its Trainer from this module attribute
    sys.exit(main(sys.argv[2:]))
