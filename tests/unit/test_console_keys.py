"""`cumulo console` keys: ctrl-a q detaches, ctrl-a a is a literal ctrl-a, type-ahead is kept."""

from __future__ import annotations

import os
import pty
import select
import sys
import time

from cumulo.cli.console_client import Keys


def test_plain_keys_pass_through_and_ctrl_a_q_detaches() -> None:
    k = Keys()
    assert k.feed(b"ls\r") == (b"ls\r", False)
    assert k.feed(b"echo x\x01q after") == (b"echo x", True)


def test_escape_split_across_reads_and_literal_ctrl_a() -> None:
    k = Keys()
    assert k.feed(b"a\x01") == (b"a", False)
    assert k.feed(b"q") == (b"", True)
    k = Keys()
    assert k.feed(b"\x01a\x01x") == (b"\x01\x01x", False)


CHILD = r"""
import sys, time, tty, threading
from cumulo.cli import console_client

real_setraw = tty.setraw
def slow_setraw(fd, when=None):
    time.sleep(0.5)                 # widen the window between banner and raw mode
    return real_setraw(fd) if when is None else real_setraw(fd, when)
console_client.tty.setraw = slow_setraw

class Ws:
    def __init__(self):
        self.got = bytearray()
        self.done = threading.Event()
    def send(self, data):
        self.got += data
        if b"\r" in self.got:
            self.done.set()
    def close(self):
        self.done.set()
    def __iter__(self):
        self.done.wait(5)
        yield b"GUEST-GOT:" + bytes(self.got) + b":END"

class Client:
    def console_stream(self, name, project):
        return Ws()

sys.exit(console_client.run_console(Client(), "vm1", "default"))
"""


def test_keys_typed_right_after_the_banner_reach_the_console() -> None:
    """Raw mode is set before the banner without TCSAFLUSH, so type-ahead is never dropped."""
    pid, fd = pty.fork()
    if pid == 0:                                   # the child: cumulo console on a pty
        os.execv(sys.executable, [sys.executable, "-c", CHILD])
    seen = b""
    deadline = time.monotonic() + 20
    typed = False
    try:
        while b":END" not in seen and time.monotonic() < deadline:
            if not typed and b"detach with" in seen:
                os.write(fd, b"echo hi\r")
                typed = True
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break
    finally:
        os.waitpid(pid, 0)
        os.close(fd)
    assert typed, seen
    assert b"GUEST-GOT:echo hi\r:END" in seen, seen
