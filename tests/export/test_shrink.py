"""The physical shrink: tiny GPT-2 (Conv1D), Llama (gate/up/down) and OPT (fc1/fc2) with whole MLP
neurons zeroed by hand become narrower dense models with the same logits, loadable by transformers alone."""
import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

import pdp_gpt2
from pdp_gpt2 import UsageError
from pdp_gpt2.export.shrink import shrink, shrunk_manifest
from pdp_gpt2.pdp.patterns.structures import mlp_structures, removed_units

from helpers import tiny_gpt2, tiny_llama, tiny_opt


MAKERS = {"gpt2": tiny_gpt2, "llama": tiny_llama, "opt": tiny_opt}
# Parameters one neuron holds with d = 64: GPT-2 and OPT an input column + its bias and an output row,
# Llama a gate row, an up row and a down column (no biases).
PER_NEURON = {"gpt2": 2 * 64 + 1, "llama": 3 * 64, "opt": 2 * 64 + 1}
WIDTH = {"gpt2": ("n_inner", 256), "llama": ("intermediate_size", 128), "opt": ("ffn_dim", 128)}


def zero_neurons(model, per_layer, sides=("in", "out"), uneven=False):
    """Zero ``per_layer`` neurons in every MLP (other ones per layer), on the given sides; their indices."""
    picked = []
    for i, s in enumerate(mlp_structures(model)):
        k = per_layer + (i if uneven else 0)
        idx = torch.randperm(s.width, generator=torch.Generator().manual_seed(i))[:k]
        for m in s.members:
            side = "out" if m.name.rpartition(".")[2] in s.family.outputs else "in"
            if side in sides:
                m.weight.data.index_fill_(m.axis, idx, 0.0)
                if m.bias:
                    m.module.bias.data[idx] = 0.0
        picked.append(sorted(idx.tolist()))
    return picked


def _ids():
    return torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("kind", list(MAKERS))
def test_shrunk_logits_width_and_parameters(kind, tmp_path):
    model = MAKERS[kind]()
    before = sum(p.numel() for p in model.parameters())
    zero_neurons(model, 32)
    small, record = shrink(model)
    field, width = WIDTH[kind]
    assert getattr(small.config, field) == width - 32 and record["resized"][0]["after"] == width - 32
    assert getattr(model.config, field) in (None, width)  # the source is left as it was
    after = sum(p.numel() for p in small.parameters())
    assert before - after == 2 * 32 * PER_NEURON[kind]  # 2 layers
    assert (record["parameters_before"], record["parameters_after"]) == (before, after)
    with torch.no_grad():
        torch.testing.assert_close(small(_ids()).logits, model(_ids()).logits, atol=1e-5, rtol=1e-5)
    assert all(s.width == width - 32 for s in mlp_structures(small))
    small.save_pretrained(tmp_path)  # from_pretrained builds it from config.json alone
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(_ids()).logits, small(_ids()).logits)


def test_the_output_side_alone_decides():
    # c_fc keeps its weights and bias for the neurons whose c_proj rows are zero: they contribute
    # gelu(x w + b) * 0 = 0 all the same, so they are removed and the logits do not move.
    model = tiny_gpt2()
    picked = zero_neurons(model, 8, sides=("out",))
    s = mlp_structures(model)[0]
    assert removed_units(s).nonzero().flatten().tolist() == picked[0]
    assert s.members[0].weight[:, picked[0]].abs().min() > 0  # the input side is not zero
    small, record = shrink(model)
    assert record["shapes"]["transformer.h.0.mlp.c_fc.bias"] == {"before": [256], "after": [248]}
    assert record["shapes"]["transformer.h.1.mlp.c_proj.weight"] == {"before": [256, 64], "after": [248, 64]}
    with torch.no_grad():
        torch.testing.assert_close(small(_ids()).logits, model(_ids()).logits, atol=1e-5, rtol=1e-5)


def test_input_side_zeros_alone_are_not_removable():
    # silu(0) * up = 0 would hold for Llama, but the rule must not depend on the activation.
    model = tiny_llama()
    zero_neurons(model, 8, sides=("in",))
    with pytest.raises(UsageError, match="--pattern neurons"):
        shrink(model)


def test_uneven_counts_are_refused_with_the_fix():
    model = tiny_gpt2()
    zero_neurons(model, 8, uneven=True)
    with pytest.raises(UsageError, match=r"\(8 to 9\).*--allocation layer"):
        shrink(model)


def test_dense_and_unstructured_models_are_refused():
    with pytest.raises(UsageError, match="nothing can be removed"):
        shrink(tiny_gpt2())
    model = tiny_gpt2()
    pdp_gpt2.attach(model, pdp_gpt2.PDPConfig(sparsity=0.5)).finalize()
    assert (model.transformer.h[0].mlp.c_proj.weight == 0).float().mean() > 0.45  # pruned, but not whole rows
    with pytest.raises(UsageError, match="nothing can be removed"):
        shrink(model)


def test_shrunk_manifest_recounts_and_keeps_the_record():
    model = tiny_gpt2()
    zero_neurons(model, 64)
    names = [f"{m.name}.weight" for s in mlp_structures(model) for m in s.members]
    tensors = {n: {"shape": list(model.state_dict()[n].shape), "out_dim": 1, "numel": 64 * 256,
                   "zeros": 64 * 64, "target_sparsity": 0.25} for n in names}
    source = {"format": "pdp-gpt2/pruning", "version": 1, "method": "pdp", "pattern": "neurons",
              "sparsity_target": 0.25, "sparsity_actual": 0.25, "tensors": tensors}
    small, record = shrink(model)
    man = shrunk_manifest(source, small.state_dict(), record)
    t = man["tensors"]["transformer.h.0.mlp.c_fc.weight"]
    assert (t["shape"], t["numel"], t["zeros"], t["target_sparsity"]) == ([64, 192], 64 * 192, 0, 0.0)
    assert man["sparsity_actual"] == 0.0 and man["sparsity_target"] == 0.0
    assert man["shrink"]["sparsity_actual_before"] == 0.25 and man["shrink"]["resized"][0]["after"] == 192
    assert man["pattern"] == "neurons" and "format" not in man
    assert source["tensors"]["transformer.h.0.mlp.c_fc.weight"]["numel"] == 64 * 256  # the source untouched


PLAIN_LOAD = """
import sys, torch
from transformers import AutoModelForCausalLM
ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))
out = {}
for path in sys.argv[2:]:
    with torch.no_grad():
        out[path] = AutoModelForCausalLM.from_pretrained(path).eval()(ids).logits
assert not any(m == "pdp_gpt2" or m.startswith("pdp_gpt2.") for m in sys.modules), "pdp_gpt2 was imported"
torch.save(out, sys.argv[1])
"""


@pytest.mark.slow  # a fresh interpreter importing transformers: seconds, more on a busy machine
def test_saved_shrunk_models_load_in_plain_transformers(tmp_path):
    want, dirs = {}, []
    for kind, make in MAKERS.items():
        model = make()
        zero_neurons(model, 16)
        small, _ = shrink(model)
        small.save_pretrained(tmp_path / kind)
        dirs.append(str(tmp_path / kind))
        with torch.no_grad():
            want[dirs[-1]] = model(_ids()).logits
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(tmp_path / "logits.pt"), *dirs], check=True, env=env,
                   cwd=tmp_path)
    got = torch.load(tmp_path / "logits.pt")
    for d in dirs:
        torch.testing.assert_close(got[d], want[d], atol=1e-5, rtol=1e-5)
    assert json.loads((tmp_path / "gpt2" / "config.json").read_text())["n_inner"] == 240


# ---- pdp-gpt2 export --shrink, and the shrunk directory in eval, generate and export ------------------


def neuron_run(tmp_path, tiny_assets, k=64, pattern="neurons"):
    """A run directory whose final/ has ``k`` of each MLP's 256 neurons zeroed, a tokenizer and a manifest."""
    from transformers import AutoTokenizer

    from pdp_gpt2.data.manifest import write_manifest

    model_dir, _ = tiny_assets
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    zero_neurons(model, k)
    final = tmp_path / "run" / "final"
    model.save_pretrained(final)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(final)
    members = [m for s in mlp_structures(model) for m in s.members]
    tensors = {f"{m.name}.weight": {"shape": list(m.weight.shape), "out_dim": 1, "numel": m.weight.numel(),
                                    "zeros": int((m.weight == 0).sum()), "target_sparsity": k / 256} for m in members}
    write_manifest(final, {"method": "pdp", "pattern": pattern, "allocation": "layer", "sparsity_target": k / 256,
                           "sparsity_actual": k / 256, "tensors": tensors})
    return tmp_path / "run", model


def _one_line_refusal(capsys, argv, needle):
    from pdp_gpt2.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_assets):
    """(run dir, its final model, the shrunk export, what export printed)."""
    import contextlib
    import io

    from pdp_gpt2.cli import main

    tmp = tmp_path_factory.mktemp("shrink")
    run, model = neuron_run(tmp, tiny_assets)
    out, printed = tmp / "shrunk", io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(run), "--shrink", "--out", str(out)]) == 0
    return run, model, out, printed.getvalue()


def test_export_shrink_writes_a_plain_narrower_model(exported):
    from pdp_gpt2.data.manifest import check_counts, read_manifest

    run, model, out, printed = exported
    before = sum(p.numel() for p in model.parameters())
    after = before - 2 * 64 * (2 * 64 + 1)
    assert "(shrunk: MLP neurons (n_inner) 256 -> 192 in 2 GPT-2 layers)" in printed and f"parameters: {before:,} -> {after:,}" in printed
    assert json.loads((out / "config.json").read_text())["n_inner"] == 192
    card = (out / "README.md").read_text()
    assert "shrunk model: MLP neurons 256 -> 192" in card and f"{after:,}" in card and "AutoModelForCausalLM" in card
    man = read_manifest(out)
    assert man["shrink"]["shapes"]["transformer.h.1.mlp.c_fc.weight"] == {"before": [64, 256], "after": [64, 192]}
    assert man["shrink"]["sparsity_actual_before"] == 0.25 and man["sparsity_actual"] == 0.0
    shrunk = AutoModelForCausalLM.from_pretrained(out).eval()
    check_counts(man, shrunk.state_dict(), out)  # the recounted manifest agrees with the weights
    report = json.loads((out / "size_report.json").read_text())
    assert report["format"] == "shrunk" and report["target_weights"]["ratio"] == pytest.approx(0.75)
    with torch.no_grad():
        torch.testing.assert_close(shrunk(_ids()).logits, model.eval()(_ids()).logits, atol=1e-5, rtol=1e-5)


def test_a_shrunk_model_has_nothing_left_to_export_or_shrink(exported, tmp_path, capsys):
    out = exported[2]
    _one_line_refusal(capsys, ["export", str(out), "--out", str(tmp_path / "c")], "shrunk model with no zeros left")
    _one_line_refusal(capsys, ["export", str(out), "--shrink", "--out", str(tmp_path / "c")], "no zeros left")


@pytest.mark.slow  # two evaluations and three generations: seconds
def test_eval_and_generate_take_the_shrunk_dir_in_both_runtimes(exported, tiny_assets, tmp_path, capsys):
    from pdp_gpt2.cli import main

    run, _, out, _ = exported
    ppl = {}
    for name, path, runtime in [("final", run / "final", "dense"), ("shrunk", out, "dense"),
                                ("shrunk sparse", out, "sparse")]:
        assert main(["eval", "--model", str(path), "--dataset", str(tiny_assets[1]), "--runtime", runtime,
                     "--json", str(tmp_path / f"{name}.json"), "--no_progress", "--device", "cpu"]) == 0
        ppl[name] = json.loads((tmp_path / f"{name}.json").read_text())["perplexity"]
    assert ppl["shrunk"] == pytest.approx(ppl["final"], rel=1e-5)
    assert ppl["shrunk sparse"] == pytest.approx(ppl["final"], rel=1e-5)
    texts = []
    for path, runtime in [(run / "final", "dense"), (out, "dense"), (out, "sparse")]:
        capsys.readouterr()
        assert main(["generate", str(path), "--prompt", "to be or not", "--max_new_tokens", "8",
                     "--runtime", runtime]) == 0
        texts.append(capsys.readouterr().out.splitlines()[0])
    assert texts[1] == texts[0] and texts[2] == texts[0]


def test_export_shrink_refusals_come_before_loading(tmp_path, tiny_assets, capsys, monkeypatch):
    import pdp_gpt2.export.writer as writer

    run, _ = neuron_run(tmp_path, tiny_assets, pattern="unstructured")
    monkeypatch.setattr(writer, "load_finalized", lambda *a: pytest.fail("loaded before refusing"))
    out = str(tmp_path / "out")
    _one_line_refusal(capsys, ["export", str(run), "--shrink", "--out", out], "--shrink needs a run with --pattern neurons")
    _one_line_refusal(capsys, ["export", str(run), "--shrink", "--format", "compressed", "--out", out],
                      "drop --format compressed")
    _one_line_refusal(capsys, ["export", str(run), "--shrink", "--values", "fp16", "--out", out], "drop --values fp16")


def test_a_bf16_model_stays_bf16_and_close():
    model = tiny_llama().to(torch.bfloat16)
    zero_neurons(model, 32)
    small, _ = shrink(model)
    assert small.dtype == torch.bfloat16 and small.config.intermediate_size == 96
    from pdp_gpt2.export.shrink import logit_gap

    assert logit_gap(model, small) < 5e-2  # what export accepts for half precision
