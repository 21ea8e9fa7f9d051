"""What final/ says about itself: ``pdp_pruning.json`` (for programs) and ``README.md`` (a Hugging
Face model card, for people).  Both are built from the run's config and the zeros counted in
the saved files; summary.py writes them into final/ before it is renamed into place.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from pdp_gpt2.pdp.core import registry
from pdp_gpt2.pdp.core.attach import method_description, method_record, method_settings  # what the registry's drivers say
from pdp_gpt2.train import flags
from pdp_gpt2.train.config import TrainConfig

# Flags that do not change the model a run makes: left out of the command in the card.
NOT_IN_COMMAND = ("resume", "overwrite_output_dir", "progress")


def manifest(cfg: TrainConfig, targets, saved: dict, stats: dict | None) -> dict:
    """The content of final/pdp_pruning.json (data/manifest.py describes the layout)."""
    pruning = registry.get(cfg.method).prunes
    tensors = {}
    for t in targets:
        d = saved["layers"][t.name]
        target = 0.0
        if pruning:
            target = stats["layers"][t.name]["target"] if stats and t.name in stats["layers"] else cfg.pdp.sparsity
        tensors[f"{t.name}.weight"] = {"shape": list(t.module.weight.shape), "out_dim": t.out_dim,
                                       "numel": d["numel"], "zeros": d["zeros"], "target_sparsity": target}
    return {
        "method": cfg.method, "method_record": method_record(cfg.method, cfg.pdp),
        "method_settings": method_settings(cfg.method, cfg.pdp),  # its own config (PDP's tau, Wanda's groups)
        "pattern": cfg.pdp.pattern if pruning else None,
        "allocation": cfg.pdp.allocation if pruning else None,
        "sparsity_target": cfg.pdp.sparsity if pruning else 0.0, "sparsity_actual": saved["sparsity"],
        "tau": cfg.pdp.tau if registry.get(cfg.method).uses_tau else None,
        "tau_mode": cfg.pdp.tau_mode if registry.get(cfg.method).uses_tau else None,
        "bits": cfg.pdp.bits if pruning and cfg.pdp.quantize else None,
        "base_model": cfg.model, "dataset": cfg.dataset, "tensors": tensors,
    }


def distillation(cfg: TrainConfig) -> dict | None:
    """What --distill did, for summary.json and the card: None without it."""
    if not cfg.distill:
        return None
    return {"alpha": cfg.distill, "temperature": cfg.distill_temperature, "teacher": "the starting model (--model)",
            "kl": "KL(p_teacher || p_student) per token"}


def command(cfg: TrainConfig) -> str:
    """The `pdp-gpt2 train` command that makes this run: every flag whose value is not its default."""
    argv = ["pdp-gpt2", "train"]
    defaults, ignored = flags.cli_defaults(cfg.pdp), flags.ignored(cfg)
    for name, value in flags.values(cfg).items():
        if name in NOT_IN_COMMAND or name in ignored or value == defaults[name] or value is None:
            continue
        if isinstance(value, bool):
            argv += [f"--{name}"] if value else [f"--{name}", "false"]
        elif isinstance(value, list):
            argv += [f"--{name}", ",".join(value)]
        else:
            argv += [f"--{name}", str(value)]
    return shlex.join(argv)


def _hub_model(spec: str) -> str | None:
    from pdp_gpt2.data.models import resolve_model_path

    where = resolve_model_path(spec)
    return where if isinstance(where, str) else None


def _hub_dataset(spec: str) -> str | None:
    from pdp_gpt2.data.hub_datasets import parse_spec
    from pdp_gpt2.data.sources import source_kind

    return parse_spec(spec)[0] if source_kind(spec) == "hub" else None


def _f(x, fmt=".2f") -> str:
    return "-" if x is None else format(x, fmt)


def model_card(cfg: TrainConfig, summary: dict, man: dict, layers_table: str) -> str:
    """final/README.md: YAML front matter (Hugging Face model-card metadata), then the facts."""
    base, data = _hub_model(cfg.model), _hub_dataset(cfg.dataset)
    tags = ["pdp-gpt2", "pruning", "sparse", cfg.method] + ([man["pattern"]] if man["pattern"] else [])
    front = ["---", "library_name: transformers"] + ([f"base_model: {base}"] if base else [])
    front += ["pipeline_tag: text-generation", "tags:"] + [f"- {t}" for t in dict.fromkeys(tags)]
    front += (["datasets:", f"- {data}"] if data else []) + ["---", ""]
    pruned = [n for n, t in man["tensors"].items() if t["target_sparsity"] > 0]
    settings = [("method", cfg.method), ("pattern", man["pattern"]), ("allocation", man["allocation"]),
                ("sparsity (target)", _f(man["sparsity_target"], ".4f")),
                ("sparsity (actual, counted in the saved files)", _f(man["sparsity_actual"], ".4f")),
                ("tau", None if man["tau"] is None else f"{man['tau']:g} ({man['tau_mode']})"),
                ("quantization", None if man["bits"] is None else f"{man['bits']}-bit grid, per output channel"),
                ("schedule", f"{cfg.schedule}, {summary['ramp_steps']} of {summary['train_steps']} steps"
                 if registry.get(cfg.method).gradual else None),
                ("distillation", None if not cfg.distill else
                 f"from the starting model: (1 - {cfg.distill:g}) LM + {cfg.distill:g} T² KL(teacher ‖ student), "
                 f"T = {cfg.distill_temperature:g}"),
                ("base model", f"`{cfg.model}`"), ("dataset", f"`{cfg.dataset}`")]
    name = base or Path(cfg.model).name or cfg.model
    what = (f"{len(pruned)} weight tensors ({summary['target_weights']:,} weights: the Linear/Conv1D layers of the "
            "transformer blocks; embeddings and LM head stay dense) hold exact zeros." if pruned else
            "No weights were pruned.")
    body = [
        f"# {name}, {man['sparsity_actual']:.1%} sparse ({cfg.method})", "",
        f"Method: {method_description(cfg.method)}.", "",
        f"{what} The checkpoint is a plain Hugging Face model: it loads with "
        "`AutoModelForCausalLM.from_pretrained`, no custom code. `pdp_pruning.json` lists the pruned tensors "
        "for programs (`pdp-gpt2 export` reads it).", "",
        "| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in settings if v is not None], "",
        "## Perplexity", "",
        f"Sliding window on `{cfg.dataset}` / {cfg.eval_split}: window {cfg.max_length}, stride {cfg.stride}, "
        f"{summary['eval_tokens']:,} tokens.", "",
        "| model | perplexity |", "|---|---:|",
        f"| dense (before fine-tuning) | {_f(summary['perplexity_dense'])} |",
        f"| soft masks (end of training) | {_f(summary['perplexity_soft'])} |",
        f"| pruned (this checkpoint) | {_f(summary['perplexity'])} |", "",
        "## Per-layer sparsity", "", layers_table,
        "## How it was made", "", "```bash", command(cfg), "```", "",
        "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        'model = AutoModelForCausalLM.from_pretrained("path/to/final")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/final")', "```", "",
    ]
    return "\n".join(front + body)
