"""The client side of `cumulo console`: a raw terminal on the instance's serial console.

Keystrokes go to the console as typed; ctrl-a q detaches (the instance keeps running),
ctrl-a a sends a literal ctrl-a. Without a terminal on stdin, stdin is sent as it is and
the console is followed until the daemon or the instance ends it (or ctrl-a q in the input).
"""

from __future__ import annotations

import json
import os
import sys
import termios
import threading
import tty

from cumulo.client import APIError, Client, stream_cut
from cumulo.wsclient import StreamClosed, WebSocket

ESCAPE = b"\x01"          # ctrl-a
DETACH = b"q"
LITERAL = b"a"            # ctrl-a a: a ctrl-a for the guest
DETACH_HELP = "ctrl-a q"


class Keys:
    """Splits typed bytes into what goes to the console and the detach request."""

    def __init__(self) -> None:
        self.pending = False      # ctrl-a seen, waiting for the next key

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for b in data:
            c = bytes([b])
            if self.pending:
                self.pending = False
                if c == DETACH:
                    return bytes(out), True
                out += ESCAPE if c in (LITERAL, ESCAPE) else ESCAPE + c
            elif c == ESCAPE:
                self.pending = True
            else:
                out += c
        return bytes(out), False


def _pump_stdin(ws: WebSocket, detached: threading.Event) -> None:
    keys = Keys()
    try:
        while True:
            data = os.read(sys.stdin.fileno(), 4096)
            if not data:
                return            # end of input: keep showing the console
            out, detach = keys.feed(data)
            if out:
                ws.send(out)
            if detach:
                detached.set()
                ws.close()
                return
    except (OSError, StreamClosed):
        pass


def run_console(client: Client, name: str, project: str | None) -> int:
    ws = client.console_stream(name, project)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if sys.stdin.isatty() else None
    if saved is not None:
        # Raw before the banner, and without a flush: keys typed after the
        # banner must reach the guest, not be discarded by TCSAFLUSH.
        tty.setraw(fd, termios.TCSANOW)
        sys.stderr.write(f"Attached to {name}'s console; detach with {DETACH_HELP}\r\n")
        sys.stderr.flush()
    detached = threading.Event()
    threading.Thread(target=_pump_stdin, args=(ws, detached), daemon=True).start()
    try:
        for msg in ws:
            if isinstance(msg, bytes):
                sys.stdout.buffer.write(msg)
                sys.stdout.buffer.flush()
                continue
            ctl = json.loads(msg)
            if "error" in ctl:
                raise APIError(ctl["error"], int(ctl.get("status", 500)), ctl.get("type", ""))
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        ws.close()
    if not detached.is_set() and ws.close_code == 1012:
        raise stream_cut(ws, f"detached from {name}'s console ({name} keeps running)")
    if detached.is_set() and saved is not None:
        sys.stderr.write(f"\nDetached from {name}'s console\n")
    return 0
