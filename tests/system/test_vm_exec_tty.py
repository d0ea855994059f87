"""``cumulo exec -t`` into a busybox (initramfs) VM: a real terminal in the guest, a virtio
console (/dev/hvcN) with the kernel's line discipline, as a user runs it through the CLI
on a pty: the size of the client's window and its changes, ^C, the exit code, a client
killed mid-command ends the command, and output comes whole.

On the old code the command had no terminal at all (``tty``: "not a tty"), so every part
of this test fails there; every wait is bounded.
"""

from __future__ import annotations

import re

import pytest

from tests.system.conftest import BIN, Daemon
from tests.system.test_exec_interrupt import VM_ANSWER, Forever, wait_ended
from tests.system.test_vm_cli import wait_logs
from tests.system.test_vm_console import Pty

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow]


@pytest.mark.qemu
def test_exec_t_in_a_busybox_vm_is_a_terminal(daemon: Daemon) -> None:
    daemon.cli("image", "build", "busybox")
    daemon.cli("launch", "busybox", "v", "--type", "vm", "--machine", "pc",
               "--memory", "128MiB", "--", "sh", "-c", "echo vm-up; exec sh")
    wait_logs(daemon, "v", "vm-up")
    t = Pty([str(BIN / "cumulo"), "exec", "-t", "v", "--", "sh"], daemon.env, (33, 101))
    try:
        t.expect(b"# ", VM_ANSWER)          # an interactive shell: it sees a terminal
        t.send(b"tty; stty size; echo sum=$((6*7))\r")
        seen = t.expect(b"sum=42", VM_ANSWER)
        assert re.search(rb"/dev/hvc\d\r\n33 101\r\n", seen), seen[-500:]
        # ^C: SIGINT to the foreground job, through the guest's line discipline
        t.send(b"sh -c 'echo sleeping-$((2+3)); exec sleep 300'\r")
        t.expect(b"sleeping-5", VM_ANSWER)
        t.send(b"\x03")
        t.send(b"echo code=$?\r")            # 128 + SIGINT
        t.expect(b"code=130", VM_ANSWER)
        # the window is resized: the command gets SIGWINCH and sees the new size
        t.send(b"sh -c 'trap \"stty size; exit 5\" WINCH; echo waiting-$((3+4));"
               b" while :; do sleep 1; done'; echo code=$?\r")
        t.expect(b"waiting-7", VM_ANSWER)
        t.resize(40, 120)
        seen = t.expect(b"code=5", VM_ANSWER)
        assert b"40 120\r\n" in seen.rpartition(b"waiting-7")[2], seen[-500:]
        # the exit code comes back
        t.send(b"exit 7\r")
        assert t.proc.wait(VM_ANSWER) == 7
    finally:
        t.close()
    # a client killed mid-command: the command ends, the terminal is free again
    left = Forever(daemon, "v", tty=True, timeout=VM_ANSWER)
    left.kill()
    wait_ended(daemon, "v", left.marker, VM_ANSWER)
    again = Forever(daemon, "v", tty=True, timeout=VM_ANSWER)
    again.kill()
    wait_ended(daemon, "v", again.marker, VM_ANSWER)
    r = daemon.cli("exec", "v", "--", "ls", "/run/cumulo-tty", timeout=VM_ANSWER)
    assert r.stdout.strip() == "", r.stdout
    # output is not lost (QEMU drops a console's output its chardev cannot take at once)
    t = Pty([str(BIN / "cumulo"), "exec", "-t", "v", "--", "seq", "5000"], daemon.env)
    try:
        seen = t.expect(b"\r\n5000\r\n", VM_ANSWER)
        assert t.proc.wait(VM_ANSWER) == 0
        assert seen.split(b"\r\n")[:-1] == [str(i).encode() for i in range(1, 5001)]
    finally:
        t.close()
