"""Test images built once and kept in ``/var/cache/cumulo/test-images`` under a key of
the sources that make them: a run builds one again only when those change. Another
branch's, unused for ``STALE_AFTER``, is removed when a new one of its kind is built.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

CACHE = Path("/var/cache/cumulo/test-images")
STALE_AFTER = 6 * 3600.0


def source_key(modules: Iterable[ModuleType], extra: str) -> str:
    """16 hex digits of the modules' source files and ``extra``."""
    key = hashlib.sha256()
    for module in modules:
        key.update(Path(str(module.__file__)).read_bytes())
    key.update(extra.encode())
    return key.hexdigest()[:16]


def cached(prefix: str, key: str, suffix: str, build: Callable[[Path], Path]) -> Path:
    """``CACHE/<prefix>-<key><suffix>``, made by ``build(tmp_dir)`` (which returns the file
    it made there) unless it is there; one build at a time (a file lock)."""
    final = CACHE / f"{prefix}-{key}{suffix}"
    if final.is_file():   # without waiting for the lock another branch's build holds
        return final
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_file():
            return final
        for stale in CACHE.glob(f"{prefix}-*{suffix}"):   # another branch's may be in use
            if time.time() - stale.stat().st_mtime > STALE_AFTER:
                stale.unlink()
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            shutil.move(build(Path(tmp)), final)
    return final
