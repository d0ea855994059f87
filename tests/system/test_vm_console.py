"""One booted VM shared by the module: its serial console (logs, interactive console).

The VM's PID 1 command is an interactive shell on the console, so what the test types
through ``cumulo console`` (in a pty, as a user would) is answered on the same console.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.system.conftest import BIN, Daemon
from tests.system.test_vm_cli import wait_logs

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow]


@pytest.fixture(scope="module")
def vm(module_daemon: Daemon) -> Iterator[str]:
    module_daemon.cli("image", "build", "busybox")
    module_daemon.cli("launch", "busybox", "cvm", "--type", "vm", "--machine", "pc",
                      "--memory", "256MiB", "--", "sh", "-c",
                      "echo console-shell-up; exec sh")
    wait_logs(module_daemon, "cvm", "console-shell-up")
    yield "cvm"
    module_daemon.cli("delete", "cvm", "--force")


class Pty:
    """A command on a pty, read with a deadline (never an unbounded wait)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     close_fds=True)
        os.close(slave)
        self.seen = b""

    def expect(self, text: bytes, timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not seen in: {self.seen[-1500:]!r}"
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:   # EIO: the command exited and closed the pty
                    assert text in self.seen, self.seen[-1500:]
        return self.seen

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


def test_logs_show_the_guest_boot_and_its_output(module_daemon: Daemon, vm: str) -> None:
    logs = module_daemon.cli("logs", vm).stdout
    assert "CUMULO-READY" in logs and "console-shell-up" in logs


def test_console_types_a_line_and_sees_the_answer_then_detaches(module_daemon: Daemon,
                                                                vm: str) -> None:
    t = Pty([str(BIN / "cumulo"), "console", vm], module_daemon.env)
    try:
        t.expect(b"detach with ctrl-a q", 20)
        t.send(b"echo sum=$((6*7))\r")
        t.expect(b"sum=42")
        t.send(b"\x01q")
        assert t.proc.wait(15) == 0
        t.expect(b"Detached from cvm's console", 5)
    finally:
        t.close()
    # detaching left the VM running, and the typed line is in the console history
    info = json.loads(module_daemon.cli("info", vm, "--format", "json").stdout)
    assert info["state"] == "running"
    assert "sum=42" in module_daemon.cli("logs", vm).stdout


def test_console_of_an_unknown_name_is_a_clear_error(module_daemon: Daemon
                                                                 ) -> None:
    r = module_daemon.cli("console", "nope", check=False)
    assert r.returncode == 1 and "nope" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
