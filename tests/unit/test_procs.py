"""procs.alive and wait_dead on real processes: a zombie is dead, a zombie leader
whose other threads still run is not, and waiting is bounded."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cumulo.host import procs

# the main thread ends with SYS_exit (60 on x86-64: this thread only) while another runs
LEADER_EXITS = """
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(%s,)).start()
time.sleep(0.05)
ctypes.CDLL(None).syscall(60, 0)
"""


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def until(pred: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


@pytest.fixture
def child() -> Iterator[list[subprocess.Popen[bytes]]]:
    made: list[subprocess.Popen[bytes]] = []
    yield made
    for p in made:
        p.kill()
        p.wait()


def test_a_running_process_is_alive_and_its_name_is_checked(
        child: list[subprocess.Popen[bytes]]) -> None:
    p = subprocess.Popen(["sleep", "30"])
    child.append(p)
    until(lambda: Path(f"/proc/{p.pid}/comm").read_text().strip() == "sleep")
    assert procs.alive(p.pid)
    assert procs.alive(p.pid, "sleep")
    assert not procs.alive(p.pid, "qemu-system-x86")


def test_an_unreaped_child_is_dead_and_wait_dead_returns_at_once(
        child: list[subprocess.Popen[bytes]]) -> None:
    p = subprocess.Popen(["true"])
    child.append(p)
    until(lambda: state(p.pid) == "Z")       # not reaped: still in /proc
    assert not procs.alive(p.pid)
    start = time.monotonic()
    assert procs.wait_dead(p.pid, 5.0)
    assert time.monotonic() - start < 1.0


def test_a_pid_that_does_not_exist_is_dead() -> None:
    assert not procs.alive(2**22 + 1)   # above the kernel's pid_max limit
    assert procs.wait_dead(2**22 + 1, 0.0)


def test_a_zombie_leader_with_a_running_thread_is_alive_until_the_thread_ends(
        child: list[subprocess.Popen[bytes]]) -> None:
    p = subprocess.Popen([sys.executable, "-c", LEADER_EXITS % 1.5])
    child.append(p)
    until(lambda: state(p.pid) == "Z")
    assert procs.alive(p.pid), "its second thread still runs"
    assert procs.wait_dead(p.pid, 10.0)
    assert not procs.alive(p.pid)


def test_wait_dead_is_bounded(child: list[subprocess.Popen[bytes]]) -> None:
    p = subprocess.Popen(["sleep", "30"])
    child.append(p)
    start = time.monotonic()
    assert not procs.wait_dead(p.pid, 0.2)
    assert 0.2 <= time.monotonic() - start < 2.0
