"""An exclusive inter-process lock on a file, for caches that concurrent runs may build at once."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(path: str | Path):
    """Hold ``fcntl.LOCK_EX`` on ``path`` (created if missing); blocks until the holder releases it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
