"""The client side of `cumulo exec`: stream stdin/stdout/stderr, return the exit code."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import termios
import threading
import tty
from types import FrameType
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from cumulo.client import APIError, Client, stream_cut


def _pump_stdin(ws: ClientConnection, raw_tty: bool) -> None:
    fd = sys.stdin.fileno()
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            ws.send(data)
        ws.send(json.dumps({"eof": True}))
    except (OSError, ConnectionClosed):
        pass


def run_exec(client: Client, name: str, command: list[str], *, tty_mode: bool,
             env: dict[str, str], cwd: str, project: str) -> int:
    size = shutil.get_terminal_size()
    request: dict[str, Any] = {"command": command, "tty": tty_mode, "env": env, "cwd": cwd,
                               "rows": size.lines, "cols": size.columns}
    ws = client.exec_stream(name, request, project)
    stdin_is_tty = sys.stdin.isatty()
    saved = None
    if tty_mode and stdin_is_tty:
        saved = termios.tcgetattr(sys.stdin.fileno())
        tty.setraw(sys.stdin.fileno(), termios.TCSANOW)   # keep type-ahead

        def on_winch(_sig: int, _frame: FrameType | None) -> None:
            s = shutil.get_terminal_size()
            with contextlib.suppress(Exception):
                ws.send(json.dumps({"resize": [s.lines, s.columns]}))

        signal.signal(signal.SIGWINCH, on_winch)
    if tty_mode or not stdin_is_tty:
        threading.Thread(target=_pump_stdin, args=(ws, tty_mode), daemon=True).start()
    else:
        ws.send(json.dumps({"eof": True}))
    code: int | None = None
    try:
        for msg in ws:
            if isinstance(msg, bytes):
                stream = sys.stdout if msg[0] == 1 else sys.stderr
                stream.buffer.write(msg[1:])
                stream.buffer.flush()
                continue
            ctl = json.loads(msg)
            if "exit_code" in ctl:
                code = int(ctl["exit_code"])
            elif "error" in ctl:
                raise APIError(ctl["error"], int(ctl.get("status", 500)), ctl.get("type", ""))
    except ConnectionClosed:
        pass
    finally:
        if saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        ws.close()
    if code is None:
        raise stream_cut(ws, f"the command was killed ({name} keeps running)")
    return code
