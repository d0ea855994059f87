"""OciRuntime calls that need no runtime run at all (a recording stand-in binary)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cumulo.drivers.container.runtime import OciRuntime
from cumulo.errors import RuntimeToolError


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


# runc init's side of the exec fifo: open it for writing, write "0", exec the command
# (the fifo's end is close-on-exec, so the reader sees the end of file at the exec)
INIT = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CLOEXEC)
os.write(fd, b"0")
os.execv("/bin/sleep", ["sleep", "30"])
"""


def _runc_with_fifo(tmp_path: Path, fake_body: str) -> tuple[OciRuntime, Path, Path]:
    calls = tmp_path / "calls"
    fake = tmp_path / "fake-runc"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n{fake_body}\n")
    fake.chmod(0o755)
    rt = OciRuntime("runc", tmp_path / "run")
    rt.binary = str(fake)
    fifo = rt.root / "c1" / "exec.fifo"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    return rt, fifo, calls


@pytest.mark.skipif(shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin") is None,
                    reason="runc is not installed")
def test_start_reads_the_exec_fifo_without_running_runc(tmp_path: Path) -> None:
    """`runc start` is one byte read from the container's exec fifo and the fifo's
    removal: done here, the created PID 1 execs its command and no runc runs."""
    rt, fifo, calls = _runc_with_fifo(tmp_path, "exit 1")
    init = subprocess.Popen([sys.executable, "-c", INIT, str(fifo)])
    try:
        rt.start("c1", init.pid)
        assert not fifo.exists()
        assert not calls.exists()
        # it returned once PID 1 exec'd its command (the fifo's end closed on exec)
        assert Path(f"/proc/{init.pid}/comm").read_text().strip() == "sleep"
    finally:
        init.kill()
        init.wait()


@pytest.mark.skipif(shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin") is None,
                    reason="runc is not installed")
def test_start_of_a_pid_1_that_died_asks_runc(tmp_path: Path) -> None:
    """PID 1 gone before it opened its end: the fifo gives nothing, runc start runs (and
    says what it says: here the stand-in fails, so the error is runc's)."""
    rt, fifo, calls = _runc_with_fifo(tmp_path, "echo 'container process is already dead' >&2"
                                      "; exit 1")
    dead = subprocess.Popen(["true"])
    dead.wait()
    with pytest.raises(RuntimeToolError, match="already dead"):
        rt.start("c1", dead.pid)
    assert "start c1" in calls.read_text()
    assert fifo.exists()
