"""Any member answers for the cluster: a request about an instance on another member is
forwarded to it (HTTP relayed as it streams; websockets pumped both ways) over HTTPS
to the member's --listen address, its certificate pinned (the fingerprint it stored at
join). This member authenticates with its own token and names the caller it speaks for
(``X-Cumulo-On-Behalf-Of``): the other member authorizes that caller (api/auth.py). A
launch goes where the placement engine puts it (``--target`` among its filters).
Forwarded requests carry ``X-Cumulo-Forwarded`` and are answered where they arrive (no
loops); only member identities may send either header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cumulo.api.auth import caller_in
from cumulo.client import Client
from cumulo.cluster.choose import Place
from cumulo.cluster.membership import FORWARDED, ON_BEHALF, Membership, behalf
from cumulo.errors import CumuloError
from cumulo.store.hosts import Remote

_INSTANCE = re.compile(r"^/1\.0/instances/([^/]+)(/.*)?$")
_OPERATION = re.compile(r"^/1\.0/operations/([^/]+)$")
_DROP = {"host", "authorization", "content-length", "connection", "transfer-encoding",
         FORWARDED, ON_BEHALF}
TIMEOUT = 600.0
_KEPT_OPS = 1000   # operations remembered as another member's


class Forward:
    """ASGI middleware (inside the token check): forward what another member must answer."""

    def __init__(self, app: ASGIApp, cluster: Membership, place: Place) -> None:
        self.app, self.cluster = app, cluster
        # (project, request body, --target or None) -> member: the placement at launch
        # (it records an allocation: released again when the launch is refused)
        self.place = place
        self.ops: dict[str, str] = {}   # operation id -> member, for ones we forwarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.cluster.identity is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        if FORWARDED in headers:
            await self.app(scope, receive, send)
            return
        body: bytes | None = None
        if scope["type"] == "http" and scope["path"] == "/1.0/instances" \
                and scope.get("method") == "POST":   # where it goes depends on the request
            body = await _read(receive)
            receive = _replay(body)
        try:
            member = await run_in_threadpool(self._member_for, scope, body)
            remote = None if member is None else await run_in_threadpool(
                self.cluster.remote_for, member)
        except CumuloError as err:
            from cumulo.api.errors import status_for

            await _refuse(scope, receive, send, status_for(err), str(err), type(err).__name__)
            return
        if body is not None:   # a launch placed: its allocation goes if it is refused
            send = self._releasing(scope, body, send)
        if remote is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send, remote, headers, body)
        else:
            await self._websocket(scope, receive, send, remote)

    def _releasing(self, scope: Scope, body: bytes, send: Send) -> Send:
        """``send``, releasing the launch's allocation if the answer is an error (one
        that fails later, in its operation, is released by the instance service)."""
        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    name = json.loads(body).get("name")
                    query = parse_qs(scope.get("query_string", b"").decode())
                    await run_in_threadpool(self.cluster.released,
                                            (query.get("project") or ["default"])[0], name)
            await send(message)
        return sent

    def _member_for(self, scope: Scope, body: bytes | None) -> str | None:
        """The member that must answer, or None for this one."""
        path, method = scope["path"], scope.get("method", "GET")
        query = parse_qs(scope.get("query_string", b"").decode())
        me = self.cluster.member
        if body is not None:   # a new instance: placed by ``self.place``
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                return None   # the route says what is wrong with it
            target = self.place((query.get("project") or ["default"])[0],
                                request if isinstance(request, dict) else {},
                                (query.get("target") or [None])[0])
            return None if target == me else target
        if m := _OPERATION.match(path):
            if (member := self.ops.get(m.group(1))) is None:
                member = self.cluster.store.operation_member(m.group(1))
            return None if member == me else member
        if m := _INSTANCE.match(path):
            project = (query.get("project") or ["default"])[0]
            loc = self.cluster.store.location(project, m.group(1))
            if loc is None or loc == me:
                return None
            if method == "GET" and not m.group(2) and \
                    loc in self.cluster.offline_members():
                return None   # its row, shown as unreachable
            return loc
        return None

    def _remember(self, member: str, body: bytes) -> None:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            op = json.loads(body)
            if isinstance(op, dict) and isinstance(op.get("id"), str) and "status" in op:
                if len(self.ops) >= _KEPT_OPS:
                    self.ops.pop(next(iter(self.ops)))
                self.ops[op["id"]] = member

    async def _http(self, scope: Scope, receive: Receive, send: Send, remote: Remote,
                    headers: dict[str, str], body: bytes | None) -> None:
        if body is None:
            body = await _read(receive)
        path = scope["path"].removeprefix("/1.0")
        if qs := scope.get("query_string", b"").decode():
            path += "?" + qs
        fwd = {k: v for k, v in headers.items() if k not in _DROP}
        fwd.update(behalf(self.cluster.member, caller_in(scope).behalf))
        client = Client(url=remote.url, token=remote.token, timeout=TIMEOUT,
                        fingerprint=remote.fingerprint)
        cm = client._exchange(scope["method"], path, None, None, body or None, fwd, None)
        try:
            head, pieces = await run_in_threadpool(cm.__enter__)
        except CumuloError as err:
            await _refuse(scope, receive, send, 503,
                          f"member {remote.name} ({remote.url}) did not answer: {err}",
                          "ConflictError")
            return
        try:
            out = [(k.encode(), v.encode()) for k, v in head.headers.items()
                   if k not in ("connection", "transfer-encoding")]
            await send({"type": "http.response.start", "status": head.status_code,
                        "headers": out})
            kept = b""   # an operation's answer: its id is remembered as the member's
            while (chunk := await run_in_threadpool(_next, pieces)) is not None:
                if head.status_code == 202 and len(kept) < 65536:
                    kept += chunk
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if kept:
                self._remember(remote.name, kept)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await run_in_threadpool(cm.__exit__, None, None, None)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send,
                         remote: Remote) -> None:
        from cumulo.wsclient import StreamClosed

        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        path = scope["path"].removeprefix("/1.0")
        if qs := scope.get("query_string", b"").decode():
            path += "?" + qs
        client = Client(url=remote.url, token=remote.token, timeout=TIMEOUT,
                        fingerprint=remote.fingerprint)
        client.headers.update(behalf(self.cluster.member, caller_in(scope).behalf))
        try:
            up = await run_in_threadpool(client._websocket, path, f"{remote.name}'s stream")
        except CumuloError as err:
            await send({"type": "websocket.close", "code": 1011, "reason": str(err)[:120]})
            return
        up._sock.settimeout(None)   # an exec or a console may stay quiet for long

        async def downstream() -> None:   # member -> our client
            while True:
                try:
                    data = await run_in_threadpool(up.recv)
                except StreamClosed as closed:
                    with contextlib.suppress(Exception):
                        await send({"type": "websocket.close", "code": closed.code or 1000})
                    return
                key = "text" if isinstance(data, str) else "bytes"
                await send({"type": "websocket.send", key: data})

        async def upstream() -> None:     # our client -> member
            while True:
                m: Message = await receive()
                if m["type"] == "websocket.disconnect":
                    await run_in_threadpool(up.close)
                    return
                data: Any = m.get("text") if m.get("text") is not None else m.get("bytes")
                if data is not None:
                    with contextlib.suppress(StreamClosed, OSError):
                        await run_in_threadpool(up.send, data)

        await send({"type": "websocket.accept"})
        tasks = [asyncio.ensure_future(downstream()), asyncio.ensure_future(upstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            up.close_socket()


async def _read(receive: Receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += bytes(msg.get("body", b""))
        if not msg.get("more_body"):
            return body


def _replay(body: bytes) -> Receive:
    """A ``receive`` that gives ``body`` again (it was read to place the request)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}
    return receive


def _next(pieces: Iterator[bytes]) -> bytes | None:
    return next(pieces, None)


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, error: str,
                  kind: str) -> None:
    """The one-line error answer (a websocket is closed with the error as reason)."""
    if scope["type"] == "websocket":   # as the streams say errors (api/exec_ws.py)
        await receive()
        if status == 401:
            await send({"type": "websocket.close", "code": 4401, "reason": error[:120]})
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send",
                    "text": json.dumps({"error": error, "type": kind, "status": status})})
        with contextlib.suppress(TimeoutError):   # an exec client sends its request first
            await asyncio.wait_for(receive(), 5)
        await send({"type": "websocket.close", "code": 1000})
        return
    from fastapi.responses import JSONResponse

    await JSONResponse({"error": error, "type": kind}, status_code=status)(
        scope, receive, send)

