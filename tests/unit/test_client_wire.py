"""What the client writes on the wire: a request with a small body goes in one write, so
the daemon reads it whole when it first wakes (not its head, then, woken again, its body).
"""

from __future__ import annotations

import io

import h11

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
