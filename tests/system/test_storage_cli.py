"""Storage through the CLI: pools, clones vs copies, --disk, volumes, snapshots, bad input."""

from __future__ import annotations

import json

import pytest

from tests.system.conftest import Daemon

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime]


def js(daemon: Daemon, *args: str) -> object:
    return json.loads(daemon.cli(*args, "--format", "json").stdout)


def sh(daemon: Daemon, name: str, script: str, check: bool = True) -> str:
    return daemon.cli("exec", name, "--", "sh", "-c", script, check=check).stdout


def test_volumes_snapshots_and_clones(daemon: Daemon) -> None:
    d = daemon
    d.cli("image", "build", "busybox")
    pools = js(d, "storage", "list")
    assert isinstance(pools, list) and [p["name"] for p in pools] == ["default"]

    # a clone and a full copy; writes in one are invisible in the other
    d.cli("launch", "busybox", "a")
    d.cli("launch", "busybox", "b", "--copy", "--disk", "64MiB")
    sh(d, "a", "echo only-a > /etc/mark")
    assert sh(d, "b", "cat /etc/mark 2>/dev/null || echo none") == "none\n"
    # --disk caps the root: writing past it fails inside the container
    r = d.cli("exec", "b", "--", "sh", "-c", "dd if=/dev/zero of=/big bs=1M count=100",
              check=False)
    assert r.returncode != 0

    # a volume written in one instance, moved to another, keeps its data
    d.cli("volume", "create", "data", "--size", "32MiB")
    d.cli("volume", "attach", "data", "a", "/data")
    d.cli("restart", "a", "--timeout", "1")  # a container mounts its volumes when it starts
    sh(d, "a", "echo kept > /data/f")
    r = d.cli("volume", "attach", "data", "b", "/data", check=False)
    assert r.returncode == 1 and "shared" in r.stderr, r.stderr
    d.cli("volume", "detach", "data", "a")
    d.cli("volume", "attach", "data", "b", "/data")
    d.cli("restart", "b", "--timeout", "1")
    assert sh(d, "b", "cat /data/f") == "kept\n"
    vol = js(d, "volume", "info", "data")
    assert isinstance(vol, dict) and [a["instance"] for a in vol["attachments"]] == ["b"]

    # snapshot, change, restore: the snapshot's files come back
    d.cli("snapshot", "create", "a", "s1")
    sh(d, "a", "echo changed > /etc/mark; rm /etc/hostname 2>/dev/null; true")
    d.cli("stop", "a", "--timeout", "1")
    d.cli("snapshot", "restore", "a", "s1")
    d.cli("start", "a")
    assert sh(d, "a", "cat /etc/mark") == "only-a\n"
    snaps = js(d, "snapshot", "list", "a")
    assert isinstance(snaps, list) and [s["name"] for s in snaps] == ["s1"]

    # bad input: a clear error, nothing changes
    before = d.cli("volume", "list", "--format", "json").stdout
    for args, words in [
        (("volume", "create", "x", "--size", "32MiB", "--pool", "nosuch"), "pool"),
        (("volume", "resize", "data", "1KiB"), "size"),
        (("volume", "create", "data", "--size", "32MiB"), "exists"),
        (("volume", "attach", "nosuch", "a", "/x"), "not found"),
        (("launch", "busybox", "c", "--pool", "nosuch"), "pool"),
    ]:
        r = d.cli(*args, check=False)
        assert r.returncode != 0 and words in r.stderr.lower(), (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert d.cli("volume", "list", "--format", "json").stdout == before
    assert "c" not in [i["name"] for i in js(d, "list")]  # type: ignore[union-attr]

    r = d.cli("volume", "delete", "data", check=False)
    assert r.returncode == 1 and "attached" in r.stderr.lower(), r.stderr
    d.cli("volume", "detach", "data", "b")
    d.cli("volume", "delete", "data")
    for name in ("a", "b"):
        d.cli("delete", "--force", name)
    pool = js(d, "storage", "info", "default")
    assert isinstance(pool, dict) and (pool["roots"], pool["volumes"]) == (0, 0)
