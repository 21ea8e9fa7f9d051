"""Experiment tracking that can never hang or fail a run.

Without ``--use_wandb`` the :class:`NullTracker` is used and wandb is not even
imported.  With it, and no API key, we switch W&B to offline mode (one line on
stderr) rather than let it prompt for a login on a closed stdin.  Any error from
wandb itself is reported once and tracking continues as a no-op.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


class NullTracker:
    enabled = False

    def log(self, metrics: dict, step: int | None = None) -> None:
        pass

    def summary(self, values: dict) -> None:
        pass

    def table(self, name: str, columns: list[str], rows: list[list]) -> None:
        pass

    def finish(self) -> None:
        pass


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


class WandbTracker:
    enabled = True

    def __init__(self, project: str, run_name: str, config: dict, output_dir: Path):
        # The mode and quiet output go to wandb.init, not into os.environ: the process's environment
        # (and every subprocess it starts) stays the user's.
        mode = None  # wandb's own choice (WANDB_MODE, if set)
        if not _has_api_key() and os.environ.get("WANDB_MODE") not in ("offline", "disabled"):
            mode = "offline"
            print("wandb: no API key found; logging offline (sync later with `wandb sync`)", file=sys.stderr)
        quiet = {} if "WANDB_SILENT" in os.environ else {"silent": True}
        import wandb  # noqa: PLC0415 - only when asked for

        self._wandb = wandb
        self.run = wandb.init(project=project, name=run_name, config=config, dir=str(output_dir), mode=mode,
                              reinit="finish_previous", settings=wandb.Settings(console="off", **quiet))

    def log(self, metrics: dict, step: int | None = None) -> None:
        self._safe(lambda: self.run.log(metrics, step=step))

    def summary(self, values: dict) -> None:
        def _do():
            for k, v in values.items():
                self.run.summary[k] = v
        self._safe(_do)

    def table(self, name: str, columns: list[str], rows: list[list]) -> None:
        self._safe(lambda: self.run.log({name: self._wandb.Table(columns=columns, data=rows)}))

    def finish(self) -> None:
        self._safe(self.run.finish)

    def _safe(self, fn) -> None:
        try:
            fn()
        except Exception as e:  # tracking must never fail training
            print(f"wandb: {type(e).__name__}: {e}; continuing without it", file=sys.stderr)
            self.run = _Null()


class _Null:
    def __getattr__(self, name):
        return lambda *a, **k: None


def make_tracker(enabled: bool, project: str, run_name: str, config: dict, output_dir: Path):
    if not enabled:
        return NullTracker()
    try:
        return WandbTracker(project, run_name, config, output_dir)
    except ImportError:
        print("wandb: not installed (pip install 'pdp-gpt2[wandb]'); continuing without it", file=sys.stderr)
    except Exception as e:
        print(f"wandb: could not start ({type(e).__name__}: {e}); continuing without it", file=sys.stderr)
    return NullTracker()
