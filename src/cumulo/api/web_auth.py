"""Sign-in for browsers, on the identities every other caller has (api/auth.py).

Two things a browser cannot do like the CLI: it cannot put ``Authorization`` on a
websocket, so it offers the subprotocols ``cumulo`` and ``bearer.TOKEN`` instead (the
middleware reads the token from there, the server answers ``cumulo``); and the local
admin signs in through ``cumulo ui``, which asks over the unix socket for a session:
a short-lived admin identity named ``ui-...`` (in the store, so the audit log names it
and ``cumulo identity revoke`` ends it, websockets included), opened as
``/ui/#token=...``.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import WebSocket

from cumulo.domain import roles
from cumulo.services.identities import IdentityService
from cumulo.store.identities import CLIENT, Identity
from cumulo.store.tables import utcnow

SUBPROTOCOL = "cumulo"
BEARER = "bearer."
SESSION_PREFIX = "ui-"
SESSION_TTL = "8h"   # a working day


def new_session(ids: IdentityService) -> tuple[Identity, str]:
    """A ``cumulo ui`` session: an admin identity that expires; expired ones of earlier
    sessions are deleted first (nothing piles up in the store)."""
    now = utcnow()
    for old in ids.store.list(CLIENT):
        if old.name.startswith(SESSION_PREFIX) and old.expired(now):
            ids.store.revoke(old.name, CLIENT)
    name = f"{SESSION_PREFIX}{now:%m%d%H%M}-{secrets.token_hex(2)}"   # ui-12042057-1a2b
    return ids.create(name, roles.ADMIN, None, SESSION_TTL)


def authorization(scope: Any) -> str | None:
    """The ``Authorization`` of a request: its header or, on a websocket only, a
    browser's ``bearer.TOKEN`` subprotocol."""
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            return str(value.decode("latin-1"))
    if scope.get("type") == "websocket":
        for proto in scope.get("subprotocols", []):
            if isinstance(proto, str) and proto.startswith(BEARER):
                return "Bearer " + proto[len(BEARER):]
    return None


async def accept(ws: WebSocket) -> None:
    """Accept a websocket, answering a browser's ``cumulo`` subprotocol (a browser drops
    a connection whose server picked none of the subprotocols it offered)."""
    offered = ws.scope.get("subprotocols", [])
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
