"""Write what a finished run hands over: final/ (weights, tokenizer, pdp_pruning.json, README.md
model card), layers.md, summary.json, the closing table.

Sparsity is measured from the files just written (torchao's lesson: count the
zeros that ship, not the masks in memory).  final/ is complete before it is renamed
into place, and summary.json comes last: its presence marks a finished run.
"""
from __future__ import annotations

import time
from pathlib import Path

from safetensors import safe_open

from pdp_gpt2.atomic import atomic_dir, atomic_write_json, atomic_write_text
from pdp_gpt2.data.manifest import write_manifest
from pdp_gpt2.pdp.core import registry
from pdp_gpt2.pdp.core.attach import pruned_targets
from pdp_gpt2.pdp.patterns.structures import removed_units, unit_parameters
from pdp_gpt2.train import card, flags
from pdp_gpt2.train.config import TrainConfig


def saved_sparsity(final_dir: Path, target_names: list[str]) -> dict:
    """Exact zeros per target weight, read back from final/*.safetensors."""
    wanted = {f"{n}.weight": n for n in target_names}
    layers, zeros, total = {}, 0, 0
    for f in sorted(final_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                if key in wanted:
                    w = st.get_tensor(key)
                    z = int((w == 0).sum())
                    layers[wanted[key]] = {"zeros": z, "numel": w.numel(), "sparsity": z / w.numel()}
                    zeros, total = zeros + z, total + w.numel()
    return {"sparsity": zeros / max(total, 1), "zeros": zeros, "numel": total, "layers": layers}


def layers_markdown(saved: dict, stats: dict | None) -> str:
    rows = ["| layer | weights | zeros | sparsity | soft band at end |", "|---|---:|---:|---:|---:|"]
    for name, d in saved["layers"].items():
        band = f"{stats['layers'][name]['band']:.4f}" if stats and name in stats["layers"] else "-"
        rows.append(f"| {name} | {d['numel']} | {d['zeros']} | {d['sparsity']:.4f} | {band} |")
    rows.append(f"| **all targets** | {saved['numel']} | {saved['zeros']} | {saved['sparsity']:.4f} | |")
    return "\n".join(rows) + "\n"


def finish_run(cfg: TrainConfig, model, tokenizer, out: Path, result: dict, tracker) -> dict:
    targets = pruned_targets(model, cfg.pdp)
    final = out / "final"
    stats = result["stats"]
    done: dict = {}

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        saved = saved_sparsity(tmp, [t.name for t in targets])
        summary = run_summary(cfg, result, saved, final)
        if registry.get(cfg.method).prunes and cfg.pdp.mask_pattern.coupled:
            summary["structure"] = structure_summary(model, cfg.pdp.mask_pattern)
        man = card.manifest(cfg, targets, saved, stats)
        write_manifest(tmp, man)
        atomic_write_text(tmp / "README.md", card.model_card(cfg, summary, man, layers_markdown(saved, stats)))
        done.update(saved=saved, summary=summary)

    atomic_dir(final, write)
    saved, summary = done["saved"], done["summary"]
    atomic_write_text(out / "layers.md", layers_markdown(saved, stats))
    atomic_write_json(out / "summary.json", summary)  # last: its presence marks a finished run
    tracker.summary({k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and v is not None})
    tracker.table("layer_sparsity", ["layer", "numel", "zeros", "sparsity"],
                  [[n, d["numel"], d["zeros"], d["sparsity"]] for n, d in saved["layers"].items()])
    print_table(summary)
    return summary


def structure_summary(model, pattern) -> dict:
    """What ``export --shrink`` would remove: the kind of unit, units per layer before and after,
    parameters before and after (or, where the config cannot hold fewer, why they stay as zeros)."""
    structures = pattern.structures(model)  # one kind, one family: attach grouped the targets by them
    widths, removed = [], 0
    for st in structures:
        n = int(removed_units(st).sum())
        widths.append([st.width, st.width - n])
        removed += n * unit_parameters(st)
    fam = structures[0].family
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once
    out = {"kind": fam.kind, "widths": widths, "parameters": total,
           "parameters_after_shrink": total if fam.fixed else total - removed}
    return {**out, "kept_as_zeros": fam.fixed} if fam.fixed else out


def run_summary(cfg: TrainConfig, result: dict, saved: dict, final: Path) -> dict:
    """The content of summary.json."""
    stats = result["stats"]
    gap = None
    if result["ppl_soft"]:
        gap = result["ppl_hard"] / result["ppl_soft"] - 1
    return {
        "method": cfg.method, "model": cfg.model, "dataset": cfg.dataset, "eval_split": cfg.eval_split,
        "sparsity_target": cfg.pdp.sparsity if registry.get(cfg.method).prunes else 0.0,
        "sparsity_actual": saved["sparsity"], "perplexity": result["ppl_hard"],
        "perplexity_dense": result["ppl_dense"], "perplexity_soft": result["ppl_soft"], "soft_hard_gap": gap,
        **({"tau": cfg.pdp.tau} if registry.get(cfg.method).uses_tau else {}), "distill": card.distillation(cfg),
        "train_steps": result["train_steps"], "ramp_steps": result["ramp_steps"],
        # every segment of a resumed run; None after a resume from a checkpoint that recorded no time
        "train_seconds": None if result["train_seconds"] is None else round(result["train_seconds"], 2),
        "eval_tokens": result["eval_tokens"], "eval_seconds": result.get("eval_seconds") or {},
        "band_at_end": stats["band"] if stats else None, "final_dir": str(final),
        "target_weights": saved["numel"], "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        # Per layer: zeros counted in the saved files, plus the soft band the masks had just
        # before finalize (what differs between layers under layer-wise allocation; the report plots it).
        "layers": {n: {**d, **({"band": stats["layers"][n]["band"]} if stats and n in stats["layers"] else {})}
                   for n, d in saved["layers"].items()},
        "config": flags.recorded(cfg),  # without the flags the method ignores
        **({"lm_eval": result["lm_eval"]} if result.get("lm_eval") else {}),
    }


def comparable(target: float, actual: float, least: int = 4, most: int = 8) -> tuple[str, str]:
    """Both numbers with the same decimals, as many as the target needs to be shown exactly (4 to 8):
    a target of 0.99999 printed as "1.000" next to an actual 0.9900 hid the difference."""
    digits = next((d for d in range(least, most + 1) if round(target, d) == target), most)
    return f"{target:.{digits}f}", f"{actual:.{digits}f}"


def print_table(s: dict) -> None:
    def f(x):
        return "-" if x is None else f"{x:.2f}"

    target, actual = comparable(s["sparsity_target"], s["sparsity_actual"])
    took = ("training time unknown: resumed from a checkpoint that recorded none" if s["train_seconds"] is None
            else f"{s['train_seconds']:.0f} s")
    lines = [
        f"pdp-gpt2: {s['method']} on {s['model']} / {s['dataset']} ({s['train_steps']} steps, {took})",
        f"  perplexity ({s['eval_split']})   dense {f(s['perplexity_dense'])}   soft {f(s['perplexity_soft'])}"
        f"   pruned {f(s['perplexity'])}",
        f"  sparsity           target {target}   actual {actual}"
        f" ({s['target_weights']:,} target weights, counted in the saved files)",
        f"  checkpoint         {s['final_dir']}",
    ]
    if st := s.get("structure"):
        after = sorted({w for _, w in st["widths"]})
        left = (f"kept as zeros ({st['kept_as_zeros']})" if st.get("kept_as_zeros") else
                f"parameters {st['parameters']:,} -> {st['parameters_after_shrink']:,} with export --shrink")
        lines.insert(-1, f"  structure          {st['kind']} {st['widths'][0][0]} -> {'/'.join(map(str, after))} per "
                         f"layer in {len(st['widths'])} layers; {left}")
    print("\n".join(lines), flush=True)
