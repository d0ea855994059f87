"""Sign-in for browsers, kept in one place so identities and roles can replace it.

Two things a browser cannot do like the CLI: it cannot put ``Authorization`` on a
websocket, so it offers the subprotocols ``cumulo`` and ``bearer.TOKEN`` instead
(the server answers ``cumulo``); and the local admin signs in through ``cumulo ui``,
which asks over the unix socket for a short-lived session token (kept in memory only,
gone when the daemon restarts) and opens ``/ui/#token=...``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any

from fastapi import WebSocket

SUBPROTOCOL = "cumulo"
BEARER = "bearer."
SESSION_TTL = 8 * 3600   # seconds: a working day


class Sessions:
    """Short-lived tokens of the web console (sha256 -> expiry), in memory only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}

    def issue(self, ttl: float = SESSION_TTL) -> tuple[str, float]:
        token = secrets.token_urlsafe(32)
        expires = time.time() + ttl
        with self._lock:
            now = time.time()
            self._expiry = {k: v for k, v in self._expiry.items() if v > now}
            self._expiry[_digest(token)] = expires
        return token, expires

    def valid(self, token: str) -> bool:
        with self._lock:
            return self._expiry.get(_digest(token), 0.0) > time.time()


SESSIONS = Sessions()   # one per daemon process


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ws_authorization(scope: Any) -> str | None:
    """The ``Authorization`` a websocket client gave: its header, or a browser's
    ``bearer.TOKEN`` subprotocol."""
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            return str(value.decode("latin-1"))
    for proto in scope.get("subprotocols", []):
        if isinstance(proto, str) and proto.startswith(BEARER):
            return "Bearer " + proto[len(BEARER):]
    return None


async def accept(ws: WebSocket) -> None:
    """Accept a websocket, answering a browser's ``cumulo`` subprotocol (a browser drops
    a connection whose server picked none of the subprotocols it offered)."""
    offered = ws.scope.get("subprotocols", [])
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
