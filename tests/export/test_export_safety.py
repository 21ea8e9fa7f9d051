"""What export writes, where, and what it refuses.

* the export's header lists its complete file set, and the loader refuses any file the model or
  the tokenizer would read that is not in it (an added added_tokens.json moved perplexity with exit 0).
* export recounts the zeros of pdp_pruning.json from the weights and refuses a manifest that
  disagrees (edited counts were copied into the export and sealed by its hash).
* --overwrite replaces an earlier export only (it deleted a whole training run), and two
  exports racing to one --out never replace each other without --overwrite.
* every exported file has the mode of a normally created file (model.pdp.safetensors was 0600).
* a model directory without a tokenizer is refused by the CLI (eval and generate refuse the result).
* a compressed export carries its own model card, naming the loader that works.
"""
import json
import os
import re
import shutil
import stat

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import pdp_gpt2
from pdp_gpt2 import UsageError
from pdp_gpt2.cli import main
from pdp_gpt2.data.manifest import MANIFEST, read_manifest, write_manifest
from pdp_gpt2.export import compressed as C
from pdp_gpt2.export import writer
from pdp_gpt2.export.writer import export
from pdp_gpt2.pdp.core.targets import find_targets
from pdp_gpt2.train.config import transformers_version

from helpers import pruned_copy, tiny_gpt2


def _manifest_of(model_dir):
    """pdp_pruning.json as a run writes it, counted from the weights in model_dir."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tensors, zeros, numel = {}, 0, 0
    for t in find_targets(model):
        w = t.module.weight
        z = int((w == 0).sum())
        tensors[f"{t.name}.weight"] = {"shape": list(w.shape), "out_dim": t.out_dim, "numel": w.numel(),
                                       "zeros": z, "target_sparsity": 0.9}
        zeros, numel = zeros + z, numel + w.numel()
    return {"method": "pdp", "pattern": "unstructured", "allocation": "layer", "sparsity_target": 0.9,
            "sparsity_actual": zeros / numel, "tau": 0.02, "tau_mode": "relative", "bits": None,
            "base_model": "tiny", "dataset": "corpus.txt", "tensors": tensors}


@pytest.fixture(scope="module")
def final_dir(tiny_assets, tmp_path_factory):
    """A finished run's final/: 90 % zeros, tokenizer, pdp_pruning.json, README.md (never modified: copy it)."""
    d = pruned_copy(tiny_assets[0], tmp_path_factory.mktemp("src") / "final")
    write_manifest(d, _manifest_of(d))
    (d / "README.md").write_text("# final\n\nloads with `AutoModelForCausalLM.from_pretrained`\n")
    return d


@pytest.fixture
def src(final_dir, tmp_path):
    return shutil.copytree(final_dir, tmp_path / "final")


@pytest.fixture(scope="module")
def exported_once(final_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "out"
    export(final_dir, out)
    return out


@pytest.fixture
def exported(exported_once, tmp_path):
    return shutil.copytree(exported_once, tmp_path / "out", symlinks=True)


def _one_line(capsys, argv, *needles):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _no_partials(parent):
    assert not [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# ---- the complete file set -------------------------------------------------------------------------

def test_header_and_report_list_every_file_of_the_export(exported):
    _, meta = C.read_compressed(exported / C.WEIGHTS_FILE)
    on_disk = sorted(p.name for p in exported.iterdir())
    assert sorted(meta["files"]) == sorted(set(on_disk) - set(C.NOT_CHECKSUMMED))
    assert {"tokenizer.json", "tokenizer_config.json", "config.json", MANIFEST} <= set(meta["files"])
    assert json.loads((exported / "size_report.json").read_text())["files"] == on_disk


ADDED = {  # files transformers' tokenizer (or model) loading reads when present
    "added_tokens.json": json.dumps({"the quick": 9000, "zzz": 9001}),
    "special_tokens_map.json": json.dumps({"eos_token": "the", "bos_token": "the", "unk_token": "the"}),
    "chat_template.jinja": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    "vocab.json": json.dumps({"a": 0}),
    "generation_config.json.bak": "{}",
    "additional_chat_templates/tool.jinja": "{{ messages }}",
}


@pytest.mark.parametrize("name", list(ADDED))
def test_an_added_file_is_refused_by_the_loader_and_the_cli(exported, capsys, name):
    path = exported / name
    # transformers < 5 saves special_tokens_map.json with the tokenizer: then it is a changed file of the export
    changed = path.exists()
    path.parent.mkdir(exist_ok=True)
    path.write_text(ADDED[name])
    top = name.split("/")[0]
    with pytest.raises(UsageError, match=re.escape(top)):
        pdp_gpt2.load_compressed(exported)
    _one_line(capsys, ["generate", str(exported), "--prompt", "the", "--max_new_tokens", "2"], top,
              "is corrupt" if changed else "not part of")


@pytest.mark.skipif(transformers_version() < (5, 0), reason="transformers < 5 ignores added_tokens.json beside "
                    "tokenizer.json (the loader refuses the file all the same: the test above)")
def test_added_tokens_json_really_changes_the_tokenizer(exported):
    """Why the loader must refuse it: transformers reads it and the token ids change."""
    before = AutoTokenizer.from_pretrained(exported)
    (exported / "added_tokens.json").write_text(ADDED["added_tokens.json"])
    after = AutoTokenizer.from_pretrained(exported)
    assert len(after) > len(before)


def test_harmless_additions_load(exported):
    (exported / "README.md").write_text("my own notes on this model\n")  # no loader reads a model card
    (exported / ".gitattributes").write_text("*.safetensors filter=lfs\n")  # a hub clone
    (exported / ".git").mkdir()
    (exported / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (exported / "size_report.json").write_text("{}")  # informational only
    model = pdp_gpt2.load_compressed(exported)
    assert isinstance(model, torch.nn.Module)


# ---- counts recounted from the weights ----------------------------------------------------------

def _edit_manifest(src, edit):
    m = read_manifest(src)
    edit(m)
    (src / MANIFEST).write_text(json.dumps(m))


EDITS = {
    "zeros": (lambda m: m["tensors"]["transformer.h.0.attn.c_attn.weight"].update(zeros=5),
              "transformer.h.0.attn.c_attn.weight"),
    "sparsity_actual": (lambda m: m.update(sparsity_actual=0.99), "sparsity_actual"),
    "numel": (lambda m: m["tensors"]["transformer.h.1.mlp.c_proj.weight"].update(numel=7),
              "transformer.h.1.mlp.c_proj.weight"),
    "shape": (lambda m: m["tensors"]["transformer.h.1.mlp.c_fc.weight"].update(shape=[1, 2]),
              "transformer.h.1.mlp.c_fc.weight"),
}


@pytest.mark.parametrize("what", list(EDITS))
@pytest.mark.parametrize("fmt", ["compressed", "dense"])
def test_manifest_counts_that_disagree_with_the_weights_are_refused(src, tmp_path, capsys, what, fmt):
    edit, needle = EDITS[what]
    _edit_manifest(src, edit)
    out = tmp_path / "out"
    _one_line(capsys, ["export", str(src), "--out", str(out), "--format", fmt], MANIFEST, needle)
    assert not out.exists()
    _no_partials(tmp_path)


def test_an_intact_manifest_is_copied_unchanged(exported, final_dir):
    assert json.loads((exported / MANIFEST).read_text()) == json.loads((final_dir / MANIFEST).read_text())


# ---- --overwrite replaces an earlier export, nothing else ----------------------------------------

def _fake_run(root):
    """What a training run directory holds (the files export must never delete)."""
    (root / "checkpoint-10").mkdir(parents=True)
    (root / "checkpoint-10" / "model.safetensors").write_bytes(b"weights")
    (root / "run_config.json").write_text(json.dumps({"model": "m", "dataset": "d", "method": "pdp", "pdp": {}}))
    (root / "summary.json").write_text("{}")
    (root / "metrics.jsonl").write_text("{}\n")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_overwrite_refuses_a_training_run(src, tmp_path, capsys):
    run = tmp_path / "run"
    before = _fake_run(run)
    _one_line(capsys, ["export", str(src), "--out", str(run), "--overwrite"], "not a pdp-gpt2 export",
              "refusing to delete")
    assert _tree(run) == before
    _no_partials(tmp_path)


def test_overwrite_refuses_an_export_holding_something_else(exported, src, tmp_path, capsys):
    (exported / "notes.txt").write_text("mine\n")
    (exported / ".git").mkdir()
    before = _tree(exported)
    _one_line(capsys, ["export", str(src), "--out", str(exported), "--overwrite"], "refusing to delete",
              "besides the export")
    assert _tree(exported) == before and (exported / "notes.txt").read_text() == "mine\n"


def test_overwrite_refuses_a_directory_that_is_no_export(src, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "size_report.json").write_text("not json")  # a look-alike is not enough
    _one_line(capsys, ["export", str(src), "--out", str(out), "--overwrite"], "not a pdp-gpt2 export")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "size_report.json"]


@pytest.mark.parametrize("first, second", [("compressed", "dense"), ("dense", "2:4"), ("2:4", "compressed")])
def test_overwrite_replaces_an_earlier_export(tmp_path, tiny_assets, first, second):
    src = _pruned(tiny_assets, tmp_path / "final", "2:4")  # 2:4 fits every format
    out = tmp_path / "out"
    assert main(["export", str(src), "--out", str(out), "--format", first]) == 0
    assert main(["export", str(src), "--out", str(out), "--format", second, "--overwrite"]) == 0
    assert json.loads((out / "size_report.json").read_text())["format"] == second
    assert (out / "model.safetensors").is_file() == (second == "dense")
    assert (out / C.WEIGHTS_FILE).is_file() == (second != "dense")
    _no_partials(tmp_path)


def test_out_that_is_or_holds_the_source_is_one_line(src, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(src)
    before = _tree(src)
    for out in (".", "..", str(src), str(tmp_path), "sub", str(src / "export")):
        for extra in ([], ["--overwrite"]):
            _one_line(capsys, ["export", str(src), "--out", out, *extra], "the model being exported")
    assert _tree(src) == before
    _no_partials(tmp_path)


def test_out_dot_inside_an_earlier_export_overwrites_it(exported, src, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(exported)
    _one_line(capsys, ["export", str(src), "--out", "."], "not empty")
    assert main(["export", str(src), "--out", ".", "--overwrite", "--format", "dense"]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file() and not (tmp_path / "out" / C.WEIGHTS_FILE).exists()
    _no_partials(tmp_path)


def test_out_that_is_a_symlink_is_refused(exported, src, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(exported)
    for extra in ([], ["--overwrite"]):
        _one_line(capsys, ["export", str(src), "--out", str(link), *extra], "symbolic link")
    assert link.is_symlink() and (exported / C.WEIGHTS_FILE).is_file()


# ---- two exports to one --out --------------------------------------------------------------------

def test_a_second_export_without_overwrite_is_refused(exported, src, tmp_path, capsys):
    before = (exported / C.WEIGHTS_FILE).read_bytes()
    _one_line(capsys, ["export", str(src), "--out", str(exported), "--format", "dense"], "not empty")
    assert (exported / C.WEIGHTS_FILE).read_bytes() == before


def test_an_export_that_lands_first_is_not_replaced(src, tmp_path, capsys, monkeypatch):
    """Two exports race to one --out: the one that finishes second is refused, not swapped in."""
    out = tmp_path / "out"
    real = writer.size_report
    raced = []

    def other_export_lands(*a, **k):  # while this export is writing, another one finishes into --out
        if not raced:
            raced.append(1)
            export(src, out, "dense")
        return real(*a, **k)

    monkeypatch.setattr(writer, "size_report", other_export_lands)
    _one_line(capsys, ["export", str(src), "--out", str(out)], str(out), "meanwhile")
    assert (out / "model.safetensors").is_file() and not (out / C.WEIGHTS_FILE).exists()  # the first one's
    assert AutoModelForCausalLM.from_pretrained(out) is not None
    _no_partials(tmp_path)


# ---- file modes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["compressed", "dense"])
def test_exported_files_have_the_created_mode(src, tmp_path, fmt):
    os.chmod(src / "model.safetensors", 0o600)  # as safetensors wrote it in older runs
    old = os.umask(0o022)
    try:
        export(src, tmp_path / "out", fmt)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert set(modes.values()) == {0o644}, modes
    assert (C.WEIGHTS_FILE if fmt == "compressed" else "model.safetensors") in modes


# ---- no tokenizer ---------------------------------------------------------------------------------

def test_cli_refuses_a_model_without_a_tokenizer(tmp_path, capsys):
    model = tiny_gpt2()
    pdp_gpt2.attach(model, pdp_gpt2.PDPConfig(sparsity=0.5)).finalize()
    model.save_pretrained(tmp_path / "pruned")
    out = tmp_path / "exp"
    for fmt in ("compressed", "dense"):
        _one_line(capsys, ["export", str(tmp_path / "pruned"), "--out", str(out), "--format", fmt],
                  "no tokenizer", str(tmp_path / "pruned"))
    assert not out.exists()
    _no_partials(tmp_path)


# ---- the compressed export's own model card ---------------------------------------------------

def _code_blocks(card):
    return re.findall(r"```python\n(.*?)```", card, re.S)


@pytest.mark.parametrize("fmt", ["compressed", "2:4"])
def test_compressed_card_names_the_loader_that_works(tiny_assets, tmp_path, fmt):
    src = _pruned(tiny_assets, tmp_path / "final", "2:4" if fmt == "2:4" else "unstructured")
    (src / "README.md").write_text("loads with `AutoModelForCausalLM.from_pretrained`\n")  # final/'s card
    report = export(src, tmp_path / "out", fmt)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "pdp_gpt2.load_compressed" in card and 'runtime="sparse"' in card
    assert ("semi_structured=True" in card) == (fmt == "2:4")
    assert f"{report['whole_model']['exported_bytes']:,} bytes" in card
    blocks = _code_blocks(card)
    assert blocks and not any("AutoModelForCausalLM" in b for b in blocks)
    # Load it exactly as the card says.
    scope = {}
    exec(blocks[0].replace("path/to/export", str(tmp_path / "out")), scope)
    want = load_file(str(src / "model.safetensors"))
    got = scope["model"].state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert scope["tokenizer"]("the quick").input_ids == AutoTokenizer.from_pretrained(src)("the quick").input_ids


def _pruned(tiny_assets, dst, pattern):
    """The tiny model pruned and finalized with the core API (2:4 or 90 % unstructured), with tokenizer + manifest."""
    model = AutoModelForCausalLM.from_pretrained(tiny_assets[0])
    sparsity = 0.5 if pattern == "2:4" else 0.9
    pdp_gpt2.attach(model, pdp_gpt2.PDPConfig(sparsity=sparsity, pattern=pattern)).finalize()
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(tiny_assets[0]).save_pretrained(dst)
    write_manifest(dst, _manifest_of(dst))
    return dst


def test_dense_export_keeps_the_final_card(exported, final_dir, tmp_path):
    export(final_dir, tmp_path / "dense", "dense")
    assert (tmp_path / "dense" / "README.md").read_text() == (final_dir / "README.md").read_text()


def test_eval_help_says_finished_model_not_checkpoint():
    """eval refuses a training checkpoint, so its help must not offer one."""
    from pdp_gpt2.cli.main import SUBCOMMANDS

    assert SUBCOMMANDS["eval"][1].endswith("of any finished model or export")
    assert "checkpoint" not in SUBCOMMANDS["eval"][1]
