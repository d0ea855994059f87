"""Checkpoint and restore of a container through the CLI (CRIU 4.x via runc and conmon).

The container's PID 1 is a counter: after ``cumulo restore`` its console goes on from
where it stopped, it is not started again. Bad cases get one clear line and change
nothing; the daemon fixture asserts that nothing is left behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import checkpoint_skip_reason
from tests.system.conftest import Daemon, counts, wait_count

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.criu]
if (_reason := checkpoint_skip_reason()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_reason))

COUNTER = 'i=0; while :; do i=$((i+1)); echo "count $i"; sleep 0.2; done'


def lo_up(d: Daemon, name: str) -> bool:
    flags = d.cli("exec", name, "--", "cat", "/sys/class/net/lo/flags").stdout
    return bool(int(flags, 16) & 1)   # IFF_UP


def test_container_checkpoint_restore_keeps_counting(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    d.cli("image", "build", "busybox")
    d.cli("launch", "busybox", "ct", "--", "sh", "-c", COUNTER)
    wait_count(d, "ct", 3)
    assert lo_up(d, "ct")
    r = d.cli("checkpoint", "ct")
    assert "Checkpointed ct to " in r.stderr and "checkpoint.state" in r.stderr, r.stderr
    info = json.loads(d.cli("info", "ct", "--format", "json").stdout)
    assert info["state"] == "stopped"
    stopped_at = counts(d, "ct")[-1]

    d.cli("restore", "ct")
    assert json.loads(d.cli("info", "ct", "--format", "json").stdout)["state"] == "running"
    wait_count(d, "ct", stopped_at + 3)
    seen = counts(d, "ct")   # one PID 1 all along: the count never starts over
    assert seen == list(range(1, len(seen) + 1)), seen
    assert d.cli("exec", "ct", "--", "cat", "/proc/1/cmdline").stdout.startswith("sh")
    assert lo_up(d, "ct")   # its loopback is up again, as at a start

    # to a file of the user's choice, and back from it
    state = tmp_path / "ct.state"
    d.cli("checkpoint", "ct", "--file", str(state))
    assert state.is_file()
    d.cli("restore", "ct", "--file", str(state))
    wait_count(d, "ct", counts(d, "ct")[-1])

    r = d.cli("checkpoint", "ct", "--file", "rel.state", check=False)
    assert r.returncode == 1 and "absolute path" in r.stderr, r.stderr

    # the supervision is conmon's again: stop and start work as for any container
    d.cli("stop", "ct", "--force")
    assert json.loads(d.cli("info", "ct", "--format", "json").stdout)["state"] == "stopped"

    # bad cases: one clear line, exit 1, nothing changes
    for args, words in [
        (("checkpoint", "ct"), "cannot checkpoint"),          # it is stopped
        (("restore", "ct"), "not found"),                    # no pending checkpoint
    ]:
        r = d.cli(*args, check=False)
        assert r.returncode == 1 and words in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    d.cli("start", "ct")
    wait_count(d, "ct", 0)
    assert counts(d, "ct")[-1] < stopped_at + 50
