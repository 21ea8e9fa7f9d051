"""--distill under DDP: two ranks, each with its own unwrapped teacher and half of a batch, end with the
gradient one process computes on the whole batch; so the KL term is averaged over the same tokens as the
LM loss (Trainer's token count over both ranks and its device factor, distill.DistillMixin)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, tiny_gpt2

ALPHA, T = 0.5, 2.0

SCRIPT = '''
import sys
import torch
from transformers import Trainer, TrainingArguments
sys.path.insert(0, {tests!r})
from helpers import tiny_gpt2
from pdp_gpt2.train.distill import DistillMixin, frozen_copy


class DistillTrainer(DistillMixin, Trainer):
    pass


def batch():
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[1, 3:9] = -100  # the ranks hold different numbers of counted tokens
    return ids, labels


args = TrainingArguments(output_dir={out!r}, use_cpu=True, report_to="none", disable_tqdm=True)
model = tiny_gpt2(seed=0).train()
teacher = frozen_copy(tiny_gpt2(seed=1))
teacher.lm_head.weight.data.mul_(20)  # far from the student: the KL term matters
trainer = DistillTrainer(model=model, args=args).distill_from(teacher, {alpha}, {t})
ids, labels = batch()
n_items = (labels[:, 1:] != -100).sum()  # what Trainer passes: the count over every rank's batch
rank = trainer.args.process_index
mine = slice(2 * rank, 2 * rank + 2)
wrapped = trainer.accelerator.prepare(model)
loss = trainer.compute_loss(wrapped, {{"input_ids": ids[mine], "labels": labels[mine]}}, num_items_in_batch=n_items)
loss.backward()
assert trainer.teacher is teacher and not isinstance(trainer.teacher, torch.nn.parallel.DistributedDataParallel)
if rank == 0:
    torch.save({{n: p.grad for n, p in model.named_parameters()}}, {grads!r})
'''


@pytest.mark.slow  # torchrun, 2 ranks
def test_two_ranks_give_the_one_process_gradient(tmp_path):
    from transformers import Trainer, TrainingArguments

    from pdp_gpt2.train.distill import DistillMixin, frozen_copy

    grads = tmp_path / "grads.pt"
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests"), out=str(tmp_path / "o"), alpha=ALPHA, t=T,
                                    grads=str(grads)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = torch.load(grads)

    class DistillTrainer(DistillMixin, Trainer):
        pass

    model = tiny_gpt2(seed=0).train()
    teacher = frozen_copy(tiny_gpt2(seed=1))
    teacher.lm_head.weight.data.mul_(20)
    args = TrainingArguments(output_dir=str(tmp_path / "one"), use_cpu=True, report_to="none", disable_tqdm=True)
    trainer = DistillTrainer(model=model, args=args).distill_from(teacher, ALPHA, T)
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[1, 3:9] = -100
    trainer.compute_loss(model, {"input_ids": ids, "labels": labels},
                         num_items_in_batch=(labels[:, 1:] != -100).sum()).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(ddp[name], p.grad, rtol=1e-4, atol=1e-7), name
    # and the KL term is in both: without it the gradient differs
    plain = tiny_gpt2(seed=0).train()
    plain(input_ids=ids, labels=labels).loss.backward()
    w = "transformer.h.0.mlp.c_fc.weight"
    assert not torch.allclose(dict(plain.named_parameters())[w].grad, ddp[w], rtol=1e-2)
