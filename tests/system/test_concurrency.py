"""Many requests at once against one daemon (issue 23, "Concurrency").

One daemon for the module (``fd`` of test_fault_points: its own netns, a network). Fifty
container launches at once (one name twice: the second gets a 409 one-liner), then fifty
deletes at once: no "database is locked", no lock time-out, no duplicate names, and
nothing left on the host. Ten VMs at once (microvm, small memory: TCG here). Stop, start,
snapshot and exec of one instance at once: each succeeds or gets a one-line conflict, and
the instance ends in a true state. Parallel full copies (``--copy``) of one template.
Every request goes through the API client, one client per thread.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cumulo.client import APIError
from tests.system import test_fault_points
from tests.system.conftest import Daemon, running_daemon
from tests.system.test_fault_points import assert_true_state, host_objects

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.slow]

NET = "fnet"
SLEEP = ["sleep", "3600"]


fd = test_fault_points.fd   # its daemon, in a netns of its own, on the network fnet


def at_once(d: Daemon, calls: list[Callable[[Any], Any]]) -> list[Any]:
    """Run every call in a thread of its own, each with its own client; a call's result
    is what it returned or the APIError it raised (anything else fails the test)."""
    def one(call: Callable[[Any], Any]) -> Any:
        with d.client() as c:
            try:
                return call(c)
            except APIError as err:
                return err
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def one_line(err: APIError) -> str:
    text = str(err)
    assert text and "\n" not in text, repr(text)
    for bad in ("database is locked", "timed out", "timeout", "Traceback"):
        assert bad.lower() not in text.lower(), text
    return text


def test_fifty_launches_and_deletes_at_once(fd: Daemon) -> None:
    names = [f"p{i}" for i in range(50)]
    calls = [lambda c, n=n: c.create(n, "busybox", command=SLEEP, start=True,
                                     networks=[{"network": NET}]) for n in names]
    calls.append(lambda c: c.create("p7", "busybox", command=SLEEP, start=True,
                                    networks=[{"network": NET}]))   # same name again
    t0 = time.monotonic()
    results = at_once(fd, calls)
    took = time.monotonic() - t0
    errors = [r for r in results if isinstance(r, APIError)]
    print(f"51 launches at once (50 names): {took:.1f}s; errors: {[str(e) for e in errors]}")
    # exactly one of the two p7 launches lost, with a 409 naming the instance
    assert len(errors) == 1, [str(e) for e in errors]
    assert errors[0].status == 409 and "p7" in one_line(errors[0]), errors[0]
    listed = [i["name"] for i in json.loads(fd.cli("list", "--format", "json").stdout)]
    assert sorted(listed) == sorted(names)
    with fd.client() as c:
        states = {i["name"]: i["state"] for i in c.instances()}
    assert set(states.values()) == {"running"}, states
    assert len(host_objects(fd)["veth"]) == 50
    assert_true_state(fd)

    t0 = time.monotonic()
    results = at_once(fd, [lambda c, n=n: c.delete(n, force=True) for n in names])
    print(f"50 deletes at once: {time.monotonic() - t0:.1f}s")
    assert not [one_line(r) for r in results if isinstance(r, APIError)]
    assert json.loads(fd.cli("list", "--format", "json").stdout) == []
    host = host_objects(fd)
    for kind in ("cgroups", "mounts", "instance dirs", "container records", "conmon",
                 "veth", "loop"):
        assert not host[kind], (kind, host[kind])


def test_ten_vms_at_once(fd: Daemon) -> None:
    names = [f"v{i}" for i in range(10)]
    t0 = time.monotonic()
    results = at_once(fd, [lambda c, n=n: c.create(
        n, "busybox", type="vm", command=SLEEP, start=True, networks=[],
        limits={"memory": "64MiB", "cpu": 1}, options={"machine": "microvm"})
        for n in names])
    print(f"10 VM launches at once: {time.monotonic() - t0:.1f}s")
    assert not [one_line(r) for r in results if isinstance(r, APIError)]
    with fd.client() as c:
        states = {i["name"]: i["state"] for i in c.instances()}
    assert states == dict.fromkeys(names, "running"), states
    assert len(host_objects(fd)["qemu"]) == 10
    results = at_once(fd, [lambda c, n=n: c.delete(n, force=True) for n in names])
    assert not [one_line(r) for r in results if isinstance(r, APIError)]
    host = host_objects(fd)
    assert not host["qemu"] and not host["swtpm"] and not host["cgroups"] \
        and not host["instance dirs"], host


def test_stop_start_snapshot_exec_of_one_instance_at_once(fd: Daemon) -> None:
    fd.cli("launch", "busybox", "one", "--network", NET, "--", *SLEEP)
    ops: list[Callable[[Any], Any]] = [
        lambda c: c.set_state("one", "stop", force=True),
        lambda c: c.set_state("one", "start"),
        lambda c: c.snapshot("create", "one", "s1"),
        lambda c: c.exec("one", ["echo", "hi"]),
        lambda c: c.set_state("one", "restart", force=True),
        lambda c: c.snapshot("create", "one", "s2"),
        lambda c: c.set_state("one", "stop", force=True),
        lambda c: c.exec("one", ["echo", "hi"]),
    ]
    for _ in range(3):
        for r in at_once(fd, ops):
            if isinstance(r, APIError):
                # a clear refusal: a conflict with the state or another operation
                assert r.status in (409,), (r.status, one_line(r))
                one_line(r)
        insts = assert_true_state(fd)    # the store says what the host has
        assert insts["one"]["state"] in ("running", "stopped"), insts["one"]
        fd.cli("start", "one", check=False)
    fd.cli("delete", "one", "--force")


def test_parallel_copies_of_one_template(fd: Daemon) -> None:
    fd.cli("launch", "busybox", "tpl", "--network", "none", "--", *SLEEP)
    fd.cli("exec", "tpl", "--", "sh", "-c", "echo template > /marker")
    fd.cli("stop", "tpl", "--force")
    fd.cli("publish", "tpl", "--alias", "tplimg")
    names = [f"k{i}" for i in range(10)]
    results = at_once(fd, [lambda c, n=n: c.create(
        n, "tplimg", command=SLEEP, start=True, networks=[], storage={"copy": True})
        for n in names])
    assert not [one_line(r) for r in results if isinstance(r, APIError)]
    with fd.client() as c:
        for n in names:
            assert c.exec(n, ["cat", "/marker"])["stdout"] == "template\n", n
        c.exec("k0", ["sh", "-c", "echo mine > /marker"])
        assert c.exec("k1", ["cat", "/marker"])["stdout"] == "template\n"
    results = at_once(fd, [lambda c, n=n: c.delete(n, force=True) for n in [*names, "tpl"]])
    assert not [one_line(r) for r in results if isinstance(r, APIError)]
    fd.cli("image", "delete", "tplimg")


def test_a_launch_into_a_full_pool(tmp_path: Path) -> None:
    """The default pool on a small ext4 of its own, filled but for a few KiB: a full copy
    fails with one line naming the pool and its free space, nothing is half-made, and the
    daemon serves on; so does a snapshot."""
    pool = tmp_path / "state" / "storage" / "default"
    pool.mkdir(parents=True)
    img = tmp_path / "pool.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img), "16M"], check=True, timeout=60)
    subprocess.run(["mount", "-o", "loop", str(img), str(pool)], check=True, timeout=60)
    try:
        with running_daemon(tmp_path) as d:
            d.cli("image", "build", "busybox")
            def fill() -> None:   # dd until ENOSPC
                subprocess.run(["dd", "if=/dev/zero", f"of={pool}/filler", "bs=64K",
                                "count=1024"], capture_output=True, timeout=60)

            fill()
            r = d.cli("launch", "busybox", "big", "--copy", "--network", "none", "--",
                      *SLEEP, check=False)
            assert r.returncode == 1, r
            line = r.stderr.strip()
            print(line)
            assert "\n" not in line and "pool 'default'" in line and "free" in line, line
            assert json.loads(d.cli("list", "--format", "json").stdout) == []
            assert not list((pool / "roots").iterdir())
            (pool / "filler").unlink()
            d.cli("launch", "busybox", "small", "--copy", "--network", "none", "--", *SLEEP)
            d.cli("stop", "small", "--force")
            fill()
            r = d.cli("snapshot", "create", "small", "s1", check=False)
            assert r.returncode == 1 and "pool 'default' is full" in r.stderr, r
            assert not list((pool / "snapshots" / "root").glob("*/*"))
            (pool / "filler").unlink()
            d.cli("delete", "small", "--force")
    finally:
        subprocess.run(["umount", "-l", str(pool)], check=False, timeout=60)
