"""The CLI's websocket clients (cumulo.wsopen with cumulo.wsclient on wsproto, and the fast
path's cumulo.liteclient on the standard library; every test runs on both) against a
wsproto server on a socket pair: the first message sent with the upgrade arrives first,
messages split over frames arrive whole, pings are answered, a close or a cut link ends the
stream with its code, a refused upgrade is one error, a wrong accept key is refused."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from cumulo.liteclient import LiteClient
from cumulo.wsclient import WebSocket
from cumulo.wsopen import Rejected, StreamClosed, handshake, text_frame


def lite_handshake(sock: socket.socket, host: str, target: str,
                   headers: dict[str, str] | None = None, first: str | None = None) -> Any:
    client = LiteClient(socket="unused")
    client.headers = dict(headers or {})
    return client._handshake(sock, host, target, first)


HANDSHAKES: dict[str, Callable[..., Any]] = {"wsproto": handshake, "lite": lite_handshake}


@pytest.fixture(params=sorted(HANDSHAKES))
def shake(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return HANDSHAKES[request.param]


class Server:
    """The far end: accepts the upgrade, then runs ``script`` with a send and a receive."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.conn = sock, WSConnection(ConnectionType.SERVER)

    def send(self, event: object) -> None:
        self.sock.sendall(self.conn.send(event))  # type: ignore[arg-type]

    def next(self) -> object:
        while True:
            for event in self.conn.events():
                return event
            self.conn.receive_data(self.sock.recv(65536) or None)

    def accept(self) -> Request:
        request = self.next()
        assert isinstance(request, Request)
        self.send(AcceptConnection())
        return request


def served(script: Callable[[Server], None], shake: Callable[..., Any],
           first: str | None = None) -> Iterator[WebSocket]:
    ours, theirs = socket.socketpair()
    thread = threading.Thread(target=script, args=(Server(theirs),), daemon=True)
    thread.start()
    ours.settimeout(10)
    ws = shake(ours, "cumulo", "/1.0/x?project=p", {"Authorization": "Bearer t"}, first)
    try:
        yield ws
    finally:
        ws.close()
        thread.join(10)
        theirs.close()


def test_messages_split_over_frames_arrive_whole_and_pings_are_answered(
        shake: Callable[..., Any]) -> None:
    got: list[object] = []

    def script(s: Server) -> None:
        req = s.accept()
        got.append((req.target, dict(req.extra_headers).get(b"authorization")))
        s.send(Ping(payload=b"p"))
        s.send(BytesMessage(data=b"\x01hel", message_finished=False))
        s.send(BytesMessage(data=b"lo", message_finished=True))
        got.append(s.next())                        # the client's pong
        got.append(s.next())                        # what it sent after the first message
        s.send(TextMessage(data='{"exit', message_finished=False))
        s.send(TextMessage(data='_code": 0}', message_finished=True))
        s.send(CloseConnection(code=1000))
        got.append(s.next())                        # the client's close answer

    for ws in served(script, shake):
        assert ws.recv() == b"\x01hello"
        ws.send("stdin")
        assert list(ws) == ['{"exit_code": 0}']
        assert ws.close_code == 1000
    assert got[0] == ("/1.0/x?project=p", b"Bearer t")
    assert isinstance(got[1], Pong) and got[1].payload == b"p"
    assert isinstance(got[2], Message) and got[2].data == "stdin"
    assert isinstance(got[3], CloseConnection)


def test_a_close_code_is_kept_and_recv_then_raises(shake: Callable[..., Any]) -> None:
    def script(s: Server) -> None:
        s.accept()
        s.send(CloseConnection(code=1012))          # "service restart": cumulod stops
        s.next()

    for ws in served(script, shake):
        with pytest.raises(StreamClosed) as closed:
            ws.recv()
        assert closed.value.code == ws.close_code == 1012
        with pytest.raises(StreamClosed):
            ws.send(b"late")


def test_a_cut_link_ends_the_stream_as_abnormal(shake: Callable[..., Any]) -> None:
    def script(s: Server) -> None:
        s.accept()
        s.sock.shutdown(socket.SHUT_RDWR)

    for ws in served(script, shake):
        assert list(ws) == []
        assert ws.close_code == 1006


def test_a_refused_upgrade_is_one_error_with_its_status(shake: Callable[..., Any]) -> None:
    ours, theirs = socket.socketpair()

    def script() -> None:
        s = Server(theirs)
        s.next()
        s.send(RejectConnection(status_code=403, has_body=True,
                                headers=[(b"content-length", b"2")]))
        s.send(RejectData(data=b"no", body_finished=True))

    threading.Thread(target=script, daemon=True).start()
    ours.settimeout(10)
    with ours, theirs, pytest.raises(Rejected) as refused:
        shake(ours, "cumulo", "/1.0/x", None)
    assert refused.value.status == 403 and "no" in str(refused.value)


def test_the_first_message_goes_with_the_upgrade_and_arrives_first(
        shake: Callable[..., Any]) -> None:
    """``first`` (exec's request) is sent once the server accepted, as a frame of our own
    (before wsproto is imported); sizes across the 7-bit, 16-bit and 64-bit lengths."""
    got: list[object] = []
    texts = ["x" * n for n in (0, 125, 126, 70_000)]

    def whole(s: Server) -> object:   # wsproto hands a long message over in pieces
        event = s.next()
        while isinstance(event, Message) and not event.message_finished:
            more = s.next()
            assert isinstance(more, Message)
            event = TextMessage(data=event.data + more.data,
                                message_finished=more.message_finished)
        return event

    def script(s: Server) -> None:
        s.accept()
        got.append(s.next())
        for _ in texts:
            got.append(whole(s))
        s.send(TextMessage(data="done"))
        s.send(CloseConnection(code=1000))
        got.append(s.next())

    for ws in served(script, shake, first='{"command": ["true"]}'):
        for text in texts:
            ws._sock.sendall(text_frame(text))   # our framing, every length encoding
        assert list(ws) == ["done"]
    assert isinstance(got[0], Message) and got[0].data == '{"command": ["true"]}'
    assert [m.data for m in got[1:-1] if isinstance(m, Message)] == texts
    assert isinstance(got[-1], CloseConnection)


def test_a_wrong_accept_key_is_refused(shake: Callable[..., Any]) -> None:
    ours, theirs = socket.socketpair()

    def script() -> None:
        theirs.recv(65536)
        theirs.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IGl0\r\n\r\n")

    threading.Thread(target=script, daemon=True).start()
    ours.settimeout(10)
    with ours, theirs, pytest.raises(OSError, match="Sec-WebSocket-Accept"):
        shake(ours, "cumulo", "/1.0/x", None, first="{}")


def test_long_messages_from_the_server_arrive_whole(shake: Callable[..., Any]) -> None:
    """Every length encoding of the server's frames (7-bit, 16-bit, 64-bit), in one read
    or spread over many."""
    sizes = [0, 125, 126, 65_535, 65_536, 200_000]

    def script(s: Server) -> None:
        s.accept()
        for n in sizes:
            s.send(BytesMessage(data=b"\x01" + b"y" * n))
        s.send(CloseConnection(code=1000))
        s.next()

    for ws in served(script, shake):
        assert [len(m) - 1 for m in ws] == sizes
        assert ws.close_code == 1000
