"""The model card (README.md) of a compressed or 2:4 export.

final/'s card (train/card.py) says the model loads with ``AutoModelForCausalLM``; a compressed
export does not (its weights are ``model.pdp.safetensors``, which ``from_pretrained`` never
reads), so it gets its own card: how to load it, its size, its runtime options.  A dense export
is a copy of final/ and keeps final/'s card. A shrunk export (shrink.py) is a plain model again,
narrower than final/, and says so in its own card.
"""
from __future__ import annotations

from pdp_gpt2.export.compressed import WEIGHTS_FILE


def _pruning_rows(manifest: dict | None) -> list[str]:
    if manifest is None:
        return ["| pruned tensors | guessed from their zeros (the model has no pdp_pruning.json) |"]
    rows = [("method", manifest.get("method")), ("pattern", manifest.get("pattern")),
            ("sparsity (actual, counted in the weights)", f"{manifest['sparsity_actual']:.4f}"),
            ("quantization", f"{manifest['bits']}-bit grid" if manifest.get("bits") else None),
            ("base model", manifest.get("base_model") and f"`{manifest['base_model']}`"),
            ("dataset", manifest.get("dataset") and f"`{manifest['dataset']}`")]
    return [f"| {k} | {v} |" for k, v in rows if v is not None]


def export_card(fmt: str, report: dict, manifest: dict | None, table: str) -> str:
    """README.md of a ``compressed`` / ``2:4`` export; ``table`` is writer.markdown_table(report)."""
    whole = report["whole_model"]
    sparsity = f", {manifest['sparsity_actual']:.1%} sparse" if manifest else ""
    two_four = fmt == "2:4"
    values = {"auto": "the model's own dtype (exact)", "fp16": "fp16 (rounded: not bit-identical to the dense model)",
              "fp32": "fp32"}.get(report.get("values", "auto"), report.get("values"))
    runtime = [
        "| option | what it does |", "|---|---|",
        '| `runtime="dense"` (default) | a plain Hugging Face model; pruned weights decoded to dense '
        "(quantized codes dequantized) |",
        '| `runtime="sparse"` | the pruned layers on CSR kernels (CPU only): the same logits within fp32 '
        "rounding, faster at high sparsity |",
    ]
    if two_four:
        runtime.append("| `semi_structured=True` | on a CUDA machine the 2:4 layers become "
                       "`torch.sparse.to_sparse_semi_structured` weights (fp16/bf16, supported shapes); "
                       "without CUDA the model stays dense |")
    runtime.append('| `device="cuda"` | move the loaded model there |')
    lines = [
        "---", "library_name: pdp-gpt2", "pipeline_tag: text-generation", "tags:", "- pdp-gpt2", "- pruning",
        "- sparse", f"- {'2-4' if two_four else 'compressed'}", "---", "",
        f"# A pdp-gpt2 {fmt} export{sparsity}", "",
        f"The pruned weights are stored without their zeros in `{WEIGHTS_FILE}` (the pdp-gpt2 sparse format, "
        "docs/format.md). This is **not** a plain Hugging Face checkpoint: `from_pretrained` does not read "
        "it. Load it with `pdp_gpt2.load_compressed` (`pip install pdp-gpt2`), which checks every length and "
        "checksum, and every file of this directory, before it returns a plain Hugging Face model.", "",
        "## Load it", "", "```python", "import pdp_gpt2", "from transformers import AutoTokenizer", "",
        'model = pdp_gpt2.load_compressed("path/to/export")  # runtime="sparse" for the CPU sparse kernels',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/export")', "```", "",
        "Options of `load_compressed`:", "", *runtime, "",
        "From the command line: `pdp-gpt2 eval --model path/to/export --dataset ...` (perplexity) and "
        "`pdp-gpt2 generate path/to/export --runtime sparse --prompt \"...\"` (text and tokens/s).", "",
        "## Size", "",
        f"`{WEIGHTS_FILE}` is {whole['exported_bytes']:,} bytes, {whole['ratio']:.1%} of the dense weight files' "
        f"{whole['dense_bytes']:,} bytes. Stored nonzero values: {values}.", "", table, "",
        "## The pruned model", "", "| | |", "|---|---|", *_pruning_rows(manifest), "",
        "`pdp_pruning.json` lists the pruned tensors, their targets and zeros; `size_report.json` the sizes "
        "above. Files added to this directory later are refused by the loader (README.md and hidden files "
        "aside), since the tokenizer or the model could read them.", "",
    ]
    return "\n".join(lines)


def shrink_card(record: dict, report: dict, manifest: dict | None, table: str) -> str:
    """README.md of a shrunk export: a plain HF model, its widths and parameters before/after."""
    parts, p0, p1 = record["resized"], record["parameters_before"], record["parameters_after"]
    title = "; ".join(f"{p['kind']} {p['before']} -> {p['after']}" for p in parts)
    removed = " and ".join(f"each of its {p['layers']} layers lost the same {p['removed_per_layer']} {p['kind']} "
                           f"(`config.json`: `{p['field']}: {p['after']}`)" for p in parts)
    zeros = [f"Left as zeros: {why}." for why in record.get("kept_as_zeros", [])]
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "tags:", "- pdp-gpt2", "- pruning",
        "- structured-pruning", "---", "",
        f"# A pdp-gpt2 shrunk model: {title}", "",
        f"Its units were pruned whole, then removed with their input and output weights: {removed}. "
        "It is a plain, smaller dense Hugging Face model with the pruned model's logits (up to float "
        "summation order): no pdp-gpt2 code is needed to load or run it.", "", *zeros, *([""] if zeros else []),
        "## Load it", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        'model = AutoModelForCausalLM.from_pretrained("path/to/export")',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/export")', "```", "",
        "## Size", "", "| | before | after |", "|---|---:|---:|",
        *(f"| {p['kind']} per layer (`{p['field']}`) | {p['before']:,} | {p['after']:,} |" for p in parts),
        f"| parameters (a tied LM head counted once) | {p0:,} | {p1:,} ({p1 / p0:.1%}) |", "", table, "",
        "## The pruned model", "", "| | |", "|---|---|", *_pruning_rows(manifest), "",
        "`pdp_pruning.json` keeps the run's record, with `shrink` giving the widths and every sliced tensor's "
        "shape before and after; `size_report.json` the sizes above.", "",
    ]
    return "\n".join(lines)
