"""Stateful snapshots of a running VM through the CLI: one TCG boot.

The guest counts on its console and writes a marker file to its root disk; a stateful
snapshot taken while it runs, restored after the VM went on and was stopped, brings
back both the counter (it continues, no boot) and the disk of that same instant.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.system.conftest import Daemon, counts

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.qemu,
              pytest.mark.slow]

COUNTER = 'i=0; while :; do i=$((i+1)); echo "count $i"; sleep 1; done'


def wait_counts(daemon: Daemon, name: str, n: int, timeout: float = 120) -> list[int]:
    """The counts once there are more than ``n`` of them in the console log."""
    deadline = time.monotonic() + timeout
    while len(c := counts(daemon, name)) <= n:
        assert time.monotonic() < deadline, c[-5:]
        time.sleep(0.5)
    return c


def sh(daemon: Daemon, name: str, script: str) -> str:
    return daemon.cli("exec", name, "--", "sh", "-c", script).stdout


def test_stateful_snapshot_restores_a_running_vm_where_it_was(daemon: Daemon) -> None:
    d = daemon
    d.cli("image", "build", "busybox")
    d.cli("launch", "busybox", "ct")
    r = d.cli("snapshot", "create", "ct", "s", "--stateful", check=False)
    assert r.returncode == 1 and "container" in r.stderr and "CRIU" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    d.cli("delete", "ct", "--force")

    d.cli("launch", "busybox", "vm", "--type", "vm", "--machine", "pc", "--memory", "128MiB",
          "--", "sh", "-c", COUNTER)
    wait_counts(d, "vm", 2)
    sh(d, "vm", "echo before > /marker; sync")
    r = d.cli("snapshot", "create", "vm", "plain", check=False)
    assert r.returncode == 1 and "stop it first (or use --stateful)" in r.stderr, r.stderr
    low = counts(d, "vm")[-1]
    r = d.cli("snapshot", "create", "vm", "s1", "--stateful")
    assert "Created stateful snapshot s1 of vm" in r.stderr
    high = counts(d, "vm")[-1]
    sh(d, "vm", "echo after > /marker; sync")
    ran = wait_counts(d, "vm", high + 2)   # the guest ran on after the snapshot
    snaps = json.loads(d.cli("snapshot", "list", "vm", "--format", "json").stdout)
    assert snaps == [{"name": "s1", "stateful": True}]

    d.cli("stop", "vm", "--force")
    r = d.cli("snapshot", "create", "vm", "s2", "--stateful", check=False)
    assert r.returncode == 1 and "stopped" in r.stderr and "without --stateful" in r.stderr
    old = len(counts(d, "vm"))
    d.cli("snapshot", "restore", "vm", "s1")
    info = json.loads(d.cli("info", "vm", "--format", "json").stdout)
    assert info["state"] == "running"
    new = wait_counts(d, "vm", old + 2)[old:]
    # it continues from the snapshot's instant: no boot, no count from 1 again
    assert low + 1 <= new[0] <= high + 1 and new[0] < ran[-1], (low, high, new, ran[-5:])
    assert new == list(range(new[0], new[0] + len(new))), new
    assert d.cli("logs", "vm").stdout.count("CUMULO-READY") == 1
    assert sh(d, "vm", "cat /marker") == "before\n"   # the disk of that same instant

    r = d.cli("snapshot", "restore", "vm", "s1", check=False)
    assert r.returncode == 1 and "stop it first" in r.stderr, r.stderr
    d.cli("delete", "vm", "--force")
    pool = json.loads(d.cli("storage", "info", "default", "--format", "json").stdout)
    assert isinstance(pool, dict) and pool["roots"] == 0
