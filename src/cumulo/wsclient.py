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

from cumulo.wsopen import MessageReader, Rejected, StreamClosed, handshake

__all__ = ["Rejected", "StreamClosed", "WebSocket", "handshake"]

NORMAL, GOING_AWAY, ABNORMAL = 1000, 1001, 1006


class WebSocket(MessageReader):
    """An open websocket: ``send``, ``recv`` or iterate, ``close``."""

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        super().__init__(sock)
        self._conn = conn
        self._partial: list[bytes | bytearray | str] = []   # a message's frames so far

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
        self._await_close()

    def close_socket(self) -> None:
        """Drop the connection with no close handshake (as a killed client would)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def _joined(parts: list[bytes | bytearray | str]) -> bytes | str:
    if parts and isinstance(parts[0], str):
        return "".join(cast(list[str], parts))
    return b"".join(cast(list[bytes], parts))
