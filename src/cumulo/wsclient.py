"""A blocking websocket client on a socket of our own, spoken with wsproto (sans-I/O).

The CLI's streams (``exec``, ``console``, ``monitor``) use it; ``cumulo.wsopen`` opens
it (the upgrade, with h11, which the client's requests use too). wsproto and h11 import
in about 0.4x of the time ``import typer`` takes, the ``websockets`` package's sync
client in about 0.7x (half of it ``importlib.metadata``, which its version module
imports), on every ``cumulo exec``; wsopen has wsproto imported while the daemon
starts the command.

One thread may read (``recv``, iterating) while others send (``send``, ``close``):
reading and sending hold a lock each, so a reader never waits for a blocked send (a
command that reads no stdin while its output goes on), nor the other way round. A
signal handler must not send: it may interrupt a send of its own thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import cast

from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from cumulo.wsopen import Rejected, StreamClosed, handshake

__all__ = ["Rejected", "StreamClosed", "WebSocket", "handshake"]

NORMAL, GOING_AWAY, ABNORMAL = 1000, 1001, 1006
CLOSE_WAIT = 2.0   # seconds ``close`` waits for the peer's close frame


class WebSocket:
    """An open websocket: ``send``, ``recv`` or iterate, ``close``."""

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        self._sock, self._conn = sock, conn
        self._send_lock = threading.Lock()
        self._messages: deque[bytes | str] = deque()
        self._partial: list[bytes | bytearray | str] = []   # a message's frames so far
        self._read_lock = threading.Lock()   # one reader at a time
        self.close_code: int | None = None     # set when the peer's close (or EOF) is seen

    def send(self, message: bytes | str) -> None:
        """One message: bytes as a binary frame, str as a text frame."""
        event = BytesMessage(data=message) if isinstance(message, bytes) else \
            TextMessage(data=message)
        self._send(event)

    def _send(self, event: Event) -> None:
        with self._send_lock:
            try:
                data = self._conn.send(event)
            except LocalProtocolError:
                raise StreamClosed(self.close_code) from None
            self._sock.sendall(data)

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

    def _receive(self, data: bytes | None) -> None:
        """Feed bytes read (None: end of stream; b"": none, just take the events pending)
        and act on the events they make."""
        if self._conn.state is ConnectionState.CLOSED:
            self.close_code = self.close_code or ABNORMAL
            self._sock.close()
            return
        try:
            self._conn.receive_data(data)
            events = list(self._conn.events())
        except RemoteProtocolError:
            events = [CloseConnection(code=ABNORMAL)]
        for event in events:
            if isinstance(event, TextMessage | BytesMessage):
                self._partial.append(event.data)
                if event.message_finished:
                    self._messages.append(_joined(self._partial))
                    self._partial = []
            elif isinstance(event, Ping):
                with contextlib.suppress(OSError, StreamClosed):
                    self._send(event.response())
            elif isinstance(event, CloseConnection):
                if self._conn.state is ConnectionState.REMOTE_CLOSING:
                    with contextlib.suppress(OSError, StreamClosed):
                        self._send(event.response())       # complete the close handshake
                self.close_code = event.code
        if data is None and self.close_code is None:
            self.close_code = ABNORMAL
        if self.close_code is not None:   # closed both ways: the socket has done its part
            self._sock.close()

    def close(self, code: int = NORMAL) -> None:
        """Send our close frame, wait a little for the peer's, close the socket. While
        another thread reads, only the close frame is sent: that reader sees the peer's
        answer and ends, and its own ``close`` then closes the socket."""
        with contextlib.suppress(OSError, StreamClosed):
            if self._conn.state is ConnectionState.OPEN:
                self._send(CloseConnection(code=code))
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

    def close_socket(self) -> None:
        """Drop the connection with no close handshake (as a killed client would)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def _joined(parts: list[bytes | bytearray | str]) -> bytes | str:
    if parts and isinstance(parts[0], str):
        return "".join(cast(list[str], parts))
    return b"".join(cast(list[bytes], parts))
