"""lm-evaluation-harness task scores for a loaded model (optional extra: ``pip install -e ".[eval]"``).

``evaluate_tasks(model, tokenizer, "lambada_openai,hellaswag,./my_tasks")`` hands the
already-loaded model (dense, finalized, or an export in the sparse runtime) to
lm-eval's Python API (``HFLM`` + ``simple_evaluate``) and returns a JSON-ready
dict.  A ``--tasks`` entry that is an existing path is a task YAML file or a
folder of them: it goes on lm-eval's include path and its ``task:`` names are
run, so custom and offline tasks work without touching lm-eval's registry.

It lives in data/ next to perplexity so both `pdp-gpt2 eval` and a training run
(``--eval_tasks``: ``scores(evaluate_tasks(...))`` into summary.json) can call it.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from pdp_gpt2.data.hub import offline_unless_reachable
from pdp_gpt2.errors import UsageError

INSTALL_HINT = 'lm-eval is not installed: pip install -e ".[eval]"'


def require_lm_eval():
    """The lm_eval module, or a UsageError with the one-line install hint."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401  (fails early if its deps are missing)
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return lm_eval


def _yaml_task_names(f: Path) -> list[str]:
    """The ``task:`` name(s) a task YAML declares (read as text: lm-eval YAMLs carry !function tags)."""
    names = []
    for line in f.read_text(errors="replace").splitlines():
        m = re.match(r"^task:\s*(.+?)\s*$", line)
        if m:
            value = m.group(1).strip("'\"")
            if not value.startswith("["):
                names.append(value)
    return names


def split_tasks(tasks: str | list[str]) -> tuple[list[str], list[str], bool]:
    """(task names to run, include paths, any registry names): a path entry adds itself to the
    include path and the tasks its YAMLs declare to the names."""
    entries = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not entries:
        raise UsageError("--tasks is empty: give lm-eval task names and/or task YAML files or folders")
    names, include, registry = [], [], False
    for entry in entries:
        path = Path(entry).expanduser()
        if path.suffix in (".yaml", ".yml") and not path.exists():
            raise UsageError(f"task file not found: {entry}")
        if not path.exists():
            names.append(entry)
            registry = True
            continue
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        declared = [n for f in files for n in _yaml_task_names(f)]
        if not declared:
            raise UsageError(f"{entry}: no lm-eval task YAML (a 'task:' line) found there")
        include.append(str((path.parent if path.is_file() else path).resolve()))
        names += declared
    return list(dict.fromkeys(names)), list(dict.fromkeys(include)), registry


@functools.lru_cache(maxsize=4)
def _task_manager(include: tuple[str, ...], registry: bool):
    """lm-eval's task index, built once per process: a run checks its task names before training
    and evaluates after it, and indexing lm-eval's own ~10k task YAMLs takes half a minute."""
    from lm_eval.tasks import TaskManager

    # Skip lm-eval's own tasks when only local ones run.
    return TaskManager(include_path=list(include) or None, include_defaults=registry)


def resolve_tasks(tasks: str | list[str]):
    """(task names, include paths, lm-eval TaskManager), or a UsageError for a missing extra or an
    unknown name.  Cheap enough to call before any work (training, model load) and again after."""
    require_lm_eval()
    names, include, registry = split_tasks(tasks)
    manager = _task_manager(tuple(include), registry)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise UsageError(f"unknown lm-eval task(s): {', '.join(unknown)} (names as in `lm-eval ls tasks`, "
                         "or paths to task YAML files/folders)")
    return names, include, manager


def check_task_data(tasks: str | list[str]) -> None:
    """``resolve_tasks``, then load every task with its data (what the evaluation will do first), so that
    data that cannot be loaded (offline and not cached, a missing file) is refused before a run trains,
    in one line naming the tasks.  The loaded data stays in lm-eval's cache for the evaluation."""
    names, _, manager = resolve_tasks(tasks)
    try:
        import datasets  # noqa: F401  (imported first so offline_unless_reachable can patch its flag)

        with offline_unless_reachable():
            manager.load(names)
    except Exception as e:  # whatever lm-eval or datasets raise, the evaluation after training would too
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"cannot load the data of lm-eval task(s) {', '.join(names)}: {type(e).__name__}: {first} "
                         "(offline: use tasks whose data is cached, or local task YAML + JSONL files)") from None


def evaluate_tasks(model, tokenizer, tasks: str | list[str], *, batch_size: int = 8, num_fewshot: int | None = None,
                   limit: float | None = None, max_length: int | None = None, bootstrap_iters: int = 1000,
                   seed: int = 0) -> dict:
    """Run lm-eval tasks on an in-memory model; {'results', 'versions', 'n-shot', 'n-samples', 'tasks', ...}."""
    lm_eval = require_lm_eval()
    from lm_eval.models.huggingface import HFLM
    from lm_eval.utils import handle_non_serializable

    names, include, manager = resolve_tasks(tasks)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    try:
        import datasets  # noqa: F401  (imported first so offline_unless_reachable can patch its flag)

        with offline_unless_reachable():  # an unreachable hub fails in seconds, not after retries
            out = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, num_fewshot=num_fewshot,
                                          limit=limit, bootstrap_iters=bootstrap_iters, log_samples=False,
                                          random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                          fewshot_random_seed=seed)
    except ConnectionError as e:  # datasets' "Couldn't reach ... on the Hub"
        raise UsageError(f"cannot load the data of {', '.join(names)}: {str(e).splitlines()[0]} "
                         "(offline: use tasks whose data is cached, or local task YAML + JSONL files)") from None
    keep = {k: out[k] for k in ("results", "groups", "versions", "n-shot", "higher_is_better", "n-samples")
            if k in out}
    keep.update(tasks=names, include_path=include, limit=limit, num_fewshot=num_fewshot,
                lm_eval_version=getattr(lm_eval, "__version__", None))
    return json.loads(json.dumps(keep, default=handle_non_serializable))


def _is_metric(name: str, value) -> bool:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return numeric and "_stderr" not in name and name != "sample_len"


def scores(result: dict) -> dict[str, float]:
    """{'task/metric': value} of every numeric metric, stderr left out (what a summary.json carries)."""
    flat = {}
    for task, metrics in result.get("results", {}).items():
        for key, value in metrics.items():
            metric = key.split(",")[0]
            if _is_metric(metric, value):
                flat[f"{task}/{metric}"] = float(value)
    return flat


def markdown_table(result: dict) -> str:
    lines = ["| task | metric | value | ± stderr |", "|---|---|---:|---:|"]
    for task, metrics in result.get("results", {}).items():
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if not _is_metric(metric, value):
                continue
            err = metrics.get(f"{metric}_stderr,{filt}")
            err_s = f"{err:.4f}" if isinstance(err, (int, float)) else ""
            lines.append(f"| {task} | {metric} | {value:.4f} | {err_s} |")
    return "\n".join(lines)
