"""OciRuntime calls that need no runtime run at all (a recording stand-in binary)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cumulo.drivers.container.runtime import OciRuntime


@pytest.mark.skipif(shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin") is None,
                    reason="runc is not installed")
def test_delete_of_an_unknown_container_runs_nothing(tmp_path: Path) -> None:
    """A start deletes any stale runtime record first: for a new container that was two
    runtime runs (delete, then state) of ~5 ms each, for nothing."""
    calls = tmp_path / "calls"
    fake = tmp_path / "fake-runc"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexit 1\n")
    fake.chmod(0o755)
    rt = OciRuntime("runc", tmp_path / "run")
    rt.binary = str(fake)
    rt.delete("never-created")
    assert not calls.exists() and not rt.knows("never-created")
    (rt.root / "stale").mkdir(parents=True)   # a record left by a crash: asked to go
    assert rt.knows("stale")
    rt.delete("stale")
    assert "delete --force stale" in calls.read_text()
