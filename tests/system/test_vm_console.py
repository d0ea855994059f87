"""One booted VM shared by the module: serial console (logs, interactive), vTPM, balloon.

The VM (pc, paravirt I/O, 256 MiB, --tpm) has an interactive shell on its console as
PID 1's command, so what the test types through ``cumulo console`` (in a pty, as a
user would) is answered on the same console.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.system.conftest import BIN, Daemon
from tests.system.test_vm_cli import wait_logs

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow]


@pytest.fixture(scope="module")
def vm(module_daemon: Daemon) -> Iterator[str]:
    module_daemon.cli("image", "build", "busybox")
    module_daemon.cli("launch", "busybox", "cvm", "--type", "vm", "--machine", "pc",
                      "--memory", "256MiB", "--tpm", "--", "sh", "-c",
                      "echo console-shell-up; exec sh")
    wait_logs(module_daemon, "cvm", "console-shell-up")
    yield "cvm"
    module_daemon.cli("delete", "cvm", "--force")
    assert not swtpms(module_daemon), "swtpm left running after delete"


def swtpms(daemon: Daemon) -> list[psutil.Process]:
    """The swtpm processes of this daemon's VMs."""
    return [p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "swtpm"
            and str(daemon.socket.parent) in " ".join(p.info["cmdline"] or [])]


def guest(daemon: Daemon, script: str) -> str:
    return daemon.cli("exec", "cvm", "--", "sh", "-c", script).stdout


def meminfo_total(daemon: Daemon) -> int:
    return int(guest(daemon, "grep MemTotal /proc/meminfo").split()[1]) * 1024


class Pty:
    """A command on a pty, read with a deadline (never an unbounded wait); ``size``: the
    window's (rows, cols) before the command starts (else the pty's 0x0)."""

    def __init__(self, argv: list[str], env: dict[str, str],
                 size: tuple[int, int] | None = None) -> None:
        self.master, slave = pty.openpty()
        if size:
            self._size(*size)
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

    def _size(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def resize(self, rows: int, cols: int) -> None:
        """The window changes: its new size, then SIGWINCH to the command (the pty is not
        its controlling terminal, so the kernel does not send it)."""
        self._size(rows, cols)
        self.proc.send_signal(signal.SIGWINCH)

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


def test_the_guest_sees_a_tpm2_backed_by_its_own_swtpm(module_daemon: Daemon, vm: str) -> None:
    out = guest(module_daemon, "ls /dev/tpm0 /dev/tpmrm0;"
                               " cat /sys/class/tpm/tpm0/tpm_version_major")
    assert out.split() == ["/dev/tpm0", "/dev/tpmrm0", "2"], out
    assert len(swtpms(module_daemon)) == 1
    info = json.loads(module_daemon.cli("info", vm, "--format", "json").stdout)
    assert info["options"]["tpm"] == "on"


def test_balloon_shrinks_the_running_guest_and_info_shows_it(module_daemon: Daemon,
                                                             vm: str) -> None:
    mib = 1024 * 1024
    details = json.loads(module_daemon.cli("info", vm, "--format", "json").stdout)["details"]
    assert details["balloon_actual_bytes"] == 256 * mib, details
    before = meminfo_total(module_daemon)
    module_daemon.cli("config", "set", vm, "memory", "160MiB")
    deadline = time.monotonic() + 60
    while True:
        details = json.loads(module_daemon.cli("info", vm, "--format", "json").stdout
                             )["details"]
        if details["balloon_actual_bytes"] <= 160 * mib:
            break
        assert time.monotonic() < deadline, details
        time.sleep(0.5)
    after = meminfo_total(module_daemon)
    print(f"balloon: MemTotal {before >> 20} MiB -> {after >> 20} MiB,"
          f" actual {details['balloon_actual_bytes'] >> 20} MiB")
    assert before - after >= 90 * mib, (before, after)
    assert "guest memory" in module_daemon.cli("info", vm).stdout
    # more than it booted with cannot come from the balloon
    r = module_daemon.cli("config", "set", vm, "memory", "512MiB", check=False)
    assert r.returncode == 1 and "booted with (256MiB)" in r.stderr, r.stderr
    module_daemon.cli("config", "set", vm, "memory", "256MiB")


def test_stop_ends_the_swtpm_and_a_stopped_vm_has_no_console(module_daemon: Daemon,
                                                            vm: str) -> None:
    module_daemon.cli("stop", vm, "--timeout", "20")
    assert not swtpms(module_daemon), "swtpm outlived its stopped VM"
    r = module_daemon.cli("console", vm, check=False)
    assert r.returncode == 1 and "it is stopped" in r.stderr, r.stderr
    assert "sum=42" in module_daemon.cli("logs", vm).stdout   # the history stays
