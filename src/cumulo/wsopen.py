"""Opening a websocket: the HTTP upgrade spoken with h11, and a first message sent
before wsproto is imported.

``cumulo exec`` sends its request as that first message. The daemon then starts the
command (``runc exec``: a few tens of ms) while this process imports wsproto and
hashlib (for the check of the server's accept key), about a quarter of what
``import typer`` takes: the two overlap instead of adding up. The frame is a single
masked text frame (RFC 6455 5.2), sent only once the server accepted the upgrade;
everything after it is wsproto's (``cumulo.wsclient``).
"""

from __future__ import annotations

import binascii
import contextlib
import os
import threading
import time
from collections import deque

from cumulo.errors import CumuloError

TYPE_CHECKING = False   # as typing's, without importing typing: ~4 ms of the CLI fast path
if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator

    from cumulo.wsclient import WebSocket

ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"   # RFC 6455 1.3
CLOSE_WAIT = 2.0   # seconds ``close`` waits for the peer's close frame


class Rejected(CumuloError):
    """The server answered the upgrade request with an HTTP status, not a websocket."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body.decode(errors='replace')[:200]}")
        self.status, self.body = status, body


class StreamClosed(CumuloError):
    """The websocket is closed; ``code``: the peer's close code (1006: the link broke)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"the websocket is closed (code {code})")
        self.code = code


class MessageReader:
    """What the two websocket clients share (``cumulo.wsclient.WebSocket`` on wsproto,
    ``cumulo.liteclient.LiteWebSocket`` on the standard library): messages read one at
    a time until the peer closes, and the wait for its close frame. A subclass feeds
    what it reads to ``_receive``, which queues whole messages and sets ``close_code``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()   # one reader at a time
        self._messages: deque[bytes | str] = deque()
        self.close_code: int | None = None     # set when the peer's close (or EOF) is seen

    def _receive(self, data: bytes | None) -> None:
        raise NotImplementedError

    def recv(self) -> bytes | str:
        """The next message; ``StreamClosed`` once the peer closed or the link broke."""
        with self._read_lock:
            while not self._messages:
                if self.close_code is not None:
                    raise StreamClosed(self.close_code)
                try:
                    data: bytes | None = self._sock.recv(1 << 16) or None
                except OSError:
                    data = None
                self._receive(data)
            return self._messages.popleft()

    def __iter__(self) -> Iterator[bytes | str]:
        """Messages until the websocket closes, however it closes (see ``close_code``)."""
        while True:
            try:
                yield self.recv()
            except StreamClosed:
                return

    def _await_close(self) -> None:
        """After our close frame: wait a little for the peer's, close the socket. While
        another thread reads, that reader sees the peer's answer and ends, and its own
        ``close`` then closes the socket."""
        if not self._read_lock.acquire(blocking=False):
            return
        try:
            deadline = time.monotonic() + CLOSE_WAIT
            with contextlib.suppress(OSError):
                while self.close_code is None and (left := deadline - time.monotonic()) > 0:
                    self._sock.settimeout(left)
                    self._receive(self._sock.recv(1 << 16) or None)
            self._sock.close()
        finally:
            self._read_lock.release()


def text_frame(text: str) -> bytes:
    """One complete client text frame (FIN, opcode 1, masked) carrying ``text``."""
    return frame(1, text.encode())


def frame(opcode: int, payload: bytes) -> bytes:
    """One complete client frame (FIN, masked) of ``opcode`` carrying ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + masked


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server answers to ``key``."""
    from hashlib import sha1

    return binascii.b2a_base64(sha1(key + ACCEPT_GUID).digest(), newline=False)


def handshake(sock: socket.socket, host: str, target: str,
              headers: dict[str, str] | None = None, first: str | None = None) -> WebSocket:
    """Upgrade the connected ``sock`` to a websocket on ``target`` (a path with its query);
    with ``first``, send it as the first text message as soon as the server accepted.

    Raises ``Rejected`` when the server answers with an HTTP status instead, OSError
    when the link fails or the answer is no websocket's. ``sock``'s timeout bounds the
    handshake; the websocket then blocks without one."""
    import h11

    key = binascii.b2a_base64(os.urandom(16), newline=False).decode()
    conn = h11.Connection(h11.CLIENT)
    extra = [(k.lower(), v) for k, v in (headers or {}).items()]
    sock.sendall((conn.send(h11.Request(method="GET", target=target, headers=[
        ("host", host), ("upgrade", "websocket"), ("connection", "Upgrade"),
        ("sec-websocket-key", key), ("sec-websocket-version", "13"), *extra])) or b"")
        + (conn.send(h11.EndOfMessage()) or b""))
    status, body = 0, bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as err:
            raise OSError(f"bad websocket handshake: {err}") from None
        if event is h11.NEED_DATA:
            data = sock.recv(1 << 16)
            if not data:
                raise OSError("the server closed the connection during the websocket"
                              " handshake")
            conn.receive_data(data)
        elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            accept = dict(event.headers).get(b"sec-websocket-accept")
            break
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            raise Rejected(status, bytes(body))
    if first is not None:
        sock.sendall(text_frame(first))
    # what the server sends from here on is wsproto's; importing it (and hashlib) now
    # overlaps with the server's work on ``first``
    from wsproto import ConnectionType
    from wsproto.connection import Connection

    from cumulo.wsclient import WebSocket

    if accept != accept_key(key.encode()):
        raise OSError("bad websocket handshake: wrong Sec-WebSocket-Accept")
    sock.settimeout(None)
    ws = WebSocket(sock, Connection(ConnectionType.CLIENT, trailing_data=conn.trailing_data[0]))
    ws._receive(b"")    # frames that came with the 101 wait in wsproto
    return ws
