"""Dense pretraining of the small embedded GPT-2: tokenizer, model, loop, record.

Kept deliberately plain (AdamW, linear warm-up then cosine decay, gradient
clipping) so it runs in minutes on two CPU cores and is easy to audit.
"""
from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pdp_gpt2.data.sources import load_split_texts, token_stream
from pdp_gpt2.data.perplexity import perplexity
from pdp_gpt2.errors import UsageError

EOS = "<|endoftext|>"


def _f(default, help_: str):
    return field(default=default, metadata={"help": help_})


@dataclass
class PretrainConfig:
    """Everything `pdp-gpt2 pretrain` needs; field names are the CLI flags, validation is in __post_init__."""

    dataset: str = _f("shakespeare", "dataset spec: 'shakespeare' (embedded), local .txt files/globs, "
                                     "or a HF dataset NAME[:CONFIG]")
    vocab_size: int = _f(4096, "byte-level BPE vocabulary size (the tokenizer is trained on the train split only)")
    n_layer: int = _f(4, "number of transformer blocks")
    n_embd: int = _f(192, "hidden size")
    n_head: int = _f(4, "attention heads (must divide n_embd)")
    n_positions: int = _f(256, "context length; also the training block size and the evaluation window")
    dropout: float = _f(0.0, "dropout for residual, embedding and attention")
    epochs: float = _f(3.0, "passes over the train split (fractional allowed)")
    max_steps: int = _f(0, "optimizer steps; overrides --epochs when > 0")
    batch_size: int = _f(16, "blocks per optimizer step")
    learning_rate: float = _f(1e-3, "peak AdamW learning rate")
    min_lr_ratio: float = _f(0.1, "final learning rate as a fraction of the peak (cosine decay)")
    warmup_steps: int = _f(50, "linear warm-up steps")
    weight_decay: float = _f(0.1, "AdamW weight decay on matrices (not on biases or LayerNorm)")
    grad_clip: float = _f(1.0, "max gradient norm")
    seed: int = _f(0, "random seed (init, block offsets and order)")
    eval_batch_size: int = _f(16, "windows per batch in the final perplexity evaluation")
    eval_every: int = _f(0, "validation perplexity every N steps (non-overlapping windows), written to "
                            "pretrain_curve.jsonl; the model with the best one is kept (early stopping). "
                            "0 = evaluate only at the end")

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_embd", "n_head", "n_positions", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be positive, got {getattr(self, name)}")
        checks = [
            (self.n_embd % self.n_head == 0, f"--n_head {self.n_head} does not divide --n_embd {self.n_embd}"),
            (self.n_positions >= 4, f"--n_positions must be at least 4, got {self.n_positions}"),
            (self.vocab_size >= 257, f"--vocab_size must exceed the 256 byte symbols, got {self.vocab_size}"),
            (self.epochs > 0 or self.max_steps > 0, "give a positive --epochs or --max_steps"),
            (0 <= self.dropout < 1, f"--dropout must be in [0, 1), got {self.dropout}"),
            (self.learning_rate > 0, f"--learning_rate must be positive, got {self.learning_rate}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(msg)


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on ``texts`` only, wrapped as a GPT-2 tokenizer (EOS = BOS = UNK)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False)
    tok = GPT2TokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS)
    tok.model_max_length = 10**30  # documents are long; blocks are cut by data.tokenize_and_group
    return tok


def build_model(cfg: PretrainConfig, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                        n_layer=cfg.n_layer, n_head=cfg.n_head, resid_pdrop=cfg.dropout,
                        embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config)


def lr_at(step: int, total: int, cfg: PretrainConfig) -> float:
    """Linear warm-up to ``learning_rate``, cosine decay to ``min_lr_ratio`` of it."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.learning_rate * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def epoch_blocks(stream: torch.Tensor, block: int, gen: torch.Generator) -> torch.Tensor:
    """Shuffled blocks cut at a random offset, so each epoch sees different block boundaries."""
    offset = int(torch.randint(block, (1,), generator=gen))
    n = (len(stream) - offset) // block
    blocks = stream[offset: offset + n * block].view(n, block)
    return blocks[torch.randperm(n, generator=gen)]


def unigram_perplexity(train: torch.Tensor, test: torch.Tensor, vocab_size: int) -> float:
    """Add-one smoothed unigram baseline: the number a language model must clearly beat."""
    counts = torch.bincount(train, minlength=vocab_size).double() + 1
    logp = (counts / counts.sum()).log()
    return math.exp(-logp[test[1:]].mean().item())


def pretrain(cfg: PretrainConfig, output_dir: Path, command: str = "") -> dict:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    train_texts = load_split_texts(cfg.dataset, "train")
    tokenizer = train_tokenizer(train_texts, cfg.vocab_size)
    train_ids = token_stream(tokenizer, train_texts)
    model = build_model(cfg, tokenizer)
    model.train()

    steps_per_epoch = len(train_ids) // cfg.n_positions // cfg.batch_size
    total = cfg.max_steps or max(1, round(cfg.epochs * steps_per_epoch))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate, betas=(0.9, 0.95))
    batches: list[torch.Tensor] = []
    losses = []
    curve: list[dict] = []
    best: tuple[float, int, dict] | None = None  # (val ppl, step, state) of the best model so far
    val_ids = token_stream(tokenizer, load_split_texts(cfg.dataset, "validation")) if cfg.eval_every else None
    output_dir.mkdir(parents=True, exist_ok=True)
    t_train = time.time()
    bar = tqdm(range(total), desc="pretrain")
    for step in bar:
        if not batches:
            batches = list(epoch_blocks(train_ids, cfg.n_positions, gen).split(cfg.batch_size))
            batches = [b for b in batches if len(b) == cfg.batch_size][::-1]  # pop() from the end
        x = batches.pop()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
        if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == total):
            # Non-overlapping windows: a cheap, consistent curve; the final numbers below use the sliding window.
            model.eval()
            v = perplexity(model, val_ids, window=cfg.n_positions, stride=cfg.n_positions,
                           batch_size=cfg.eval_batch_size, desc="val", progress=False)["perplexity"]
            model.train()
            point = {"step": step + 1, "tokens": (step + 1) * cfg.batch_size * cfg.n_positions,
                     "lr": lr_at(step, total, cfg), "train_loss": sum(losses[-50:]) / len(losses[-50:]),
                     "val_ppl": v, "seconds": round(time.time() - t_train, 1)}
            curve.append(point)
            with open(output_dir / "pretrain_curve.jsonl", "a") as f:
                f.write(json.dumps(point) + "\n")
            if best is None or v < best[0]:
                best = (v, step + 1, {k: t.detach().clone() for k, t in model.state_dict().items()})
    train_s = time.time() - t_train
    best_step = total
    if best is not None:  # early stopping: keep the model with the best validation perplexity
        model.load_state_dict(best[2])
        best_step = best[1]
    model.eval()

    results = {}
    for split in ("validation", "test"):
        ids = token_stream(tokenizer, load_split_texts(cfg.dataset, split))
        r = perplexity(model, ids, window=cfg.n_positions, stride=cfg.n_positions // 2,
                       batch_size=cfg.eval_batch_size, desc=split)
        r["unigram_perplexity"] = unigram_perplexity(train_ids, ids, len(tokenizer))
        results[split] = r

    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    record = {
        "command": command,
        "config": asdict(cfg),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens": len(train_ids),
        "steps": total,
        "tokens_seen": total * cfg.batch_size * cfg.n_positions,
        "train_seconds": round(train_s, 1),
        "wall_seconds": round(time.time() - t0, 1),
        "train_tokens_per_second": round(total * cfg.batch_size * cfg.n_positions / train_s),
        "final_train_loss": sum(losses[-20:]) / len(losses[-20:]),
        "best_step": best_step,
        "val_curve": curve,
        "eval": results,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} CPU thread(s)",
    }
    (output_dir / "pretrain.json").write_text(json.dumps(record, indent=2) + "\n")
    (output_dir / "PRETRAIN.md").write_text(render_markdown(record))
    return record


def render_markdown(r: dict) -> str:
    c = r["config"]
    ev = r["eval"]
    return "\n".join([
        "# Embedded Shakespeare GPT-2: dense pretraining record",
        "",
        f"Command: `{r['command']}`",
        "",
        f"- Model: GPT2LMHeadModel, {c['n_layer']} layers, n_embd {c['n_embd']}, {c['n_head']} heads, "
        f"n_positions {c['n_positions']}, vocab {c['vocab_size']} (byte-level BPE trained on the train split), "
        f"{r['parameters']:,} parameters (tied embeddings).",
        f"- Data: `{c['dataset']}` train split, {r['train_tokens']:,} tokens; {r['steps']} steps of "
        f"{c['batch_size']} x {c['n_positions']} tokens ({r['tokens_seen']:,} tokens seen).",
        f"- Optimizer: AdamW lr {c['learning_rate']} (warm-up {c['warmup_steps']} steps, cosine to "
        f"{c['min_lr_ratio']}x), weight decay {c['weight_decay']}, clip {c['grad_clip']}, dropout {c['dropout']}, "
        f"seed {c['seed']}.",
        f"- Time: {r['wall_seconds']:.0f} s wall in total, {r['train_seconds']:.0f} s training "
        f"({r['train_tokens_per_second']:,} tokens/s) on {r['machine']}.",
        f"- Final train loss (mean of last 20 steps): {r['final_train_loss']:.3f}",
        "",
        f"Sliding-window perplexity (window {c['n_positions']}, stride {c['n_positions'] // 2}):",
        "",
        "| split | perplexity | NLL (nats/token) | scored tokens | unigram baseline |",
        "|---|---:|---:|---:|---:|",
        *[f"| {s} | {ev[s]['perplexity']:.2f} | {ev[s]['nll']:.4f} | {ev[s]['tokens']:,} | "
          f"{ev[s]['unigram_perplexity']:.1f} |" for s in ("validation", "test")],
        "",
    ])
