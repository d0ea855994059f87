"""Stopping cumulod with work accepted: running operations finish, queued ones say they
never ran, and the instances they named are exactly as they were."""

from __future__ import annotations

import json

import psutil
import pytest

from cumulo.services.operations import NOT_RUN
from tests.system.conftest import Daemon

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime]

WORKERS = 8   # services/operations.py: the daemon's operation pool
IGNORES_TERM = ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]


def test_stop_with_queued_delete(daemon: Daemon) -> None:
    daemon.cli("image", "build", "busybox")
    for i in range(WORKERS):
        daemon.cli("launch", "busybox", f"busy{i}", "--", *IGNORES_TERM)
    daemon.cli("launch", "busybox", "kept")
    pid = json.loads(daemon.cli("info", "kept", "--format", "json").stdout)["pid"]
    with daemon.client() as c:
        # every worker busy for 5 s (TERM ignored, then KILL), so the delete waits in line
        stops = [c.set_state(f"busy{i}", "stop", timeout=5, wait=False)
                 for i in range(WORKERS)]
        delete = c.delete("kept", force=True, wait=False)
    daemon.stop()
    daemon.start()
    with daemon.client() as c:
        assert [c.get(f"/operations/{op['id']}")["status"] for op in stops] == \
            ["success"] * WORKERS
        op = c.get(f"/operations/{delete['id']}")
        assert (op["status"], op["error"]) == ("failure", NOT_RUN)
        # nothing was changed: it runs on, the same PID 1
        assert c.instance("kept")["state"] == "running"
    assert psutil.pid_exists(pid)
    assert json.loads(daemon.cli("info", "kept", "--format", "json").stdout)["pid"] == pid
