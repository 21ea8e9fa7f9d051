"""A self-describing final/: pdp_pruning.json (counted in the saved files), the README.md model card,
and export reading the manifest instead of guessing from zeros."""
import json
import shlex
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pdp_gpt2.cli import main
from pdp_gpt2.data.manifest import MANIFEST, read_manifest
from pdp_gpt2.errors import UsageError

TARGETS = [f"transformer.h.{i}.{m}.weight" for i in range(2)
           for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_assets):
    model_dir, corpus = tiny_assets
    out = tmp_path_factory.mktemp("card") / "run"
    argv = ["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
            "--max_steps", "6", "--warmup_steps", "3", "--batch_size", "4", "--max_length", "32",
            "--progress", "false", "--lr_warmup_steps", "0", "--sparsity", "0.75", "--tau", "0.03"]
    assert main(argv) == 0
    return out


def _zeros_in_files(final):
    out = {}
    for f in final.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as st:
            out.update({k: int((st.get_tensor(k) == 0).sum()) for k in st.keys()})
    return out


def test_manifest_counts_are_the_zeros_in_the_saved_files(run):
    m = json.loads((run / "final" / MANIFEST).read_text())
    assert (m["format"], m["version"], m["method"], m["pattern"], m["tau"], m["bits"]) == (
        "pdp-gpt2/pruning", 1, "pdp", "unstructured", 0.03, None)
    assert sorted(m["tensors"]) == sorted(TARGETS)
    zeros = _zeros_in_files(run / "final")
    for name, t in m["tensors"].items():
        assert t["zeros"] == zeros[name] == int(0.75 * t["numel"]), name
        assert t["out_dim"] == 1 and t["target_sparsity"] == 0.75  # GPT-2's Conv1D stores (in, out)
    assert m["sparsity_actual"] == json.loads((run / "summary.json").read_text())["sparsity_actual"]
    assert read_manifest(run / "final") == m


def test_model_card_front_matter_table_perplexities_and_command(run):
    from pdp_gpt2.cli.train import add_arguments, config_from_args
    from pdp_gpt2.cli.main import OneLineParser

    card = (run / "final" / "README.md").read_text()
    s = json.loads((run / "summary.json").read_text())
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "tags:\n- pdp-gpt2\n- pruning\n- sparse\n- pdp\n- unstructured\n" in front
    assert "base_model" not in front  # a local directory is no hub id
    for name, d in s["layers"].items():
        assert f"| {name} | {d['numel']} | {d['zeros']} | {d['sparsity']:.4f} |" in body
    for label, key in (("dense (before fine-tuning)", "perplexity_dense"),
                       ("soft masks (end of training)", "perplexity_soft"), ("pruned (this checkpoint)", "perplexity")):
        assert f"| {label} | {s[key]:.2f} |" in body
    # The command in the card makes the same config (bar the flags that do not change the model).
    line = next(ln for ln in body.splitlines() if ln.startswith("pdp-gpt2 train "))
    parser = OneLineParser()
    add_arguments(parser)
    from pdp_gpt2.train import flags

    again = flags.recorded(config_from_args(parser.parse_args(shlex.split(line)[2:])))  # as the run records it
    want = dict(s["config"], progress=True)  # --progress false was left out: it does not change the model
    assert again == want


def test_model_card_of_a_hub_model_and_dataset_names_them():
    from pdp_gpt2.train import card
    from pdp_gpt2.train.config import PDPConfig, TrainConfig

    cfg = TrainConfig(model="gpt2", dataset="wikitext:wikitext-2-raw-v1", method="gmp", pdp=PDPConfig(pattern="2:4", sparsity=0.5))
    man = {"pattern": "2:4", "allocation": "layer", "sparsity_target": 0.5, "sparsity_actual": 0.5, "tau": None,
           "tau_mode": None, "bits": None, "tensors": {"a.weight": {"target_sparsity": 0.5}}}
    summary = {"ramp_steps": 5, "train_steps": 10, "target_weights": 8, "eval_tokens": 100,
               "perplexity_dense": 30.0, "perplexity_soft": None, "perplexity": 31.5}
    text = card.model_card(cfg, summary, man, "| layer |\n")
    assert "\nbase_model: gpt2\n" in text and "\ndatasets:\n- wikitext\n---\n" in text and "\n- 2:4\n" in text
    assert "| soft masks (end of training) | - |" in text and "| tau |" not in text
    assert card.command(cfg) == ("pdp-gpt2 train --model gpt2 --dataset wikitext:wikitext-2-raw-v1 "
                                 "--method gmp --pattern 2:4")  # 2:4 implies sparsity 0.5


def _wte_with_natural_zeros(src, dst):
    """A copy of final/ whose (untargeted, tied) embedding has 30 % exact zeros."""
    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    state = load_file(str(f))
    w = state["transformer.wte.weight"]
    w.view(-1)[torch.randperm(w.numel(), generator=torch.Generator().manual_seed(0))[: int(0.3 * w.numel())]] = 0
    save_file(state, str(f), metadata={"format": "pt"})
    return dst


def test_export_reads_the_manifest_not_the_zeros(run, tmp_path, capsys):
    src = _wte_with_natural_zeros(run / "final", tmp_path / "final")
    assert main(["export", str(src), "--out", str(tmp_path / "new")]) == 0
    assert "note:" not in capsys.readouterr().out
    report = json.loads((tmp_path / "new" / "size_report.json").read_text())
    assert report["pruned_tensors"] == 8  # the 8 targets; the 30 %-zero embedding is not pruned

    (src / MANIFEST).unlink()  # a model pruned before manifests: the old guess, with a note
    assert main(["export", str(src), "--out", str(tmp_path / "old")]) == 0
    assert f"has no {MANIFEST}" in capsys.readouterr().out
    report = json.loads((tmp_path / "old" / "size_report.json").read_text())
    assert report["pruned_tensors"] == 9  # >= 25 % zeros: the guess takes the tied LM head for pruned


def test_bad_manifest_is_one_usage_error(tmp_path):
    (tmp_path / MANIFEST).write_text('{"format": "something else"}')
    with pytest.raises(UsageError, match="is not a pdp-gpt2 pruning manifest"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{")
    with pytest.raises(UsageError, match="is not valid JSON"):
        read_manifest(tmp_path)
    assert read_manifest(tmp_path / "nowhere") is None
