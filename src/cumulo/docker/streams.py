"""Docker's raw streams: 8-byte multiplexed frames without a TTY, bare bytes with one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

STDIN, STDOUT, STDERR = 0, 1, 2
STREAMS = {b"stdout": STDOUT, b"stderr": STDERR}
READ = 32768


def frame(stream: int, data: bytes) -> bytes:
    """One frame: stream byte, three zero bytes, big-endian length, payload."""
    return struct.pack(">BxxxI", stream, len(data)) + data


class Output:
    """Where a container's or an exec's output goes on a hijacked connection."""

    def __init__(self, writer: asyncio.StreamWriter, tty: bool) -> None:
        self.writer, self.tty = writer, tty
        self.closed = False

    async def send(self, stream: int, data: bytes) -> None:
        if not data or self.closed:
            return
        try:
            self.writer.write(data if self.tty else frame(stream, data))
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            self.closed = True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            self.writer.close()
            await self.writer.wait_closed()


Hijack = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def hijacker(request: Request) -> Hijack:
    fn: Any = request.scope.get("extensions", {}).get("cumulo.hijack")
    if fn is None:
        raise RuntimeError("this server cannot hand connections over (no cumulo.hijack)")
    result: Hijack = fn
    return result


async def pump_fd_out(fd: int, out: Output, stream: int) -> None:
    """Copy a session's output fd to ``out`` until end of file (EIO on a closed pty)."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    os.set_blocking(fd, False)
    loop.add_reader(fd, ready.set)
    try:
        while True:
            await ready.wait()
            ready.clear()
            try:
                data = os.read(fd, READ)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:
                return
            await out.send(stream, data)
    finally:
        loop.remove_reader(fd)
