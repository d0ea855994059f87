"""Checkpoint and restore of a VM through the CLI: the guest continues where it was."""

from __future__ import annotations

import json

import pytest

from tests.system.conftest import Daemon, counts, wait_count

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow]

COUNTER = 'i=0; while :; do i=$((i+1)); echo "count $i"; sleep 1; done'


def test_checkpoint_then_restore_continues_the_guest(daemon: Daemon) -> None:
    d = daemon
    d.cli("image", "build", "busybox")
    d.cli("launch", "busybox", "vm", "--type", "vm", "--machine", "pc", "--memory", "128MiB",
          "--", "sh", "-c", COUNTER)
    before = wait_count(d, "vm", 2)
    r = d.cli("checkpoint", "vm")
    assert "Checkpointed vm to " in r.stderr and "checkpoint.state" in r.stderr
    info = json.loads(d.cli("info", "vm", "--format", "json").stdout)
    assert info["state"] == "stopped"

    d.cli("restore", "vm")
    after = wait_count(d, "vm", before)
    logs = d.cli("logs", "vm").stdout
    assert logs.count("CUMULO-READY") == 1, "the guest booted again instead of continuing"
    seen = counts(d, "vm")  # one guest's counter: it never starts over
    assert after > before and seen == list(range(1, len(seen) + 1)), seen

    # bad input: a clear one-line error, nothing changes
    for args, words in [
        (("restore", "vm"), "cannot restore"),                 # it runs
        (("checkpoint", "vm", "--file", "relative.state"), "absolute path"),
        (("checkpoint", "nosuch"), "not found"),
    ]:
        r = d.cli(*args, check=False)
        assert r.returncode == 1 and words in r.stderr, (args, r.stderr)
    d.cli("stop", "vm", "--force")
    r = d.cli("restore", "vm", check=False)
    assert r.returncode == 1 and "checkpoint" in r.stderr and "not found" in r.stderr
