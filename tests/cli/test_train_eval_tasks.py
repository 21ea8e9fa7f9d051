"""`train --eval_tasks` is checked before any work: a mistyped task name used to be found
only after training, and with the default --save_steps 0 the whole run was lost.  lm_eval is an
optional extra, so a stand-in module with a small task index plays it here."""
from __future__ import annotations

import sys
import types

import pytest

from pdp_gpt2.cli import main
from pdp_gpt2.data import lmeval

KNOWN = ["hellaswag", "lambada_openai"]


@pytest.fixture
def fake_lm_eval(monkeypatch):
    """`lm_eval` with HFLM and a TaskManager whose index is KNOWN (plus nothing from include paths)."""
    built = []

    class TaskManager:
        def __init__(self, include_path=None, include_defaults=True):
            built.append((include_path, include_defaults))
            self.all_tasks = list(KNOWN) if include_defaults else []

    pkg = types.ModuleType("lm_eval")
    models, hf, tasks = (types.ModuleType(f"lm_eval.{n}") for n in ("models", "models.huggingface", "tasks"))
    hf.HFLM, tasks.TaskManager = object, TaskManager
    for name, mod in {"lm_eval": pkg, "lm_eval.models": models, "lm_eval.models.huggingface": hf,
                      "lm_eval.tasks": tasks}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    lmeval._task_manager.cache_clear()
    yield built
    lmeval._task_manager.cache_clear()


@pytest.fixture
def train_argv(tmp_path, tiny_assets, monkeypatch):
    from pdp_gpt2.data import models

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the task names were checked")

    monkeypatch.setattr(models, "load_model_and_tokenizer", no_load)
    model_dir, corpus = tiny_assets
    out = tmp_path / "out"
    return out, ["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
                 "--max_steps", "2", "--max_length", "32", "--progress", "false"]


def test_a_mistyped_task_is_refused_before_the_model_loads(capsys, fake_lm_eval, train_argv):
    out, argv = train_argv
    assert main(argv + ["--eval_tasks", "lambada_openaii,hellaswag"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "unknown lm-eval task(s): lambada_openaii (" in err
    assert not out.exists()
    assert fake_lm_eval == [(None, True)]  # the index was built once


def test_the_index_built_for_the_check_is_reused_after_training(fake_lm_eval):
    names, include, manager = lmeval.resolve_tasks("lambada_openai, hellaswag")
    assert (names, include) == (["lambada_openai", "hellaswag"], [])
    assert lmeval.resolve_tasks("hellaswag,lambada_openai")[2] is manager
    assert fake_lm_eval == [(None, True)]


def test_missing_extra_is_refused_before_the_model_loads(capsys, monkeypatch, train_argv):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` raises ImportError
    out, argv = train_argv
    assert main(argv + ["--eval_tasks", "lambada_openai"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and lmeval.INSTALL_HINT in err, err
    assert not out.exists()
