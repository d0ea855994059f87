"""The CLI's fast path (cumulo.cli.fast, cumulo.liteclient): what it takes on, and that it
prints, exits and asks the daemon exactly what the full CLI does.

Both paths run as subprocesses on the same command lines against a fake daemon on a unix
socket (h11 and wsproto on its side) that records every request and websocket message
and answers from a script: successes, errors with and without a JSON body, a failed and
a still-running operation, an exec that writes to both streams and exits 3.
(tests/system/test_cli_fast.py does the same against a real cumulod.)
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Request,
    TextMessage,
)

from cumulo.cli.fast import Call, parse

# --- parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "want"), [
    (["launch", "busybox", "web"], Call("launch", None, ["busybox", "web"], {}, [])),
    (["--project", "p1", "launch", "--type=vm", "debian/12", "v1", "--network", "none"],
     Call("launch", "p1", ["debian/12", "v1"], {"type": "vm", "network": ["none"]}, [])),
    (["launch", "busybox", "web", "--", "sleep", "--help"],
     Call("launch", None, ["busybox", "web"], {}, ["sleep", "--help"])),
    (["launch", "busybox", "web", "sleep", "100"],
     Call("launch", None, ["busybox", "web"], {}, ["sleep", "100"])),
    (["launch", "--network", "a", "busybox", "--network=b", "web"],
     Call("launch", None, ["busybox", "web"], {"network": ["a", "b"]}, [])),
    (["exec", "web", "--", "ls", "-l"], Call("exec", None, ["web"], {}, ["ls", "-l"])),
    (["exec", "web", "echo", "--help"], Call("exec", None, ["web"], {}, ["echo", "--help"])),
    (["exec", "web", "--", "--", "x"], Call("exec", None, ["web"], {}, ["--", "x"])),
    (["exec", "--env", "A=1", "--cwd=/tmp", "--project", "p", "web", "true"],
     Call("exec", None, ["web"], {"env": ["A=1"], "cwd": "/tmp", "project": "p"}, ["true"])),
    (["stop", "web", "--timeout", "5", "--force"],
     Call("stop", None, ["web"], {"timeout": 5.0, "force": True}, [])),
    (["delete", "--no-force", "web"], Call("delete", None, ["web"], {"force": False}, [])),
    (["--project=p", "start", "web"], Call("start", "p", ["web"], {}, [])),
    (["restart", "web", "--timeout=1.5"], Call("restart", None, ["web"], {"timeout": 1.5}, [])),
])
def test_parse_takes_the_plain_forms(argv: list[str], want: Call) -> None:
    assert repr(parse(argv)) == repr(want)


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["list"], ["info", "web"], ["launch", "--help"], ["launch", "busybox"],
    ["launch", "busybox", "web", "--memory", "64MiB"],     # an option it does not know
    ["launch", "busybox", "web", "-c"], ["launch", "busybox", "-", "x"],
    ["launch", "busybox", "web", "--type"],                 # no value
    ["launch", "busybox", "web", "--type", "--network"],    # a value like an option
    ["launch", "--type", "vm", "--type", "pc", "busybox", "web"],   # given twice
    ["launch", "busybox", "we b"], ["launch", "busybox", "web/1"], ["launch", "bu?sy", "w"],
    ["launch", "busybox", "w", "--project", "p q"],
    ["exec", "web"], ["exec", "web", "--"], ["exec", "-t", "web", "--", "sh"],
    ["exec", "--", "web", "true"], ["exec", "--tty", "web", "sh"],
    ["stop", "web", "--timeout", "soon"], ["stop", "web", "--force=yes"],
    ["stop", "web", "other"], ["start", "--", "web"], ["delete"], ["start", "web", "--help"],
    ["--project", "launch", "busybox", "web"], ["--project"], ["--help", "launch"],
    ["--project", "a", "--project", "b", "start", "web"], ["pause", "-web"],
])
def test_parse_leaves_the_rest_to_the_full_cli(argv: list[str]) -> None:
    assert parse(argv) is None


# --- both paths against a fake daemon --------------------------------------------

Answer = tuple[int, Any]   # status, JSON body (or bytes: sent as they are)


class FakeDaemon:
    """HTTP/1.1 on a unix socket, one connection at a time; ``answer(method, target,
    body)`` gives each reply; ``log`` keeps what came: requests and websocket messages."""

    def __init__(self, path: Path, answer: Callable[[str, str, Any], Answer]) -> None:
        self.path, self.answer = path, answer
        self.log: list[Any] = []
        self.busy = 0   # connections accepted and not yet done with
        self.idle = threading.Condition()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.sock.close()

    def wait_idle(self) -> None:
        """Until every connection taken is done with: a client that got its answer may
        exit before this side logged the rest (the websocket's messages)."""
        with self.idle:
            assert self.idle.wait_for(lambda: self.busy == 0, timeout=10), "still busy"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.idle:
                self.busy += 1
            try:
                with conn, contextlib.suppress(OSError, h11.ProtocolError):
                    self._one(conn)
            finally:
                with self.idle:
                    self.busy -= 1
                    self.idle.notify_all()

    def _one(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        if b"upgrade: websocket" in data.lower():
            self._websocket(conn, data)
            return
        h = h11.Connection(h11.SERVER)
        h.receive_data(data)
        req, body = None, b""
        while True:
            ev = h.next_event()
            if ev is h11.NEED_DATA:
                h.receive_data(conn.recv(65536))
            elif isinstance(ev, h11.Request):
                req = ev
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                break
        assert req is not None
        method, target = req.method.decode(), req.target.decode()
        parsed = json.loads(body) if body else None
        self.log.append([method, target, parsed])
        status, out = self.answer(method, target, parsed)
        payload = out if isinstance(out, bytes) else json.dumps(out).encode()
        ctype = "text/plain" if isinstance(out, bytes) else "application/json"
        conn.sendall(h.send(h11.Response(status_code=status, headers=[   # (one a connection)
            ("content-type", ctype), ("content-length", str(len(payload))),
            ("connection", "close")])) or b"")
        conn.sendall(h.send(h11.Data(data=payload)) or b"")
        conn.sendall(h.send(h11.EndOfMessage()) or b"")

    def _websocket(self, conn: socket.socket, data: bytes) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(data)
        got: list[Any] = []
        for ev in ws.events():
            if isinstance(ev, Request):
                self.log.append(["WS", ev.target])
                conn.sendall(ws.send(AcceptConnection()))
        sent_output = False
        while True:
            for ev in ws.events():
                if isinstance(ev, TextMessage):
                    got.append(json.loads(ev.data))
                elif isinstance(ev, BytesMessage):   # stdin: as one piece however cut
                    if got and isinstance(got[-1], str):
                        got[-1] += bytes(ev.data).decode()
                    else:
                        got.append(bytes(ev.data).decode())
                elif isinstance(ev, CloseConnection):
                    self.log.append(["WS messages", got])
                    return
            if got and {"eof": True} in got and not sent_output:
                sent_output = True
                for msg in (b"\x01out line\n", b"\x02err line\n"):
                    conn.sendall(ws.send(BytesMessage(data=msg)))
                conn.sendall(ws.send(TextMessage(data=json.dumps({"exit_code": 3}))))
                conn.sendall(ws.send(CloseConnection(code=1000)))
            chunk = conn.recv(65536)
            if not chunk:
                self.log.append(["WS messages", got])
                return
            ws.receive_data(chunk)


OP = {"id": "op1", "project": "default", "status": "success", "error": None}


def default_answer(method: str, target: str, body: Any) -> Answer:
    if "/missing" in target:
        return 404, {"error": "instance 'missing' not found", "type": "NotFoundError"}
    if "/teapot" in target:
        return 500, b"not json at all"
    if "/failing" in target or (body or {}).get("name") == "failing":
        return 202, {**OP, "status": "failure", "error": "it broke",
                     "error_type": "DriverError"}
    if "/slow" in target or (body or {}).get("name") == "slow":
        return 202, {**OP, "status": "running"}
    if target.startswith("/1.0/operations/op1"):
        return 200, OP
    return 202, OP


FULL = ("import sys; from cumulo.cli.main import main; sys.argv[0] = 'cumulo'; main()")
FAST = """
import sys
from cumulo.cli.fast import run
code = run(sys.argv[1:])
sys.stdout.flush()
sys.exit(99 if code is None else code)
"""


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeDaemon]:
    d = FakeDaemon(tmp_path / "fake.sock", default_answer)
    yield d
    d.close()


def both(fake: FakeDaemon, tmp_path: Path, argv: list[str], stdin: bytes = b""
         ) -> list[tuple[int, str, str, list[Any]]]:
    env = {**os.environ, "CUMULO_SOCKET": str(fake.path),
           "CUMULO_CONFIG": str(tmp_path / "none.json")}
    for key in ("CUMULO_URL", "CUMULO_PROJECT", "CUMULO_CLI_FAST"):
        env.pop(key, None)
    out = []
    for code in (FULL, FAST):
        fake.log.clear()
        r = subprocess.run([sys.executable, "-c", code, *argv], input=stdin,
                           capture_output=True, env=env, timeout=60)
        fake.wait_idle()
        out.append((r.returncode, r.stdout.decode(), r.stderr.decode(), list(fake.log)))
    return out


@pytest.mark.parametrize("argv", [
    ["launch", "busybox", "web"],
    ["launch", "busybox", "web", "--type", "vm", "--network", "n1", "--network=n2"],
    ["launch", "busybox", "web", "--network", "none", "--", "sleep", "100"],
    ["--project", "p1", "launch", "busybox", "web", "--project", "p2"],
    ["launch", "busybox", "failing"], ["launch", "busybox", "slow"],
    ["launch", "busybox", "teapot"],
    ["start", "web"], ["stop", "web", "--timeout", "5", "--force"], ["stop", "web"],
    ["restart", "web", "--timeout=2"], ["pause", "web"], ["resume", "slow"],
    ["stop", "missing"], ["start", "failing"], ["start", "teapot"],
    ["delete", "web"], ["delete", "--force", "web"], ["delete", "missing"],
    ["--project=p1", "delete", "web", "--no-force"],
    ["exec", "web", "--", "sh", "-c", "exit 3"],
    ["exec", "--env", "A=1", "--env", "B", "--cwd", "/tmp", "--project", "p", "web", "ls"],
    ["exec", "missing", "--", "true"],
])
def test_fast_path_does_what_the_full_cli_does(fake: FakeDaemon, tmp_path: Path,
                                              argv: list[str]) -> None:
    full, fast = both(fake, tmp_path, argv, stdin=b"to stdin\n")
    assert fast[0] != 99, "the fast path did not take it"
    assert fast == full
    assert full[3], "no request was made"


def test_fast_path_sends_stdin_as_the_full_cli(fake: FakeDaemon, tmp_path: Path) -> None:
    full, fast = both(fake, tmp_path, ["exec", "web", "--", "cat"], stdin=b"x" * 70000)
    assert fast == full
    assert full[:3] == (3, "out line\n", "err line\n")
    messages = full[3][-1][1]
    assert "".join(m for m in messages if isinstance(m, str)) == "x" * 70000
    assert messages[-1] == {"eof": True}


def test_a_daemon_that_is_not_there(tmp_path: Path) -> None:
    """Unreachable: the same one-line error from both paths."""
    fake = FakeDaemon(tmp_path / "fake.sock", default_answer)
    fake.close()
    os.unlink(tmp_path / "fake.sock")
    for argv in (["launch", "busybox", "web"], ["exec", "web", "--", "true"]):
        full, fast = both(fake, tmp_path, argv)
        assert fast[:3] == full[:3]
        assert full[0] == 1 and full[2].startswith("Error: cannot "), full


def test_the_installed_entry_takes_the_fast_path_without_typer(tmp_path: Path,
                                                               fake: FakeDaemon) -> None:
    """`cumulo launch` and `cumulo exec` through cumulo.cli.entry load neither typer nor
    h11, wsproto or rich, nor the standard modules whose import costs most (json, re and
    enum, socket, urllib, shutil, signal, typing: C modules do their work); with
    CUMULO_CLI_FAST=0 they go through typer as before."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print(repr(sorted(sys.modules)), file=sys.stderr))\n"
            "from cumulo.cli.entry import main\nsys.argv[0] = 'cumulo'\nmain()")
    env = {**os.environ, "CUMULO_SOCKET": str(fake.path),
           "CUMULO_CONFIG": str(tmp_path / "none.json")}
    env.pop("CUMULO_URL", None)
    heavy = ("typer", "click", "h11", "wsproto", "rich", "httpx", "http.client", "pathlib",
             "json", "re", "enum", "socket", "urllib", "shutil", "signal", "typing")
    for argv in (["launch", "busybox", "web"], ["exec", "web", "--", "true"]):
        for fast in ("1", "0"):
            r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                               text=True, env={**env, "CUMULO_CLI_FAST": fast}, timeout=60)
            mods = set(ast.literal_eval(r.stderr.splitlines()[-1]))
            loaded = sorted(m for m in mods if m.split(".")[0] in heavy)
            if fast == "1":
                assert loaded == [], (argv, loaded)
            else:
                assert "typer" in loaded, argv
