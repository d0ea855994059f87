"""What the client does on the wire: a request with a small body goes in one write, so
the daemon reads it whole when it first wakes (not its head, then, woken again, its body);
requests in a row share a connection, unless the daemon closed it, it is old, or it was
kept by the process this one was forked from."""

from __future__ import annotations

import contextlib
import gc
import io
import select
import socket
import threading
import time
import warnings
from pathlib import Path

import h11
import pytest

from cumulo import client as cc
from cumulo.client import Client

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"


class Wire:
    """A socket that records each write and answers ``ANSWER``."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self._answer = io.BytesIO(ANSWER)

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def recv(self, n: int) -> bytes:
        return self._answer.read(n)


def sent(body: bytes | io.BytesIO) -> tuple[list[bytes], bytes]:
    """The writes of a POST of ``body``, and the body the server reads from them."""
    wire = Wire()
    hdrs = {"content-type": "application/octet-stream"}
    if isinstance(body, bytes):
        hdrs["content-length"] = str(len(body))
    else:
        hdrs["transfer-encoding"] = "chunked"
    head, rest = Client(socket="/nowhere")._http(
        wire, "cumulo", "POST", "/1.0/x", hdrs, body)  # type: ignore[arg-type]
    assert head.status_code == 200 and b"".join(rest) == b"{}"
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"".join(wire.writes))
    got = b""
    while not isinstance(event := server.next_event(), h11.EndOfMessage):
        assert event is not h11.NEED_DATA
        if isinstance(event, h11.Data):
            got += bytes(event.data)
    return wire.writes, got


def test_a_small_body_goes_with_its_head_in_one_write() -> None:
    writes, got = sent(b'{"name": "c1"}')
    assert len(writes) == 1 and got == b'{"name": "c1"}'
    writes, got = sent(b"")
    assert len(writes) == 1 and got == b""


def test_a_large_body_or_a_file_is_still_sent_whole() -> None:
    big = bytes(range(256)) * (cc.ONE_WRITE // 256 + 3)
    writes, got = sent(big)
    assert len(writes) > 1 and got == big
    writes, got = sent(io.BytesIO(big))
    assert got == big


class Daemon:
    """HTTP/1.1 on a unix socket, as uvicorn serves it: a connection takes request after
    request; ``close_after`` closes each after that many answers (without saying so, as
    an idle timeout or a restart would). Counts the connections it accepted."""

    def __init__(self, path: str, close_after: int = 0) -> None:
        self.accepted = 0
        self.close_after = close_after
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        h = h11.Connection(h11.SERVER)
        answered = 0
        with conn, contextlib.suppress(OSError, h11.ProtocolError):
            while True:
                ev = h.next_event()
                if ev is h11.NEED_DATA:
                    h.receive_data(conn.recv(65536))
                elif isinstance(ev, h11.EndOfMessage):
                    body = b'{"n": %d}' % self.accepted
                    conn.sendall(h.send(h11.Response(status_code=200, headers=[
                        ("content-length", str(len(body)))])) + h.send(h11.Data(data=body))
                        + h.send(h11.EndOfMessage()))
                    answered += 1
                    if answered == self.close_after:
                        return
                    h.start_next_cycle()
                elif isinstance(ev, h11.ConnectionClosed):
                    return


def test_requests_in_a_row_share_a_connection(tmp_path: Path) -> None:
    daemon = Daemon(str(tmp_path / "s"))
    with Client(socket=str(tmp_path / "s")) as c:
        assert [c.get("/x")["n"] for _ in range(3)] == [1, 1, 1]
        c.request("POST", "/y", json={"a": 1})
    assert daemon.accepted == 1


def test_a_connection_the_daemon_closed_is_not_reused(tmp_path: Path) -> None:
    daemon = Daemon(str(tmp_path / "s"), close_after=1)
    with Client(socket=str(tmp_path / "s")) as c:
        for n in (1, 2, 3):
            deadline = time.monotonic() + 5   # (its end has reached us: as after a restart)
            while c._kept is not None and not _closed(c) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert c.get("/x")["n"] == n
    assert daemon.accepted == 3


def test_an_old_connection_or_a_parents_is_not_reused(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    daemon = Daemon(str(tmp_path / "s"))
    with Client(socket=str(tmp_path / "s")) as c:
        c.get("/x")
        assert c._kept is not None
        c._kept.pid = -1   # kept by the process this one was forked from
        c.get("/x")
        monkeypatch.setattr(cc, "KEEP_IDLE", 0.0)
        c.get("/x")
    assert daemon.accepted == 3


def test_an_answer_not_read_to_its_end_closes_its_connection(tmp_path: Path) -> None:
    daemon = Daemon(str(tmp_path / "s"))
    with Client(socket=str(tmp_path / "s")) as c:
        with c._stream("/x") as (head, body):
            assert head.status_code == 200   # and its body left unread
        assert c._kept is None
        c.get("/x")
    assert daemon.accepted == 2


def test_a_client_let_go_closes_its_kept_connection(tmp_path: Path) -> None:
    Daemon(str(tmp_path / "s"))
    c = Client(socket=str(tmp_path / "s"))
    c.get("/x")
    kept = c._kept
    assert kept is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a socket's finalizer would warn of it
        del c
        gc.collect()
    assert kept.sock.fileno() == -1


def _closed(c: Client) -> bool:
    kept = c._kept
    return kept is not None and bool(select.select([kept.sock], [], [], 0)[0])
