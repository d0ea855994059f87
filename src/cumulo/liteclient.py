"""The client over the local unix socket with the standard library alone: the transport of
the CLI's fast path (``cumulo.cli.fast``).

``Client`` speaks HTTP with h11 and websockets with wsproto, on a socket of its own. Once
typer is no longer imported around them, importing those two (dataclasses, inspect,
typing, enum ... that they pull in) is most of what a quick command costs: h11 alone
about as much as starting the interpreter and importing json. ``LiteClient`` is a
``Client`` whose two wire methods (``_http``, ``_handshake``) are written here for the
little the fast path asks of them: a request with ``Connection: close`` and a JSON or no
body, the answer read to its end (Content-Length, chunked, or the connection's end), and
a websocket whose frames (RFC 6455 5.2) the daemon's uvicorn sends unmasked and whole.
Everything else (the methods, how errors read, the operation's wait) is ``Client``'s.
"""

from __future__ import annotations

import binascii
import contextlib
import os

from cumulo.client import Client, Response
from cumulo.wsopen import ACCEPT_GUID, MessageReader, Rejected, StreamClosed, frame

TYPE_CHECKING = False   # as typing's, without importing typing: ~4 ms of the CLI fast path
if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator
    from typing import Any

    from cumulo.wsclient import WebSocket

TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10
NORMAL, NO_STATUS, ABNORMAL = 1000, 1005, 1006


class BadAnswer(Exception):
    """The daemon's answer is not HTTP this module reads (or it closed before one)."""


class LiteClient(Client):
    """A ``Client`` on a unix socket whose requests and websockets need no h11 or wsproto."""

    def _open(self, timeout: float | None) -> tuple[socket.socket, str, Any]:
        """A new connection for each request (a quick command makes one or two)."""
        return (*self._dial(timeout), None)

    def _done(self, sock: socket.socket, host: str, conn: Any) -> None:
        sock.close()

    def _http(self, sock: socket.socket, host: str, method: str, target: str,
              hdrs: dict[str, str], body: Any, conn: Any = None
              ) -> tuple[Response, Iterator[bytes]]:
        if body is not None and not isinstance(body, bytes):
            raise TypeError("LiteClient sends bytes bodies only")
        head = [f"{method} {target} HTTP/1.1", f"host: {host}", "connection: close",
                *(f"{k}: {v}" for k, v in hdrs.items())]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        try:
            # it may have answered (and closed) before taking it all: read on
            with contextlib.suppress(OSError):
                sock.sendall(data)
            reader = _Reader(sock)
            while True:
                status, reason, headers = reader.head()
                if status >= 200:
                    break   # (a 1xx answer is followed by the real one)
        except (OSError, BadAnswer) as err:
            raise self._unreachable(err) from err
        return (Response(status, reason, headers, b""),
                _body(reader, status, method, headers, self.where()))

    def _handshake(self, sock: socket.socket, host: str, target: str, first: str | None
                   ) -> WebSocket:
        key = binascii.b2a_base64(os.urandom(16), newline=False)
        head = [f"GET {target} HTTP/1.1", f"host: {host}", "upgrade: websocket",
                "connection: Upgrade", f"sec-websocket-key: {key.decode()}",
                "sec-websocket-version: 13",
                *(f"{k.lower()}: {v}" for k, v in self.headers.items())]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        reader = _Reader(sock)
        try:
            status, _, headers = reader.head()
            while status != 101 and status < 200:
                status, _, headers = reader.head()
        except BadAnswer as err:
            if not reader.buf and reader.eof:
                raise OSError("the server closed the connection during the websocket"
                              " handshake") from None
            raise OSError(f"bad websocket handshake: {err}") from None
        if status != 101:
            try:
                rest = b"".join(_body(reader, status, "GET", headers, ""))
            except Exception:
                rest = b""
            raise Rejected(status, rest)
        if first is not None:
            sock.sendall(frame(TEXT, first.encode()))
        if headers.get("sec-websocket-accept", "").encode() != _accept_key(key):
            raise OSError("bad websocket handshake: wrong Sec-WebSocket-Accept")
        sock.settimeout(None)
        ws = LiteWebSocket(sock, bytes(reader.buf))
        ws._receive(b"")   # frames that came with the 101
        return ws  # type: ignore[return-value]  # the same methods: send, recv, close ...


def _accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server answers to ``key`` (wsopen.accept_key's,
    with the built-in sha1: hashlib's import is ~4 ms, a tenth of the fast path)."""
    try:
        from _sha1 import sha1  # type: ignore[import-not-found]
    except ImportError:   # an interpreter without the built-in module
        from hashlib import sha1
    return binascii.b2a_base64(sha1(key + ACCEPT_GUID).digest(), newline=False)


class _Reader:
    """Bytes of one connection, read as the answer needs them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf, self.eof = sock, bytearray(), False

    def more(self) -> bool:
        if self.eof:
            return False
        data = self.sock.recv(1 << 16)
        self.eof = not data
        self.buf += data
        return bool(data)

    def head(self) -> tuple[int, str, dict[str, str]]:
        """The status, reason and headers (names in lower case) of the next answer."""
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > 1 << 16:
                raise BadAnswer("answer head too long")
            if not self.more():
                raise BadAnswer("peer unexpectedly closed connection")
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[:end + 4]
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise BadAnswer(f"bad status line {lines[0]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise BadAnswer(f"bad header line {line!r}")
            headers[name.strip().lower()] = value.strip()
        return int(code), reason, headers

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.more():
                raise BadAnswer("peer closed connection without sending complete message"
                                f" body (received {len(self.buf)} bytes, expected {n})")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if not self.more():
                raise BadAnswer("peer closed connection without sending complete message"
                                " body (incomplete chunked read)")
        data = bytes(self.buf[:end])
        del self.buf[:end + 2]
        return data


def _body(reader: _Reader, status: int, method: str, headers: dict[str, str], where: str
          ) -> Iterator[bytes]:
    """The answer's body in pieces as they come, to its end (as ``client._body``)."""
    from cumulo.client import DaemonUnreachable

    try:
        if method == "HEAD" or status in (204, 304):
            return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while size := int(reader.line().split(b";")[0], 16):
                yield reader.exactly(size)
                reader.line()
            return
        if "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                if not reader.buf and not reader.more():
                    reader.exactly(left)   # raises: the body ended short
                piece = bytes(reader.buf[:left])
                del reader.buf[:left]
                left -= len(piece)
                yield piece
            return
        while reader.buf or reader.more():   # to the connection's end
            piece = bytes(reader.buf)
            reader.buf.clear()
            yield piece
    except (OSError, BadAnswer, ValueError) as err:
        raise DaemonUnreachable(f"lost cumulod at {where}: {err or type(err).__name__}"
                                ) from err


class LiteWebSocket(MessageReader):
    """``cumulo.wsclient.WebSocket``'s behaviour (one reader and senders in other threads,
    ``close_code``, the close handshake, pongs) for a client's side of RFC 6455."""

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        super().__init__(sock)
        self._buf = bytearray(data)
        self._partial: list[bytes] = []
        self._partial_op = 0
        self._sent_close = self._got_close = False

    def send(self, message: bytes | str) -> None:
        if isinstance(message, bytes):
            self._send(BINARY, message)
        else:
            self._send(TEXT, message.encode())

    def _send(self, opcode: int, payload: bytes) -> None:
        with self._send_lock:
            if self._sent_close:
                raise StreamClosed(self.close_code)
            self._sent_close = opcode == CLOSE
            self._sock.sendall(frame(opcode, payload))

    def _receive(self, data: bytes | None) -> None:
        """Feed bytes read (None: the end; b"": none) and act on the frames they complete."""
        if self._got_close and self._sent_close:
            self.close_code = self.close_code or ABNORMAL
            self._sock.close()
            return
        self._buf += data or b""
        try:
            while (got := _frame(self._buf)) is not None:
                self._on_frame(*got)
        except BadAnswer:
            self.close_code = ABNORMAL
        if data is None and self.close_code is None:
            self.close_code = ABNORMAL
        if self.close_code is not None:
            self._sock.close()

    def _on_frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode in (0, TEXT, BINARY):
            if opcode:
                self._partial_op, self._partial = opcode, []
            self._partial.append(payload)
            if fin:
                whole = b"".join(self._partial)
                self._messages.append(whole.decode() if self._partial_op == TEXT else whole)
                self._partial = []
        elif opcode == PING:
            with contextlib.suppress(OSError, StreamClosed):
                self._send(PONG, payload)
        elif opcode == CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NO_STATUS
            self._got_close = True
            if not self._sent_close:   # complete the close handshake
                with contextlib.suppress(OSError, StreamClosed):
                    self._send(CLOSE, payload[:2])
            self.close_code = code
        elif opcode != PONG:
            raise BadAnswer(f"websocket opcode {opcode}")

    def close(self, code: int = NORMAL) -> None:
        """As ``WebSocket.close``: our close frame, a short wait for the peer's, the end."""
        with contextlib.suppress(OSError, StreamClosed):
            if not self._sent_close and not self._got_close:
                self._send(CLOSE, code.to_bytes(2, "big"))
        self._await_close()


def _frame(buf: bytearray) -> tuple[bool, int, bytes] | None:
    """Take one whole server frame off ``buf``: (fin, opcode, payload); None: not whole yet."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    if b0 & 0x70 or b1 & 0x80:   # extension bits, or a masked frame: not a server's
        raise BadAnswer("bad websocket frame")
    n, at = b1 & 0x7F, 2
    if n >= 126:
        at = 4 if n == 126 else 10
        if len(buf) < at:
            return None
        n = int.from_bytes(buf[2:at], "big")
    if len(buf) < at + n:
        return None
    payload = bytes(buf[at:at + n])
    del buf[:at + n]
    return bool(b0 & 0x80), b0 & 0x0F, payload
