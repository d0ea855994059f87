"""Checkpoint/restore and live migration of a real QEMU guest (TCG), at the driver level.

Two VmDriver objects on separate state and runtime dirs play two hosts; the stream goes
over loopback. One guest is booted for the whole module (boots are expensive on TCG): its
/init runs a counter that prints ``count N`` every second on the serial console, so a
reboot (N back to 1, a second CUMULO-READY) or a lost guest is visible.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
import pytest

from cumulo.domain.limits import Limits
from cumulo.drivers.base import InstanceSpec, RunStatus
from cumulo.drivers.migratable import Migratable
from cumulo.drivers.registry import DriverContext
from cumulo.drivers.vm.driver import VmDriver
from cumulo.drivers.vm.qemu_cmd import MIB
from cumulo.errors import ConflictError, DriverError
from cumulo.host import procs
from tests.helpers import host_info

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root]

COUNTER = ["sh", "-c", 'i=0; while :; do i=$((i+1)); echo "count $i"; sleep 1; done']
HOST_ID = "default_cvm"
SLOW = 2 * MIB           # bytes/s: keeps a migration going long enough to interrupt it


@dataclass
class Host:
    top: Path
    driver: VmDriver

    def spec(self) -> InstanceSpec:
        return InstanceSpec(host_id=HOST_ID, hostname="cvm", instance_dir=self.top / "i",
                            rootfs=self.top, command=COUNTER, limits=Limits(memory=128 * MIB),
                            options={"machine": "pc"})

    def console(self) -> bytes:
        return self.driver.read_console(HOST_ID, 0)[0]

    def counts(self) -> list[int]:
        return [int(n) for n in re.findall(rb"count (\d+)", self.console())]

    def wait_count(self, at_least: int, timeout: float = 90) -> list[int]:
        deadline = time.monotonic() + timeout
        while not (counts := self.counts()) or counts[-1] < at_least:
            assert time.monotonic() < deadline, self.console()[-1500:]
            time.sleep(0.2)
        return counts

    def qemu_pid(self) -> int | None:
        return self.driver.state(HOST_ID).pid


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, Host]]:
    pair = []
    for name in ("a", "b"):
        top = Path(str(tmp_path_factory.mktemp(f"mig{name}")))
        ctx = DriverContext(state_dir=top / "state", runtime_dir=top / "run",
                            # one parent per "host": both run the same instance name
                            cgroup_parent=f"cumulo-test-mig{name}-{os.getpid()}",
                            host=host_info())
        pair.append(Host(top, VmDriver(ctx)))
    a, b = pair
    try:
        yield a, b
    finally:
        for h in (a, b):
            for host_id in h.driver.list_host_ids():
                h.driver.delete(host_id, h.top / "i")
        for h in (a, b):
            assert not [p for p in psutil.process_iter(["cmdline"])
                        if str(h.top) in " ".join(p.info["cmdline"] or [])], "QEMU left"
            shutil.rmtree(h.top)


@pytest.fixture(scope="module")
def booted(hosts: tuple[Host, Host]) -> tuple[Host, Host]:
    a, _ = hosts
    a.driver.create(a.spec())
    a.driver.start(a.spec())
    a.wait_count(3)
    return hosts


def continuous(counts: list[int]) -> bool:
    return counts == list(range(counts[0], counts[0] + len(counts)))


def test_checkpoint_to_a_file_and_restore_continue_the_counter(booted: tuple[Host, Host]
                                                              ) -> None:
    a, _ = booted
    assert isinstance(a.driver, Migratable)
    pid = a.qemu_pid()
    assert pid is not None
    state_file = a.top / "ckpt" / "state"
    stats = a.driver.checkpoint(HOST_ID, state_file)
    assert stats["status"] == "completed" and stats["passes"] >= 1
    assert a.driver.state(HOST_ID).status == RunStatus.STOPPED and not procs.alive(pid)
    assert state_file.is_file() and state_file.stat().st_size > 1 * MIB
    last = a.counts()[-1]
    time.sleep(2)                       # the guest is not running: no new count
    assert a.counts()[-1] == last
    run = a.driver.restore(a.spec(), state_file)
    assert run.status == RunStatus.RUNNING and run.pid != pid
    counts = a.wait_count(last + 2)
    assert counts[0] == 1 and continuous(counts), counts   # no reboot: 1, 2, ... last, last+1
    assert a.console().count(b"CUMULO-READY") == 1


def test_live_migration_continues_on_the_destination(booted: tuple[Host, Host]) -> None:
    a, b = booted
    b.driver.create(b.spec())
    assert b.driver.signature(HOST_ID) == a.driver.signature(HOST_ID)
    uri = b.driver.prepare_incoming(b.spec(), "127.0.0.1")
    assert uri.startswith("tcp:127.0.0.1:")
    seen: list[float] = []
    src_pid = a.qemu_pid()
    stats = a.driver.send(HOST_ID, uri, live=True, bandwidth=None,
                          progress=lambda f, _m: seen.append(f), cancelled=lambda: False)
    state = b.driver.finish_incoming(HOST_ID, resume=True)
    assert state.status == RunStatus.RUNNING
    print(f"live migration: {stats}")
    assert stats["status"] == "completed" and stats["downtime_ms"] < 1000
    assert stats["transferred"] > 0 and seen
    last_a = a.counts()[-1]
    a.driver.delete(HOST_ID, a.top / "i")
    assert src_pid is not None and not procs.alive(src_pid)
    counts = b.wait_count(last_a + 2)
    assert b"CUMULO-READY" not in b.console()
    assert last_a <= counts[0] + 1 and counts[0] <= last_a + 2 and continuous(counts), counts


def test_cancel_and_a_dead_destination_leave_the_source_running(
        booted: tuple[Host, Host]) -> None:
    src, dst = booted[1], booted[0]          # the guest is on b now: move it back to a
    for what in ("cancel", "kill"):
        dst.driver.create(dst.spec())
        uri = dst.driver.prepare_incoming(dst.spec(), "127.0.0.1")
        dst_pid = dst.qemu_pid()
        assert dst_pid is not None
        started = time.monotonic()

        def progress(_f: float, _m: str, what: str = what, dst_pid: int = dst_pid,
                     started: float = started) -> None:
            if what == "kill" and time.monotonic() - started > 1.5:
                os.kill(dst_pid, signal.SIGKILL)

        expected = ConflictError if what == "cancel" else DriverError
        with pytest.raises(expected, match="cancelled" if what == "cancel" else "failed"):
            src.driver.send(HOST_ID, uri, live=True, bandwidth=SLOW, progress=progress,
                            cancelled=lambda what=what, started=started: what == "cancel"
                            and time.monotonic() - started > 1.5)
        src.driver.resume_after_failed_send(HOST_ID, was_running=True)
        assert src.driver.state(HOST_ID).status == RunStatus.RUNNING
        last = src.counts()[-1]
        src.wait_count(last + 2)
        dst.driver.delete(HOST_ID, dst.top / "i")
        assert not procs.alive(dst_pid) and dst.driver.list_host_ids() == []


def test_restore_without_a_checkpoint_or_of_a_running_vm_is_refused(
        booted: tuple[Host, Host]) -> None:
    _, b = booted
    with pytest.raises(ConflictError, match="running"):
        b.driver.restore(replace(b.spec()), b.top / "nothing")
    a, _ = booted
    a.driver.create(a.spec())
    with pytest.raises(Exception, match="checkpoint"):
        a.driver.restore(a.spec(), a.top / "nothing")
    assert a.driver.state(HOST_ID).status == RunStatus.STOPPED
    a.driver.delete(HOST_ID, a.top / "i")
