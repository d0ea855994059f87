"""A client that leaves an exec stream mid-command: its command ends, nothing else waits;
a stopping server ends the sessions still open.

The daemon's own HTTP server (``make_server``) runs in process on a unix socket, over
the fake driver (the command is a host process), and the real client talks to it:
the TestClient would cancel the handler of a websocket it closes, which a real
server does not. The same with containers, VMs and the CLI is in
tests/system/test_exec_interrupt.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
import uvicorn

from cumulo.api import exec_ws
from cumulo.client import Client
from cumulo.daemon import make_server
from cumulo.drivers.base import ExecRequest, ExecSession
from cumulo.drivers.vm.exec_session import MAX_STDIN
from cumulo.services.host import Services
from cumulo.wsclient import StreamClosed, WebSocket

T = TypeVar("T")
ANSWER = 15.0   # seconds an exec may take to answer on a loaded machine


@dataclass
class Served:
    client: Client
    server: uvicorn.Server
    thread: threading.Thread


@pytest.fixture
def served(svc: Services, tmp_path: Path) -> Iterator[Served]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "api.sock"))
    sock.listen(16)
    server = make_server(svc, "warning")
    thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),),
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + ANSWER
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        with Client(socket=str(tmp_path / "api.sock")) as client:
            for name in ("a", "b"):
                client.create(name, "testimg", start=True)
            yield Served(client, server, thread)
    finally:
        server.should_exit = True
        thread.join(ANSWER)
        sock.close()


def within(seconds: float, fn: Callable[[], T]) -> T:
    """``fn()``, failing the test (not hanging it) if it has not returned in time."""
    out: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as err:  # noqa: BLE001 - re-raised below
            errors.append(err)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if errors:
        raise errors[0]
    assert out, f"no answer within {seconds:.0f}s"
    return out[0]


def read_all(ws: WebSocket) -> tuple[bytes, int]:
    out = b""
    for msg in ws:
        if isinstance(msg, bytes):
            out += msg[1:]
        elif "exit_code" in (ctl := json.loads(msg)):
            return out, int(ctl["exit_code"])
    raise AssertionError(f"no exit code; output {out!r}")


def exec_once(c: Client, name: str, command: list[str], tty: bool = False) -> tuple[bytes, int]:
    ws = c.exec_stream(name, {"command": command, "tty": tty})
    try:
        ws.send(json.dumps({"eof": True}))
        return within(ANSWER, lambda: read_all(ws))
    finally:
        ws.close()


def start_forever(c: Client, name: str, tty: bool = False, stdin: bytes = b""
                  ) -> tuple[WebSocket, str]:
    """A command that never ends, seen running: its stream and a marker in its argv."""
    marker = f"{1000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"   # sleep seconds
    ws = c.exec_stream(name, {"command": ["sh", "-c", f"echo started; exec sleep {marker}"],
                              "tty": tty})
    got = within(ANSWER, ws.recv)
    assert isinstance(got, bytes) and b"started" in got, got
    for at in range(0, len(stdin), 65536):   # what the CLI sends, in its chunks
        ws.send(stdin[at:at + 65536])
    return ws, marker


def start_collect(c: Client, name: str) -> tuple[threading.Thread, str]:
    """``POST .../exec`` (collect all output) of a command that never ends, seen running."""
    marker = f"{3000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    assert c.socket is not None

    def call() -> None:
        with Client(socket=c.socket) as own, contextlib.suppress(Exception):
            own.exec(name, ["sleep", marker], timeout=600)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    deadline = time.monotonic() + ANSWER
    while not processes(marker):
        assert time.monotonic() < deadline, "POST exec did not start its command"
        time.sleep(0.05)
    return thread, marker


def processes(marker: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]


def fill_stdin(ws: WebSocket, chunks: int) -> None:
    """Send stdin the command never reads until ``chunks`` messages of 64 KiB are on
    their way (the sender goes on, on a thread, until the server stops reading)."""
    sent = threading.Semaphore(0)

    def send() -> None:
        with contextlib.suppress(StreamClosed, OSError):
            for _ in range(4 * chunks):
                ws.send(b"x" * 65536)
                sent.release()

    threading.Thread(target=send, daemon=True).start()
    for _ in range(chunks):
        assert sent.acquire(timeout=ANSWER), "the server stopped taking stdin early"


def gone(marker: str) -> None:
    """Wait (bounded) until no process runs with ``marker`` in its argv."""
    deadline = time.monotonic() + ANSWER
    while processes(marker):
        assert time.monotonic() < deadline, f"the command of 'sleep {marker}' still runs"
        time.sleep(0.1)


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
def test_a_client_that_leaves_mid_command_blocks_no_other_exec(served: Served, tty: bool
                                                               ) -> None:
    c = served.client
    assert exec_once(c, "a", ["echo", "first"]) == (b"first\n", 0)
    ws, marker = start_forever(c, "a", tty)
    ws.close_socket()    # as a killed client: no close handshake
    # the next execs, into the same and another instance, answer
    assert exec_once(c, "a", ["echo", "second"]) == (b"second\n", 0)
    assert exec_once(c, "b", ["echo", "third"], tty=True)[1] == 0
    gone(marker)         # the command of the client that left was killed
    assert exec_once(c, "a", ["echo", "fourth"]) == (b"fourth\n", 0)


def test_a_client_that_leaves_with_its_stdin_unread_is_seen(served: Served) -> None:
    """The command never reads: more stdin than a pipe holds waits, and the client
    leaving is still seen."""
    c = served.client
    ws, marker = start_forever(c, "a", stdin=b"x" * (8 * 65536))
    ws.close_socket()
    assert exec_once(c, "a", ["echo", "second"]) == (b"second\n", 0)
    gone(marker)


def test_a_stopping_server_ends_open_sessions(served: Served) -> None:
    """Whatever state the sessions are in: one running, one whose client left, one
    whose client left while the server holds more stdin than it takes (then it does
    not see the client leave: the stop cuts the session after a grace time), and a
    POST exec collecting output."""
    c = served.client
    running, marker = start_forever(c, "a")
    left, left_marker = start_forever(c, "b", tty=True)
    left.close_socket()
    stuck, stuck_marker = start_forever(c, "a")
    fill_stdin(stuck, exec_ws.STDIN_BACKLOG // 65536 + 3)
    stuck.close_socket()
    collected, collect_marker = start_collect(c, "b")
    served.server.should_exit = True       # what SIGTERM does
    served.thread.join(ANSWER)
    assert not served.thread.is_alive(), "the server did not stop"
    with pytest.raises(StreamClosed) as closed:
        within(ANSWER, running.recv)
    assert closed.value.code == 1012  # service restart
    collected.join(ANSWER)
    assert not collected.is_alive(), "POST exec still waits"
    for m in (marker, left_marker, stuck_marker, collect_marker):
        gone(m)


def test_a_malformed_control_message_ends_only_its_session(served: Served) -> None:
    c = served.client
    ws, marker = start_forever(c, "a")
    ws.send("{not json")
    gone(marker)
    ws.close()
    assert exec_once(c, "a", ["echo", "next"]) == (b"next\n", 0)


def test_a_session_slow_to_start_is_not_cut_by_the_keepalive(served: Served, svc: Services,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """A session that takes long to start (a VM whose guest agent answers late, just after
    a migration or a boot) still gives its output and exit code: the server reads the
    client meanwhile, so its answers to the keepalive pings are seen (uvicorn pauses
    reading while a message waits for the app, and cut such streams with 1011 after
    ping interval + timeout: the CLI said "lost the connection ... the command was
    killed")."""
    served.server.config.ws_ping_interval = 0.05   # each new connection reads these
    served.server.config.ws_ping_timeout = 0.05
    driver = svc.instances.drivers["container"]
    real_exec = driver.exec

    def slow_exec(host_id: str, request: ExecRequest) -> ExecSession:
        time.sleep(10 * 0.1)   # 10 keepalive rounds: as a guest agent that answers at last
        return real_exec(host_id, request)

    monkeypatch.setattr(driver, "exec", slow_exec)
    assert exec_once(served.client, "a", ["echo", "late"]) == (b"late\n", 0)
    # and stdin sent meanwhile, in many small pieces (a slow producer's): a VM takes all
    # of its stdin at once, and all of it may wait while its agent wakes up
    assert exec_ws.STDIN_BACKLOG > MAX_STDIN
    ws = served.client.exec_stream("a", {"command": ["cat"]})
    try:
        pieces = [b"%04d " % i + b"x" * 1000 + b"\n" for i in range(64)]
        for piece in pieces:
            ws.send(piece)
        ws.send(json.dumps({"eof": True}))
        assert within(ANSWER, lambda: read_all(ws)) == (b"".join(pieces), 0)
    finally:
        ws.close()


def test_a_client_that_leaves_while_its_session_starts_leaves_no_command(
        served: Served, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = svc.instances.drivers["container"]
    real_exec = driver.exec
    asked, go, made = threading.Event(), threading.Event(), threading.Event()

    def held_exec(host_id: str, request: ExecRequest) -> ExecSession:
        asked.set()
        assert go.wait(ANSWER)
        session = real_exec(host_id, request)
        made.set()
        return session

    monkeypatch.setattr(driver, "exec", held_exec)
    marker = f"{5000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"
    ws = served.client.exec_stream("a", {"command": ["sleep", marker]})
    assert asked.wait(ANSWER)
    ws.close_socket()          # gone before its command started
    time.sleep(0.2)            # (the server sees it leave, or not yet: either way)
    go.set()
    assert made.wait(ANSWER)   # its command started after all...
    gone(marker)               # ...and was killed
    monkeypatch.setattr(driver, "exec", real_exec)
    assert exec_once(served.client, "a", ["echo", "next"]) == (b"next\n", 0)
