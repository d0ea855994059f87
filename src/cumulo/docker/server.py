"""A small HTTP/1.1 server (h11 on asyncio) hosting the Docker API's ASGI app.

uvicorn cannot hand a connection over to the app, and Docker's attach and exec
start need exactly that: the client asks ``Upgrade: tcp``, the server answers
``101 UPGRADED`` and both then speak raw bytes on the socket. This server gives
every request the extension ``cumulo.hijack``: an awaitable that sends the 101
and returns the connection's (reader, writer). Response headers are sent as soon
as the app starts its response (``docker wait`` relies on that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import h11

log = logging.getLogger(__name__)

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                    Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]
READ = 65536
MIGHT_SWITCH = h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]  # not in __all__
UPGRADE_HEADERS = [(b"Content-Type", b"application/vnd.docker.raw-stream"),
                   (b"Connection", b"Upgrade"), (b"Upgrade", b"tcp")]


class Hijacked(Exception):
    """The app took the connection over: nothing more to send on it as HTTP."""


class _Conn:
    """One client connection: requests one after the other, until close or hijack."""

    def __init__(self, app: ASGIApp, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.app, self.reader, self.writer = app, reader, writer
        self.h11 = h11.Connection(h11.SERVER)
        self.hijacked = False

    async def _event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.reader.read(READ)
            self.h11.receive_data(data)

    async def _send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def serve(self) -> None:
        try:
            while not self.hijacked:
                event = await self._event()
                if isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.Request):
                    return
                await self._request(event)
                if self.hijacked or self.h11.our_state is h11.MUST_CLOSE:
                    return
                if self.h11.their_state is h11.DONE and self.h11.our_state is h11.DONE:
                    self.h11.start_next_cycle()
                else:
                    return
        except (h11.RemoteProtocolError, ConnectionError) as err:
            log.debug("docker API connection: %s", err)
        finally:
            if not self.hijacked:
                self.writer.close()
                with contextlib.suppress(Exception):
                    await self.writer.wait_closed()

    async def _request(self, req: h11.Request) -> None:
        target = req.target.decode("latin-1")
        path, _, query = target.partition("?")
        body_done = False
        started = False
        ended = False
        disconnected = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal body_done
            if not body_done:
                event = await self._event()
                if isinstance(event, h11.Data):
                    return {"type": "http.request", "body": bytes(event.data),
                            "more_body": True}
                body_done = True
                if isinstance(event, h11.EndOfMessage):
                    return {"type": "http.request", "body": b"", "more_body": False}
                disconnected.set()
                return {"type": "http.disconnect"}
            if self.hijacked:
                await asyncio.Event().wait()   # the app owns the socket now
            # a streamed answer: wait for the client to go away
            while not disconnected.is_set():
                try:
                    data = await self.reader.read(READ)
                except ConnectionError:
                    data = b""
                if not data:
                    disconnected.set()
                    break
                self.h11.receive_data(data)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal started, ended
            if self.hijacked:   # the app's formal answer after a hijack: nothing to send
                return
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", [])]
                try:
                    await self._send(h11.Response(status_code=message["status"],
                                                  headers=headers,
                                                  reason=_reason(message["status"])))
                except ConnectionError:   # the client left before the answer
                    disconnected.set()
            elif message["type"] == "http.response.body":
                if ended or disconnected.is_set():
                    return
                body = message.get("body", b"")
                if body:
                    try:
                        await self._send(h11.Data(data=body))
                    except ConnectionError:
                        disconnected.set()
                        return
                if not message.get("more_body", False):
                    ended = True
                    try:
                        await self._send(h11.EndOfMessage())
                    except ConnectionError:
                        disconnected.set()

        async def hijack() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            nonlocal started, ended
            if not body_done:   # the request's (empty) body first
                while not isinstance(await self._event(), h11.EndOfMessage):
                    pass
            if self.h11.their_state is MIGHT_SWITCH:
                await self._send(h11.InformationalResponse(
                    status_code=101, headers=UPGRADE_HEADERS, reason=b"UPGRADED"))
                trailing, _closed = self.h11.trailing_data
            else:   # no Upgrade asked: Docker answers 200 and streams raw all the same
                await self._send(h11.Response(status_code=200, headers=[
                    UPGRADE_HEADERS[0], (b"Connection", b"close")]))
                self.writer.write(b"")
                # h11 would frame the body: write on the socket directly from here on
                trailing = b""
            started = ended = True
            self.hijacked = True
            reader = asyncio.StreamReader()
            if trailing:
                reader.feed_data(bytes(trailing))
            return _Chained(reader, self.reader), self.writer

        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": req.method.decode(), "scheme": "http",
            "path": unquote(path), "raw_path": path.encode("latin-1"),
            "query_string": query.encode("latin-1"), "root_path": "",
            "headers": [(k.lower(), v) for k, v in req.headers],
            "client": None, "server": None,
            "extensions": {"cumulo.hijack": hijack},
        }
        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("docker API: unhandled error")
            if started:   # half an answer: the connection cannot carry another
                self.hijacked = True
                self.writer.close()
                return
            if not started:
                body = b'{"message":"internal error"}'
                await self._send(h11.Response(status_code=500, headers=[
                    (b"Content-Type", b"application/json"),
                    (b"Content-Length", str(len(body)).encode())]))
                await self._send(h11.Data(data=body))
                await self._send(h11.EndOfMessage())
                return
            raise
        if self.hijacked:
            return
        if not ended and started and not disconnected.is_set():
            await self._send(h11.EndOfMessage())
        if self.h11.their_state is not h11.DONE and not disconnected.is_set():
            # drain a body the app did not read
            while self.h11.their_state is h11.SEND_BODY:
                event = await self._event()
                if isinstance(event, h11.ConnectionClosed):
                    break


def _reason(status: int) -> bytes:
    with contextlib.suppress(ValueError):
        return HTTPStatus(status).phrase.encode()
    return b""


class _Chained(asyncio.StreamReader):
    """Bytes that came with the upgrade, then the connection's own reader."""

    def __init__(self, first: asyncio.StreamReader, rest: asyncio.StreamReader) -> None:
        super().__init__()
        self._first, self._rest = first, rest
        self._first.feed_eof()

    async def read(self, n: int = -1) -> bytes:
        data = await self._first.read(n)
        return data or await self._rest.read(n)


async def serve(app: ASGIApp, sock: socket.socket, stopping: asyncio.Event) -> None:
    """Serve ``app`` on the listening unix socket ``sock`` until ``stopping`` is set."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _Conn(app, reader, writer).serve()

    server = await asyncio.start_unix_server(handle, sock=sock, limit=READ)
    try:
        await stopping.wait()
    finally:   # open streams (attach, events) end with the loop
        server.close()
