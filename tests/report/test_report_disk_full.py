"""`report` on a full disk: one line naming the cause, and no partial report: an earlier report in
--out stays as it was, a new --out holds nothing of it."""
from __future__ import annotations

import errno

import pytest

from pdp_gpt2.cli import main

from test_report import _run  # noqa: E402  (the run directories train writes, shaped by hand)


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for i, (method, s, ppl) in enumerate((("dense", 0.0, 25.0), ("pdp", 0.5, 26.0), ("pdp", 0.9, 61.0))):
        _run(root, f"trial-{i:03d}", method, s, ppl)
    return root


def _full_after(monkeypatch, n_figures: int) -> None:
    """The disk fills up after ``n_figures`` figures were saved."""
    from matplotlib.figure import Figure

    real, saved = Figure.savefig, []

    def savefig(self, fname, *a, **k):
        if len(saved) >= n_figures:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(fname)
        return real(self, fname, *a, **k)

    monkeypatch.setattr(Figure, "savefig", savefig)


def test_a_full_disk_midway_is_one_line_and_leaves_no_partial_report(runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "rep"
    _full_after(monkeypatch, 2)
    capsys.readouterr()
    assert main(["report", str(runs), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err == (f"pdp-gpt2 report: error: --out {out}: No space left on device while writing the report; "
                   "nothing of it was written"), err
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_an_earlier_report_stays_as_it_was(runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "rep"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _full_after(monkeypatch, 1)
    assert main(["report", str(runs), "--out", str(out)]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
