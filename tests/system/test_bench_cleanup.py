"""A benchmark's cleanup goes on past an instance it cannot delete: the others are
deleted, the one left is named with the daemon's reason, and the bench's dir (state,
mounted roots) is kept rather than removed under it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from bench.daemon import bench_daemon

from cumulo.host import cgroups
from tests.system.conftest import Daemon, leftovers

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime]


def test_cleanup_goes_on_past_a_failed_delete(capsys: pytest.CaptureFixture[str]) -> None:
    # a process of the host's own in b's cgroup: the daemon cannot remove it, so b's
    # delete fails (the daemon kills only what is in the container)
    squatter = subprocess.Popen(["sleep", "300"])
    state, parent = Path(), ""
    try:
        with bench_daemon() as (c, state, parent):
            c.build_image("busybox", "busybox")
            for name in ("a", "b", "c"):
                c.create(name, "busybox", start=True, command=["sleep", "1000"])
            procs = cgroups.controller_dir("pids", f"/{parent}/default_b")
            assert procs is not None
            (procs / "cgroup.procs").write_text(str(squatter.pid))
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("cleanup: cannot")]
        assert len(lines) == 1 and lines[0].startswith("cleanup: cannot delete b: "), err
        assert f"still hold processes after its PID 1 was killed ({squatter.pid} (sleep))" \
        in lines[0], err
        for name in ("a", "c"):   # deleted although b, before them or not, failed
            assert not list(Path("/sys/fs/cgroup").glob(f"*/{parent}/default_{name}"))
        assert state.is_dir()    # kept: b's root is still mounted in it
    finally:
        squatter.kill()
        squatter.wait()
        if state.is_dir():   # what the message tells a user to do: a daemon on it, delete
            top = state.parent
            d = Daemon(state_dir=state, socket=top / "cumulo.sock", cgroup_parent=parent,
                       log=top / "cumulod.log")
            d.start()
            try:
                d.clear()
            finally:
                d.stop()
            assert not leftovers(parent), leftovers(parent)
            shutil.rmtree(top)
