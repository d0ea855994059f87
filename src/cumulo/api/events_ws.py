"""``/1.0/events``: the daemon's events over a websocket, one JSON text frame each.

Query: ``type=lifecycle,operation,logging`` (default: all) and ``project=NAME``
(default: every project; daemon log records belong to none and go only to a stream
of every project: they may name any project's objects).
The server only sends; the stream ends when the client leaves, when the daemon
stops, or when the client falls too far behind (then a last frame
``{"error": ..., "type": "ConflictError", "status": 409}`` says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from fastapi import WebSocket, WebSocketDisconnect

from cumulo.api import web_auth
from cumulo.api.exec_ws import _send_error
from cumulo.errors import ConflictError, InvalidInputError, NotFoundError
from cumulo.services.events import TYPES
from cumulo.services.host import Services


def parse_types(value: str | None) -> list[str]:
    types = [t.strip() for t in (value or "").split(",") if t.strip()] or list(TYPES)
    unknown = sorted(set(types) - set(TYPES))
    if unknown:
        raise InvalidInputError(f"unknown event type {', '.join(unknown)}: use"
                                f" {', '.join(TYPES)}")
    return types


async def serve(ws: WebSocket, svc: Services, types: str | None, project: str | None
                ) -> None:
    await web_auth.accept(ws)
    try:
        wanted = parse_types(types)
        if project is not None:
            svc.projects.check(project)
    except (InvalidInputError, NotFoundError) as err:
        await _send_error(ws, err)
        return
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def notify() -> None:   # called from the publishing thread
        loop.call_soon_threadsafe(wake.set)

    sub = svc.events.subscribe(wanted, project, notify=notify)
    # the client only ever closes; its receive ends the stream as soon as it goes, and
    # when the daemon stops (uvicorn hands every websocket a disconnect then)
    gone = asyncio.create_task(ws.receive())
    try:
        while True:
            wake.clear()
            for event in sub.drain():
                await ws.send_text(json.dumps(event))
            if sub.dropped:
                await _send_error(ws, ConflictError(
                    "this event stream fell too far behind and was dropped: reconnect"))
                return
            if sub.closed or gone.done():
                return
            waiter = asyncio.create_task(wake.wait())
            await asyncio.wait([waiter, gone], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        sub.close()
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await gone
        with contextlib.suppress(Exception):
            await ws.close()
