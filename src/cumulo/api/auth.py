"""Who is calling, and may they: one ASGI middleware in front of every route.

Over the unix socket the caller is root (admin: the way back in when all else is
misconfigured). Over TCP it is the identity of its bearer token; no token, or a
wrong, expired or revoked one: 401. The route's row in the rights table (rights.py)
names the right it needs and where: a role lacking it gets 403 naming the right; a
project where the caller has no role at all gets 404, as if nothing were there.
Mutating requests go to the audit log. Websockets an identity holds are closed when
it is revoked (``Sessions``).

In a cluster a member forwards a request to the member that must answer it: it
authenticates as itself (an identity of kind ``member``) and names the caller it
speaks for (``X-Cumulo-On-Behalf-Of``); the receiving member authorizes that caller.
Only a member identity may set that header or ``X-Cumulo-Forwarded``: from anyone
else they are refused (403), so nobody borrows another identity's rights or keeps a
request from going where its instance runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cumulo.api import rights, web_auth
from cumulo.cluster.membership import FORWARDED, ON_BEHALF, ROOT_CALLER
from cumulo.domain import roles
from cumulo.domain.models import Operation
from cumulo.errors import AuthError, CumuloError, ForbiddenError, NotFoundError
from cumulo.services.host import Services
from cumulo.store.identities import MEMBER, REMOTE, Identity

log = logging.getLogger(__name__)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE", "WS"})
REVOKED = 4401   # websocket close code: the identity was revoked
RECHECK = 10.0   # seconds between checks that a websocket's identity is still valid


@dataclass(frozen=True)
class Caller:
    name: str
    id: int | None = None
    server: frozenset[str] = frozenset()      # rights held in every project
    roles: Mapping[str, str] = field(default_factory=dict)   # project -> role
    kind: str = ""                            # the identity's kind ("": root)

    @staticmethod
    def of(ident: Identity) -> Caller:
        server = roles.SERVER_RIGHTS[roles.ADMIN] if ident.admin else \
            roles.SERVER_RIGHTS[ident.kind] if ident.kind in (REMOTE, MEMBER) else frozenset()
        return Caller(ident.name, ident.id, server, dict(ident.roles), ident.kind)

    @property
    def behalf(self) -> str:
        """How a member names this caller to another member (root has no identity)."""
        return ROOT_CALLER if self.id is None else self.name

    @property
    def admin(self) -> bool:
        return roles.ADMIN in self.server

    def may(self, right: str, project: str | None) -> bool:
        if right in self.server:
            return True
        role = self.roles.get(project) if project is not None else None
        return role is not None and right in roles.ROLE_RIGHTS[role]

    def sees(self, project: str | None) -> bool:
        """Whether anything of ``project`` may show (None: no project; admins only)."""
        return self.admin or (project is not None and project in self.roles)


ROOT = Caller("root (unix socket)", None, roles.SERVER_RIGHTS[roles.ADMIN])


def caller_of(conn: HTTPConnection) -> Caller:
    """The caller the middleware found (root for in-process tests without it)."""
    return caller_in(conn.scope)


def caller_in(scope: Scope) -> Caller:
    found = scope.get("cumulo.caller")
    return found if isinstance(found, Caller) else ROOT


def check(caller: Caller, rule: rights.Rule, project: str | None) -> None:
    """Raise NotFoundError (no role in ``project``) or ForbiddenError (a role lacking
    the right) unless ``caller`` may do what ``rule`` says in ``project``."""
    if caller.may(rule.right, project) or rule.also and caller.may(rule.also, project):
        return
    if rule.scope == rights.S:
        if rule.right == roles.READ and (caller.roles or caller.server):
            return
        raise ForbiddenError(f"identity {caller.name!r} may not do this: it needs the"
                             f" right {rule.right!r} server-wide", rule.right)
    if project is None:
        raise ForbiddenError(f"identity {caller.name!r} may not do this across every"
                             " project: it needs the right 'admin' (or ask for one"
                             " project: project=NAME)", roles.ADMIN)
    if not caller.sees(project):
        raise NotFoundError("project", project)
    raise ForbiddenError(f"identity {caller.name!r} ({caller.roles[project]} in project"
                         f" {project!r}) may not do this: it needs the right"
                         f" {rule.right!r}", rule.right)


def over_tcp(scope: Scope) -> bool:
    """uvicorn gives no client address for a unix socket connection (root's own)."""
    return scope.get("client") is not None


class Sessions:
    """The websockets each identity holds open, to close them when it is revoked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    @contextlib.contextmanager
    def holding(self, identity_id: int, revoked: asyncio.Event) -> Any:
        item = (asyncio.get_running_loop(), revoked)
        with self._lock:
            self._open.setdefault(identity_id, set()).add(item)
        try:
            yield
        finally:
            with self._lock:
                self._open.get(identity_id, set()).discard(item)

    def revoke(self, identity_id: int) -> int:
        """Close every websocket of ``identity_id`` (from any thread); how many."""
        with self._lock:
            held = list(self._open.pop(identity_id, ()))
        for loop, event in held:
            loop.call_soon_threadsafe(event.set)
        return len(held)


class Authorize:
    """ASGI middleware: identify, authorize, audit (see the module docstring). A plain
    ASGI class: Starlette's BaseHTTPMiddleware costs an extra task per request."""

    def __init__(self, app: ASGIApp, svc: Services, sessions: Sessions, tcp: bool) -> None:
        self.app, self.svc, self.sessions, self.tcp = app, svc, sessions, tcp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        ws = scope["type"] == "websocket"
        method = "WS" if ws else ("GET" if scope["method"] == "HEAD" else scope["method"])
        matched = rights.match(method, scope["path"])
        found = None if matched is None else (matched[0], matched[1])
        query = parse_qs(scope.get("query_string", b"").decode(errors="replace"))
        project: str | None = query.get("project", [None])[-1]
        if matched is not None and matched[1].path_project:
            project = unquote(matched[2][matched[1].path_project])
        elif found is not None and found[1].scope == rights.P and project is None:
            project = "default"
        if found is not None and found[1].scope == rights.PUBLIC:
            await self.app(scope, receive, send)   # the web console's files
            return
        remote = self.tcp and over_tcp(scope)
        try:
            caller = ROOT
            headers = Headers(scope=scope)
            if remote:   # a browser's websocket: the token in a subprotocol
                caller = Caller.of(self.svc.identities.authenticate(
                    web_auth.authorization(scope)))
            if FORWARDED in headers or ON_BEHALF in headers:
                caller = self._spoken_for(caller, headers)
            if found is None:
                if remote:   # fail closed: a route nobody wrote a right for
                    raise ForbiddenError(f"{method} {scope['path']}: not in the rights"
                                         " table", roles.ADMIN)
            elif found[1].scope != "object":
                check(caller, found[1], project)
        except CumuloError as err:
            status = 401 if isinstance(err, AuthError) else \
                404 if isinstance(err, NotFoundError) else 403
            await self._refuse(scope, receive, send, status, err)
            if found is not None and _audited(method, found):
                self._audit(caller if not isinstance(err, AuthError) else None,
                            project, method, found[0], scope["path"], status)
            return
        scope["cumulo.caller"] = caller
        if FORWARDED in headers:   # the forwarding member audits it
            found = None
        template = found[0] if found else scope["path"]
        if ws:   # audited as the session starts (the record is queued: nobody waits)
            if _audited(method, found):
                self._audit(caller, project, method, template, scope["path"], 101)
            await self._websocket(caller, scope, receive, send)
            return
        if not _audited(method, found):
            await self.app(scope, receive, send)
            return
        answered = [500]

        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            self._audit(caller, project, method, template, scope["path"], answered[0])

    def _spoken_for(self, member: Caller, headers: Headers) -> Caller:
        """The caller a member forwards for; only members may say whom they speak for."""
        if member.kind != MEMBER:
            raise ForbiddenError(f"identity {member.name!r} may not set {FORWARDED} or"
                                 f" {ON_BEHALF}: only cluster members forward requests",
                                 roles.ADMIN)
        name = headers.get(ON_BEHALF)
        if name is None:
            return member   # the member itself (moving an instance, following its operation)
        if name == ROOT_CALLER:
            return Caller(f"root (unix socket) via {member.name}", None, ROOT.server)
        return Caller.of(self.svc.identities.spoken_for(name))

    async def _websocket(self, caller: Caller, scope: Scope, receive: Receive,
                         send: Send) -> None:
        if caller.id is None:
            await self.app(scope, receive, send)
            return
        revoked = asyncio.Event()
        with self.sessions.holding(caller.id, revoked):
            task = asyncio.ensure_future(self.app(scope, receive, send))
            waiter = asyncio.ensure_future(revoked.wait())
            while not task.done() and not revoked.is_set():
                await asyncio.wait({task, waiter}, timeout=RECHECK,
                                   return_when=asyncio.FIRST_COMPLETED)
                # revoked through another daemon on the same store, or expired
                if not task.done() and not revoked.is_set() and not await run_in_threadpool(
                        self.svc.identities.valid, caller.id):
                    revoked.set()
            waiter.cancel()
            if task.done():
                task.result()
                return
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": REVOKED,
                            "reason": "the identity was revoked"})

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int,
                      err: CumuloError) -> None:
        body = json.dumps({"error": str(err), "type": type(err).__name__}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if "websocket.http.response" in scope.get("extensions", {}):
            await receive()   # websocket.connect
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send({"type": "websocket.close", "code": 4000 + status, "reason": str(err)})

    def _audit(self, caller: Caller | None, project: str | None, method: str,
               template: str, path: str, result: int) -> None:
        """Queued for the audit log's writer thread (a store error goes to its log)."""
        who = caller.name if caller is not None else "(unknown token)"
        action = f"{method} {rights.plain(template).removeprefix('/1.0')}"
        self.svc.identities.audit.record_later(who, project, action,
                                               path.removeprefix("/1.0/"), result)


def _audited(method: str, found: tuple[str, rights.Rule] | None) -> bool:
    """Mutating requests, and websockets that act (exec, console), go to the audit log."""
    return found is not None and method in MUTATING and (
        method != "WS" or found[1].right != roles.READ)


def require_admin(conn: HTTPConnection, what: str) -> None:
    """403 unless the caller is an admin: for options that reach past the project (a
    path on the host's filesystem)."""
    caller = caller_of(conn)
    if not caller.admin:
        raise ForbiddenError(f"identity {caller.name!r} may not use {what}: it needs the"
                             " right 'admin' server-wide", roles.ADMIN)


def check_operation(caller: Caller, op: Operation, right: str) -> None:
    """404 for an operation of a project the caller has no role in (as if it did not
    exist), 403 for a role lacking ``right``."""
    check(caller, rights.Rule(right), op.project)


def install(app: Any, svc: Services, sessions: Sessions, tcp: bool) -> None:
    app.add_middleware(Authorize, svc=svc, sessions=sessions, tcp=tcp)
