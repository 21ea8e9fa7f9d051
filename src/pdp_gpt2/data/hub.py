"""Fail fast when the Hugging Face hub is out of reach.

``huggingface_hub`` retries a failed request five times with back-off
(~25 s) before giving up.  On an offline machine that turns every typo into
a long wait, so we probe the hub once with a short TCP connect and, if it is
unreachable, run the hub call in offline mode: cached files still load,
anything else fails at once and the caller turns it into a UsageError.
"""
from __future__ import annotations

import contextlib
import functools
import os
import socket
import sys
from urllib.parse import urlparse


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """True if a TCP connection to the hub endpoint opens within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def offline_unless_reachable():
    """Within the block, hub libraries behave as if ``HF_HUB_OFFLINE=1`` when the hub is unreachable."""
    if hub_reachable():
        yield
        return
    from huggingface_hub import constants

    # datasets copies the flag at import time, so patch its copy too (if imported): HF_HUB_OFFLINE
    # in datasets >= 2.20, HF_DATASETS_OFFLINE before (still there later, as an alias).
    modules = [constants] + [m for m in (sys.modules.get("datasets.config"),) if m is not None]
    targets = [(m, a) for m in modules for a in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if hasattr(m, a)]
    saved = [getattr(m, a) for m, a in targets]
    for m, a in targets:
        setattr(m, a, True)
    try:
        yield
    finally:
        for (m, a), v in zip(targets, saved):
            setattr(m, a, v)
