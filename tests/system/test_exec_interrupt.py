"""An interrupted `cumulo exec` (its client killed mid-command) blocks nothing: later
execs into the same and other instances answer, its command is ended, and the
daemon stops within seconds of SIGTERM with exec and console sessions open, the
instances running on. Containers and VMs, through the CLI as a user runs it.

Every wait is bounded (subprocess timeouts, polls with a deadline): on the old code
these tests fail by a bound, not by hanging.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
import uuid

import pytest

from tests.system.conftest import BIN, Daemon
from tests.system.test_vm_cli import wait_logs
from tests.system.test_vm_console import Pty

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.slow]

ANSWER = 30.0      # an exec into a container answers in well under a second
VM_ANSWER = 90.0   # one into a VM on TCG, on a loaded machine, in seconds
STOP = 20.0        # the daemon stops in about 3 s at most (GRACEFUL_STOP)


class Forever:
    """``cumulo exec NAME -- sh -c 'echo started; exec sleep MARKER'``, seen running."""

    def __init__(self, daemon: Daemon, name: str, tty: bool = False,
                 timeout: float = ANSWER) -> None:
        self.marker = str(70000 + uuid.uuid4().int % 20000)   # seconds: never ends
        argv = [str(BIN / "cumulo"), "exec", *(["-t"] if tty else []), name, "--",
                "sh", "-c", f"echo started; exec sleep {self.marker}"]
        self.pty = Pty(argv, daemon.env) if tty else None
        self.proc = self.pty.proc if self.pty else subprocess.Popen(
            argv, env=daemon.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        if self.pty:
            self.pty.expect(b"started", timeout)
        else:
            assert self.proc.stdout is not None
            fd = self.proc.stdout.fileno()
            ready, _, _ = select.select([fd], [], [], timeout)
            assert ready and b"started" in os.read(fd, 4096), "the command did not start"

    def kill(self) -> None:
        """As Ctrl-C's harsher cousin, or a dropped link: no goodbye to the daemon."""
        self.proc.kill()
        self.proc.wait(10)
        self.close()

    def close(self) -> None:
        if self.pty:
            self.pty.close()
        else:
            for f in (self.proc.stdout, self.proc.stderr):
                if f is not None:
                    f.close()


def echo(daemon: Daemon, name: str, word: str, timeout: float = ANSWER) -> None:
    r = daemon.cli("exec", name, "--", "echo", word, timeout=timeout)
    assert r.stdout == f"{word}\n", r


def wait_ended(daemon: Daemon, name: str, marker: str, timeout: float = ANSWER) -> None:
    """Poll ``ps`` in the instance until no process has ``marker`` in its command."""
    deadline = time.monotonic() + timeout
    while f"sleep {marker}" in (ps := daemon.cli("exec", name, "--", "ps", timeout=timeout
                                                 ).stdout):
        assert time.monotonic() < deadline, f"'sleep {marker}' still runs in {name}:\n{ps}"
        time.sleep(0.5)


def stop_within(daemon: Daemon, seconds: float = STOP) -> None:
    """SIGTERM; the daemon must be gone within ``seconds`` (else SIGKILL, and fail)."""
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        daemon.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        daemon.proc.kill()
        daemon.proc.wait(10)
        pytest.fail(f"cumulod still ran {seconds:.0f}s after SIGTERM")


def state(daemon: Daemon, name: str) -> str:
    return str(json.loads(daemon.cli("info", name, "--format", "json").stdout)["state"])


def test_an_interrupted_exec_into_a_container_blocks_nothing(daemon: Daemon) -> None:
    daemon.cli("image", "build", "busybox")
    daemon.cli("launch", "busybox", "a")
    daemon.cli("launch", "busybox", "b")
    echo(daemon, "a", "first")
    for tty in (False, True):
        left = Forever(daemon, "a", tty)
        left.kill()
        echo(daemon, "a", "second")     # the same instance
        echo(daemon, "b", "third")      # another one
        wait_ended(daemon, "a", left.marker)

    # SIGTERM with sessions open: one running, one whose client was killed
    running = Forever(daemon, "a")
    left = Forever(daemon, "b", tty=True)
    left.kill()
    stop_within(daemon)
    try:
        assert running.proc.wait(ANSWER) == 1
        assert running.proc.stderr is not None
        err = running.proc.stderr.read().decode()
        assert "cumulod stopped: the command was killed (a keeps running)" in err, err
    finally:
        running.close()
    # the instances ran on; the commands of the sessions were ended
    daemon.start()
    assert (state(daemon, "a"), state(daemon, "b")) == ("running", "running")
    wait_ended(daemon, "a", running.marker)
    wait_ended(daemon, "b", left.marker)


@pytest.mark.qemu
def test_an_interrupted_exec_into_a_vm_blocks_nothing(daemon: Daemon) -> None:
    daemon.cli("image", "build", "busybox")
    daemon.cli("launch", "busybox", "v", "--type", "vm", "--machine", "pc",
               "--memory", "128MiB", "--", "sh", "-c", "echo vm-up; exec sh")
    daemon.cli("launch", "busybox", "c")
    wait_logs(daemon, "v", "vm-up")
    echo(daemon, "v", "first", VM_ANSWER)
    # two clients killed mid-command: each held one of the VM's agent ports
    left = [Forever(daemon, "v", timeout=VM_ANSWER) for _ in range(2)]
    for session in left:
        session.kill()
    echo(daemon, "v", "second", VM_ANSWER)   # a port was freed (else: "all busy")
    echo(daemon, "c", "third")
    for session in left:
        wait_ended(daemon, "v", session.marker, VM_ANSWER)

    # a console whose client was killed frees the VM's console for the next one
    console = Pty([str(BIN / "cumulo"), "console", "v"], daemon.env)
    try:
        console.expect(b"detach with ctrl-a q", ANSWER)
        console.send(b"echo one=$((0+1))\r")
        console.expect(b"one=1", VM_ANSWER)
    finally:
        console.close()    # SIGKILL

    # SIGTERM with an exec and the console open
    running = Forever(daemon, "v", timeout=VM_ANSWER)
    console = Pty([str(BIN / "cumulo"), "console", "v"], daemon.env)
    try:
        console.expect(b"detach with ctrl-a q", ANSWER)
        console.send(b"echo two=$((1+1))\r")
        console.expect(b"two=2", VM_ANSWER)
        stop_within(daemon)
        assert console.proc.wait(ANSWER) == 1
        console.expect(b"cumulod stopped: detached from v's console (v keeps running)", 5)
        assert running.proc.wait(ANSWER) == 1
    finally:
        console.close()
        running.close()
    daemon.start()
    assert (state(daemon, "v"), state(daemon, "c")) == ("running", "running")
    wait_ended(daemon, "v", running.marker, VM_ANSWER)
