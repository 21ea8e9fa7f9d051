"""Fixtures of the report tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def png_stand_ins(monkeypatch):
    """Figures saved as PNG become a few stand-in bytes; PDFs (the deck) are written as usual.  For tests
    that read the report's text, the skip notes and the deck, not the plots' pixels: encoding a PNG is
    a large part of rendering a report.  test_report.py's PNG test reads the real ones."""
    from matplotlib.figure import Figure

    real = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        if isinstance(fname, (str, Path)) and str(fname).endswith(".png"):
            Path(fname).write_bytes(b"\x89PNG\r\n\x1a\nstand-in")
            return None
        return real(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
