"""The client side of `cumulo exec`: stream stdin/stdout/stderr, return the exit code."""

from __future__ import annotations

import os
import sys
import termios
import threading

from cumulo import jsonlite
from cumulo.client import APIError, Client, stream_cut
from cumulo.wsopen import StreamClosed

TYPE_CHECKING = False   # as typing's, without importing typing: ~4 ms of the CLI fast path
if TYPE_CHECKING:   # imported once the request is on its way (wsopen.py)
    from types import FrameType
    from typing import Any

    from cumulo.wsclient import WebSocket


def _pump_stdin(ws: WebSocket) -> None:
    fd = sys.stdin.fileno()
    try:
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            ws.send(data)
        ws.send(jsonlite.dumps({"eof": True}))
    except (OSError, StreamClosed):
        pass


def _window() -> os.terminal_size:
    """The terminal's size: from the terminal itself when there is one (as ssh and docker
    read it), not from COLUMNS/LINES, which the environment can hold stale (pytest-xdist's
    workers set 80x24); else those variables, then 80x24 (as shutil.get_terminal_size,
    whose import, bz2 and lzma with it, was a tenth of the fast path's ``exec``)."""
    for fd in (1, 0, 2):
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        if size.columns and size.lines:
            return size
    columns, lines = (_positive(os.environ.get(k)) for k in ("COLUMNS", "LINES"))
    return os.terminal_size((columns or 80, lines or 24))


def _positive(text: str | None) -> int:
    """``text`` as a positive number, else 0."""
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


def _send_resizes(ws: WebSocket, winched: threading.Event) -> None:
    """Send the terminal's size after each SIGWINCH (the handler only sets ``winched``:
    sending from it could interrupt a send of the main thread's, mid-frame)."""
    while winched.wait():
        winched.clear()
        s = _window()
        try:
            ws.send(jsonlite.dumps({"resize": [s.lines, s.columns]}))
        except (OSError, StreamClosed):
            return


def run_exec(client: Client, name: str, command: list[str], *, tty_mode: bool,
             env: dict[str, str], cwd: str, project: str | None) -> int:
    size = _window()
    request: dict[str, Any] = {"command": command, "tty": tty_mode, "env": env, "cwd": cwd,
                               "rows": size.lines, "cols": size.columns}
    ws = client.exec_stream(name, request, project)
    stdin_is_tty = sys.stdin.isatty()
    saved = None
    if tty_mode and stdin_is_tty:   # (signal imports enum: only here)
        import signal
        import tty

        saved = termios.tcgetattr(sys.stdin.fileno())
        tty.setraw(sys.stdin.fileno(), termios.TCSANOW)   # keep type-ahead

        winched = threading.Event()
        threading.Thread(target=_send_resizes, args=(ws, winched), daemon=True).start()

        def on_winch(_sig: int, _frame: FrameType | None) -> None:
            winched.set()

        signal.signal(signal.SIGWINCH, on_winch)
    if tty_mode or not stdin_is_tty:
        threading.Thread(target=_pump_stdin, args=(ws,), daemon=True).start()
    else:
        ws.send(jsonlite.dumps({"eof": True}))
    code: int | None = None
    try:
        for msg in ws:      # until the daemon closes it (after exit_code, or cut short)
            if isinstance(msg, bytes):
                stream = sys.stdout if msg[0] == 1 else sys.stderr
                stream.buffer.write(msg[1:])
                stream.buffer.flush()
                continue
            ctl = jsonlite.loads(msg)
            if "exit_code" in ctl:
                code = int(ctl["exit_code"])
            elif "error" in ctl:
                raise APIError(ctl["error"], int(ctl.get("status", 500)), ctl.get("type", ""))
    finally:
        if saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        ws.close()
    if code is None:
        raise stream_cut(ws, f"the command was killed ({name} keeps running)")
    return code
