"""The Python client of the public REST API; the CLI, tests and benchmarks use only this.

The daemon is found through ``CUMULO_SOCKET`` (a unix socket path) or
``CUMULO_URL`` (https://host:port, with ``CUMULO_TOKEN`` and ``CUMULO_FINGERPRINT``:
the sha256 of the daemon's certificate, pinned), else the default socket.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from itertools import chain

from cumulo import errors as e
from cumulo import jsonlite

TYPE_CHECKING = False   # as typing's, without importing typing: ~4 ms of the CLI fast path
if TYPE_CHECKING:  # imported where used: the CLI's quick commands pay for neither
    import socket
    from collections.abc import Callable, Iterator
    from typing import Any

    from cumulo.wsclient import WebSocket

DEFAULT_SOCKET = "/run/cumulo/cumulo.sock"
API = "/1.0"
ONE_WRITE = 1 << 16   # bytes of a body sent in its head's write
# seconds a connection waits for the client's next request (the daemon closes one that
# was idle for 5 s): a program's requests in a row go on one connection
KEEP_IDLE = 1.0
_DEFAULT = object()   # "the client's timeout", as opposed to None: no timeout

_BY_NAME: dict[str, type[e.CumuloError]] = {
    cls.__name__: cls for cls in (
        e.InvalidInputError, e.LimitExceedsHostError, e.TooLargeError, e.NotFoundError,
        e.ConflictError,
        e.AuthError, e.ForbiddenError, e.QuotaExceededError, e.RestrictedError,
        e.InvalidStateError, e.UnsupportedError, e.DriverError, e.RuntimeToolError,
        e.StoreError)
}


class _Kept:
    """A connection between requests: the socket, its Host header, its h11 state."""

    __slots__ = ("sock", "host", "conn", "since", "pid")

    def __init__(self, sock: socket.socket, host: str, conn: Any) -> None:
        self.sock, self.host, self.conn = sock, host, conn
        self.since, self.pid = time.monotonic(), os.getpid()


class APIError(e.CumuloError):
    """An error answered by the daemon, with its HTTP status and error type."""

    def __init__(self, message: str, status: int, kind: str) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


class DaemonUnreachable(e.CumuloError):
    pass


class Response:
    """A whole answer of the daemon (what ``Client.request`` returns)."""

    def __init__(self, status_code: int, reason_phrase: str, headers: dict[str, str],
                 content: bytes) -> None:
        self.status_code, self.reason_phrase = status_code, reason_phrase
        self.headers = headers     # names in lower case
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return jsonlite.loads(self.content)


def normal_fingerprint(text: str) -> str:
    """``sha256:AB:CD...`` or ``abcd...``: 64 lower-case hex digits."""
    fp = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(fp) != 64 or any(ch not in "0123456789abcdef" for ch in fp):
        raise e.InvalidInputError(f"invalid certificate fingerprint {text!r}: the sha256"
                                  " of the certificate, 64 hex digits")
    return fp


_TLS: list[Any] = []   # the one client context, made on first use (``import ssl``: ~10 ms)


def _tls(sock: socket.socket, host: str) -> socket.socket:
    """TLS on ``sock`` with no CA check: the peer is trusted by its pinned fingerprint."""
    if not _TLS:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _TLS.append(ctx)
    return _TLS[0].wrap_socket(sock, server_hostname=host)  # type: ignore[no-any-return]


def peer_fingerprint(sock: socket.socket) -> str:
    import hashlib

    der = sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    return hashlib.sha256(der or b"").hexdigest()


def check_pinned(sock: socket.socket, pinned: str | None, where: str) -> None:
    """Refuse a peer whose certificate is not the pinned one (or with none pinned)."""
    got = peer_fingerprint(sock)
    if pinned is None:
        raise e.CertificateError(
            f"{where} presents a certificate with sha256 fingerprint {got}; none is pinned:"
            " set CUMULO_FINGERPRINT to it if it is the one its cumulod printed")
    if got != pinned:
        raise e.CertificateError(
            f"the certificate of {where} changed: sha256 {got}, pinned {pinned}; refused"
            " (a different host, or its key was replaced)")


def fetch_fingerprint(url: str, timeout: float = 10.0) -> str:
    """The sha256 of the certificate ``url`` (https://HOST:PORT) presents (trust on first
    use: the caller pins it)."""
    import socket as sockets
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        with sockets.create_connection((host, parts.port or 443), timeout=timeout) as raw, \
                _tls(raw, host) as sock:
            return peer_fingerprint(sock)
    except OSError as err:
        raise DaemonUnreachable(f"cannot reach {url}: {err or type(err).__name__}") from err


def _query(params: dict[str, Any] | None) -> str:
    """``?a=1&b=true``, with booleans spelled as the API (and httpx) spell them. Each name
    and value percent-encoded as ``urlencode`` does, with ``%20`` for a space (urllib.parse
    imports ipaddress and more: a tenth of the CLI fast path's ``launch``)."""
    if not params:
        return ""
    return "?" + "&".join(
        f"{_quoted(str(k))}={_quoted(str(v).lower() if isinstance(v, bool) else str(v))}"
        for k, v in params.items() if v is not None)


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _quoted(text: str) -> str:
    """``text`` percent-encoded (RFC 3986 2.1: its UTF-8 bytes, the unreserved kept)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def stream_cut(ws: WebSocket, what: str) -> DaemonUnreachable:
    """The error for a websocket that ended early: the daemon stopped, or the link broke."""
    if ws.close_code == 1012:   # "service restart": cumulod is stopping
        return DaemonUnreachable(f"cumulod stopped: {what}")
    if ws.close_code == 4401:   # api/auth.py: the identity was revoked
        return DaemonUnreachable(f"the identity of this token was revoked: {what}")
    return DaemonUnreachable(f"lost the connection to cumulod: {what}")


class Client:
    """Requests are HTTP/1.1 spoken with h11 on a socket of our own. A request's
    connection is kept for the next one for ``KEEP_IDLE`` seconds, well within the
    daemon's own 5 s, and is not reused if the daemon closed it meanwhile (or in a
    forked child): a program's requests in a row skip the connect and the daemon's
    set-up of a connection, ~1 ms each when the CPUs were idle. h11 imports in ~5 ms
    where the standard library's http.client takes ~12 ms (its email and ssl modules)
    and httpx ~60 ms, more than a quick CLI command may cost in all. Streamed downloads
    (``console --follow``, image export) read the same exchange's body as it comes."""

    def __init__(self, socket: str | None = None, url: str | None = None,
                 timeout: float = 60.0, token: str | None = None,
                 fingerprint: str | None = None, project: str | None = None) -> None:
        from_env = url is None and not socket
        url = url if url is not None else (None if socket else os.environ.get("CUMULO_URL"))
        self.socket: str | None
        if url:
            self.base, self.socket = url.rstrip("/"), None
        else:
            self.socket = socket or os.environ.get("CUMULO_SOCKET", DEFAULT_SOCKET)
            self.base = "http://cumulo"
        self.timeout = timeout
        token = token or (os.environ.get("CUMULO_TOKEN") if url else None)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        if fingerprint is None and from_env:
            fingerprint = os.environ.get("CUMULO_FINGERPRINT")
        self.fingerprint = normal_fingerprint(fingerprint) if fingerprint else None
        # the project calls act in unless they name one: CUMULO_PROJECT, else default
        self.project = project or os.environ.get("CUMULO_PROJECT") or "default"
        import _thread

        self._kept_lock = _thread.allocate_lock()
        self._kept: _Kept | None = None   # the connection of the last request, if idle

    def _p(self, project: str | None) -> str:
        return project or self.project

    def _in(self) -> dict[str, str]:
        """The query of a call in the client's project."""
        return {"project": self.project}

    def close(self) -> None:
        """Close the connection kept from the last request, if any."""
        with self._kept_lock:
            kept, self._kept = self._kept, None
        if kept is not None:
            kept.sock.close()

    def __del__(self) -> None:
        # a client let go without close(): its kept connection goes with it (not left
        # for the socket's own finalizer, which warns of a socket never closed); no
        # module global used, as at the interpreter's exit they may be gone
        try:   # noqa: SIM105  (contextlib's suppress is a module global)
            self.close()
        except Exception:   # half made, or the interpreter is exiting
            pass

    def _take_kept(self) -> _Kept | None:
        """The kept connection if it is fresh, of this process, and not closed by the
        daemon (nothing may be readable on an idle one: its end, or a restart's)."""
        with self._kept_lock:
            kept, self._kept = self._kept, None
        if kept is None:
            return None
        if kept.pid == os.getpid() and time.monotonic() - kept.since < KEEP_IDLE:
            import select

            if not select.select([kept.sock], [], [], 0)[0]:
                return kept
        kept.sock.close()
        return None

    def _keep(self, kept: _Kept) -> None:
        with self._kept_lock:
            other, self._kept = self._kept, kept
        if other is not None:   # another thread's request kept one meanwhile
            other.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def where(self) -> str:
        return self.socket or self.base

    # transport
    def _connect(self, timeout: float | None) -> tuple[socket.socket, str]:
        """A connected socket and the Host header for it. On the unix socket: the C
        module's socket (``socket.py`` builds four enums from its constants at import,
        about a tenth of the CLI fast path's time), which does all this client asks."""
        if self.socket is not None:
            import _socket

            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(self.socket)
            except OSError:
                sock.close()
                raise
            return sock, "cumulo"   # type: ignore[return-value]  # (socket.socket's base)
        import socket as sockets
        from urllib.parse import urlsplit

        url = urlsplit(self.base)
        host = url.hostname or "localhost"
        port = url.port or (443 if url.scheme == "https" else 80)
        sock = sockets.create_connection((host, port), timeout=timeout)
        # no Nagle: a request's pieces (TLS records, a body after its head) would each
        # wait for the peer's delayed ACK, ~40 ms
        sock.setsockopt(sockets.IPPROTO_TCP, sockets.TCP_NODELAY, 1)
        if url.scheme == "https":
            try:
                sock = _tls(sock, host)
                check_pinned(sock, self.fingerprint, self.base)
            except BaseException:
                sock.close()
                raise
        return sock, url.netloc

    @contextmanager
    def _exchange(self, method: str, path: str, params: dict[str, Any] | None, json: Any,
                  content: Any, headers: dict[str, str] | None, timeout: Any
                  ) -> Iterator[tuple[Response, Iterator[bytes]]]:
        """Send one request; yield the answer's head (no body yet) and its body's pieces
        as they come. ``content``: bytes or a file to upload; ``timeout=None``: none."""
        t: float | None = self.timeout if timeout is _DEFAULT else timeout
        hdrs = {k.lower(): v for k, v in {**self.headers, **(headers or {})}.items()}
        body = content
        if json is not None:
            body = _json_bytes(json)
            hdrs["content-type"] = "application/json"
        if isinstance(body, bytes):
            hdrs["content-length"] = str(len(body))
        elif body is not None and "content-length" not in hdrs:
            hdrs["transfer-encoding"] = "chunked"
        sock, host, conn = self._open(t)
        try:   # (no ``with``: the C module's socket is no context manager)
            yield self._http(sock, host, method, API + path + _query(params), hdrs, body,
                             conn)
        except BaseException:
            sock.close()
            raise
        self._done(sock, host, conn)

    def _open(self, timeout: float | None) -> tuple[socket.socket, str, Any]:
        """A socket for a request, the connection kept from the last one or a new one,
        with its h11 state."""
        import h11

        kept = self._take_kept()
        if kept is not None:
            kept.sock.settimeout(timeout)
            return kept.sock, kept.host, kept.conn
        return (*self._dial(timeout), h11.Connection(h11.CLIENT))

    def _dial(self, timeout: float | None) -> tuple[socket.socket, str]:
        """A new connection and its Host header; DaemonUnreachable if there is none."""
        try:
            return self._connect(timeout)
        except OSError as err:
            raise self._unreachable(err) from err

    def _done(self, sock: socket.socket, host: str, conn: Any) -> None:
        """After a request: its connection is kept for the next one if both sides are
        done with this one (its whole answer read, and the daemon did not say it closes)."""
        import h11

        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self._keep(_Kept(sock, host, conn))
        else:
            sock.close()

    def _http(self, sock: socket.socket, host: str, method: str, target: str,
              hdrs: dict[str, str], body: Any, conn: Any = None
              ) -> tuple[Response, Iterator[bytes]]:
        """Send the request on ``sock`` (through the h11 connection ``conn``, a new one
        if None); the answer's head and its body's pieces."""
        import h11

        if conn is None:
            conn = h11.Connection(h11.CLIENT)
        request = h11.Request(method=method, target=target,
                              headers=[("host", host), *hdrs.items()])
        events = chain([request], (h11.Data(data=c) for c in _chunks(body)),
                       [h11.EndOfMessage()])
        try:
            try:
                if isinstance(body, bytes) and len(body) <= ONE_WRITE:
                    # head and body in one write: the server reads the request at once,
                    # not its head first and then, woken again, its body
                    sock.sendall(b"".join(conn.send(event) or b"" for event in events))
                for event in events:   # (what is left of them)
                    if data := conn.send(event):   # b"": no send (EPIPE once answered)
                        sock.sendall(data)
            except OSError:
                pass   # it may have answered (and closed) before taking it all: read on
            head = _head(conn, sock)
        except (OSError, h11.ProtocolError) as err:
            raise self._unreachable(err) from err
        return head, _body(conn, sock, self.where())

    def _unreachable(self, err: Exception) -> DaemonUnreachable:
        if self.base.startswith("http://") and not isinstance(err, OSError):
            return DaemonUnreachable(
                f"{self.where()} closed the connection without an answer: a cumulod"
                " --listen speaks HTTPS (use https://), plain HTTP only with"
                " --insecure-http")
        return DaemonUnreachable(
            f"cannot reach cumulod at {self.where()}: {err or type(err).__name__}. "
            "Is it running? (start it with `cumulod`, or set CUMULO_SOCKET / CUMULO_URL)")

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                json: Any = None, content: Any = None, headers: dict[str, str] | None = None,
                timeout: Any = _DEFAULT) -> Response:
        """One request, its whole answer read; an error answer raises APIError."""
        with self._exchange(method, path, params, json, content, headers, timeout) as (
                head, body):
            head.content = b"".join(body)
        return _checked(head)

    @contextmanager
    def _stream(self, path: str, params: dict[str, Any] | None = None
                ) -> Iterator[tuple[Response, Iterator[bytes]]]:
        """A GET whose body is read as it comes, with no time limit; errors as request's."""
        with self._exchange("GET", path, params, None, None, None, None) as (head, body):
            if head.status_code >= 400:
                head.content = b"".join(body)
                _checked(head)
            yield head, body

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()

    # operations
    def wait(self, op: dict[str, Any], on_progress: Callable[[dict[str, Any]], None] | None = None,
             timeout: float = 600.0) -> dict[str, Any]:
        """Block until the operation ends; raise APIError with its error on failure."""
        deadline = time.monotonic() + timeout
        while op["status"] not in ("success", "failure"):
            if time.monotonic() > deadline:
                raise e.DriverError(f"operation {op['id']} still running after {timeout:.0f}s")
            op = self.get(f"/operations/{op['id']}", params={
                "wait": 1 if on_progress else 10,
                "project": op.get("project") or self.project}, timeout=30)
            if on_progress:
                on_progress(op)
        if op["status"] == "failure":
            kind = op.get("error_type")
            raise APIError(op.get("error") or "operation failed", e.status_of_type(kind),
                           kind or "OperationError")
        return op

    def _op(self, method: str, path: str, wait: bool = True, **kw: Any) -> dict[str, Any]:
        op = self.request(method, path, **kw).json()
        return self.wait(op) if wait else op

    # server
    def server(self) -> dict[str, Any]:
        return self.get("")  # type: ignore[no-any-return]

    def host_info(self) -> dict[str, Any]:
        return self.get("/host")  # type: ignore[no-any-return]

    # instances
    def instances(self, project: str | None = None) -> list[dict[str, Any]]:
        return self.get("/instances", params={"project": self._p(project)})  # type: ignore[no-any-return]

    def instance(self, name: str, project: str | None = None) -> dict[str, Any]:
        return self.get(f"/instances/{name}", params={"project": self._p(project)})  # type: ignore[no-any-return]

    def create(self, name: str, image: str, *, type: str = "container",
               limits: dict[str, Any] | None = None, privileged: bool = False,
               command: list[str] | None = None, options: dict[str, str] | None = None,
               start: bool = False, project: str | None = None, wait: bool = True,
               networks: list[dict[str, Any]] | None = None,
               storage: dict[str, Any] | None = None,
               ssh_key: str | None = None, target: str | None = None,
               user_data: str | None = None, cloud_config: dict[str, Any] | None = None
               ) -> dict[str, Any]:
        body = {"name": name, "image": image, "type": type, "limits": limits or {},
                "privileged": privileged, "command": command, "options": options or {},
                "start": start, "networks": networks, **(storage or {})}
        if ssh_key is not None:
            body["ssh_key"] = ssh_key
        if user_data is not None:
            body["user_data"] = user_data
        if cloud_config:
            body["cloud_config"] = cloud_config
        # waiting, the daemon answers once the operation ended (within 10 s): one request
        return self._op("POST", "/instances", wait, json=body,
                        timeout=None if self.timeout is None else max(self.timeout, 30),
                        params={"project": self._p(project), "wait": 10 if wait else 0,
                                "target": target})

    def set_state(self, name: str, action: str, *, timeout: float = 30, force: bool = False,
                  project: str | None = None, wait: bool = True) -> dict[str, Any]:
        return self._op("PUT", f"/instances/{name}/state", wait,
                        params={"project": self._p(project)},
                        json={"action": action, "timeout": timeout, "force": force})

    def delete(self, name: str, *, force: bool = False, project: str | None = None,
               wait: bool = True) -> dict[str, Any]:
        return self._op("DELETE", f"/instances/{name}", wait,
                        params={"project": self._p(project), "force": force})

    def set_limits(self, name: str, limits: dict[str, Any], project: str | None = None
                   ) -> dict[str, Any]:
        return self.request("PATCH", f"/instances/{name}", params={"project": self._p(project)},  # type: ignore[no-any-return]
                            json={"limits": limits}).json()

    def set_options(self, name: str, options: dict[str, str | None],
                    project: str | None = None) -> dict[str, Any]:
        return self.request("PATCH", f"/instances/{name}", params={"project": self._p(project)},  # type: ignore[no-any-return]
                            json={"options": options}).json()

    def exec(self, name: str, command: list[str], *, stdin: bytes = b"",
             env: dict[str, str] | None = None, cwd: str = "/", timeout: float = 60,
             project: str | None = None) -> dict[str, Any]:
        """Run to completion and collect output: {exit_code, stdout, stderr}."""
        body = {"command": command, "stdin": stdin.decode(), "env": env or {}, "cwd": cwd,
                "timeout": timeout}
        return self.request("POST", f"/instances/{name}/exec", params={"project": self._p(project)},  # type: ignore[no-any-return]
                            json=body, timeout=timeout + 10).json()

    def exec_stream(self, name: str, request: dict[str, Any], project: str | None = None
                    ) -> WebSocket:
        """A websocket running the command (protocol in api/exec_ws.py)."""
        # the request goes as the upgrade's first message, before wsproto is imported:
        # the daemon starts the command meanwhile (wsopen.py)
        return self._websocket(f"/instances/{name}/exec-ws?project={self._p(project)}",
                               "exec stream", first=jsonlite.dumps(request))

    def console_stream(self, name: str, project: str | None = None) -> WebSocket:
        """A websocket on the interactive console (protocol in api/console_ws.py)."""
        return self._websocket(f"/instances/{name}/console-ws?project={self._p(project)}",
                               "console")

    def events(self, types: list[str] | None = None, project: str | None = None
               ) -> WebSocket:
        """A websocket of the daemon's events, one JSON text frame each (api/events_ws.py);
        ``project``: only that project's (default: every project's)."""
        return self._websocket("/events" + _query({"type": ",".join(types) if types else None,
                                                   "project": project}), "the event stream")

    def _websocket(self, path: str, what: str, first: str | None = None) -> WebSocket:
        """A websocket on ``path`` (under /1.0), on a socket of our own (wsclient.py);
        ``first``: a text message sent as soon as it is open (wsopen.py)."""
        from cumulo.wsopen import Rejected

        try:
            sock, host = self._connect(self.timeout)
            try:
                return self._handshake(sock, host, API + path, first)
            except BaseException:
                sock.close()
                raise
        except (OSError, Rejected) as err:
            raise DaemonUnreachable(f"cannot open {what} at {self.where()}: {err}") from err

    def _handshake(self, sock: socket.socket, host: str, target: str, first: str | None
                   ) -> WebSocket:
        from cumulo.wsopen import handshake

        return handshake(sock, host, target, self.headers, first)

    def metrics(self) -> str:
        """The Prometheus exposition of ``GET /1.0/metrics``."""
        return self.request("GET", "/metrics").text

    def console(self, name: str, offset: int = 0, project: str | None = None
                ) -> tuple[bytes, int]:
        resp = self.request("GET", f"/instances/{name}/console",
                            params={"project": self._p(project), "offset": offset})
        return resp.content, int(resp.headers.get("x-cumulo-offset", offset))

    def push_file(self, name: str, path: str, data: bytes, mode: str = "0644",
                  project: str | None = None) -> None:
        """Write ``data`` to ``path`` in a running instance."""
        self.request("PUT", f"/instances/{name}/files", content=data,
                     params={"project": self._p(project), "path": path, "mode": mode},
                     headers={"content-type": "application/octet-stream"})

    def pull_file(self, name: str, path: str, project: str | None = None) -> bytes:
        """The bytes of ``path`` in a running instance."""
        return self.request("GET", f"/instances/{name}/files",
                            params={"project": self._p(project), "path": path}).content

    # measured boot
    def tpm(self, name: str, project: str | None = None) -> dict[str, Any]:
        """A running VM's vTPM PCRs and boot event log."""
        return self.get(f"/instances/{name}/tpm",  # type: ignore[no-any-return]
                        params={"project": self._p(project)})

    def tpm_baseline(self, name: str, project: str | None = None) -> dict[str, Any]:
        return self.request("PUT", f"/instances/{name}/tpm/baseline",  # type: ignore[no-any-return]
                            params={"project": self._p(project)}).json()

    def tpm_verify(self, name: str, project: str | None = None) -> dict[str, Any]:
        return self.get(f"/instances/{name}/tpm/verify",  # type: ignore[no-any-return]
                        params={"project": self._p(project)})

    def console_follow(self, name: str, project: str | None = None) -> Iterator[bytes]:
        with self._stream(f"/instances/{name}/console",
                          {"project": self._p(project), "follow": "true"}) as (_head, body):
            yield from body

    # images
    def images(self) -> list[dict[str, Any]]:
        return self.get("/images", params=self._in())  # type: ignore[no-any-return]

    def image(self, ref: str) -> dict[str, Any]:
        return self.get(f"/images/{ref}", params=self._in())  # type: ignore[no-any-return]

    def build_image(self, builder: str, alias: str | None = None, wait: bool = True,
                    on_progress: Callable[[dict[str, Any]], None] | None = None, *,
                    variant: str | None = None, packages: list[str] | None = None,
                    binary: str | None = None, profile: str | None = None,
                    features: list[str] | None = None, vm: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"builder": builder, "alias": alias}
        for key, value in (("variant", variant), ("packages", packages), ("binary", binary),
                           ("profile", profile), ("features", features), ("vm", vm)):
            if value:
                body[key] = value
        op = self.request("POST", "/images", json=body, params=self._in()).json()
        return self.wait(op, on_progress) if wait else op

    def import_app(self, name: str, data: bytes) -> dict[str, Any]:
        """An app image from one static program (for --type appvm)."""
        return self.request("POST", "/images/app",  # type: ignore[no-any-return]
                            params={"name": name, **self._in()},
                            content=data,
                            headers={"content-type": "application/octet-stream"}).json()

    def delete_image(self, ref: str) -> None:
        self.request("DELETE", f"/images/{ref}", params=self._in())

    def set_alias(self, alias: str, target: str) -> dict[str, Any]:
        return self.request("POST", "/image-aliases", params=self._in(),  # type: ignore[no-any-return]
                            json={"name": alias, "target": target}).json()

    def delete_alias(self, alias: str) -> None:
        self.request("DELETE", f"/image-aliases/{alias}", params=self._in())

    def import_image(self, path: str, filename: str, alias: str | None = None,
                     sha256: str | None = None) -> dict[str, Any]:
        """Upload the file at ``path``; returns the import operation (not yet waited for)."""
        params = {k: v for k, v in (("filename", filename), ("alias", alias),
                                    ("sha256", sha256)) if v} | self._in()
        try:
            f = open(path, "rb")  # noqa: SIM115
        except OSError as err:
            raise e.InvalidInputError(f"cannot read {path}: {err.strerror}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            return self.request("POST", "/image-imports", params=params,  # type: ignore[no-any-return]
                                content=f, timeout=None,
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(size)}).json()

    def export_image(self, ref: str) -> Iterator[tuple[str, bytes]]:
        """(format, chunk) pairs of the image's file: tar.gz for a rootfs, qcow2/raw for a disk."""
        with self._stream(f"/image-files/{ref}", self._in()) as (head, body):
            fmt = head.headers.get("x-cumulo-format", "")
            for chunk in body:
                yield fmt, chunk

    def publish(self, name: str, alias: str, project: str | None = None) -> dict[str, Any]:
        """Start publishing a stopped container as an image; returns the operation."""
        return self.request("POST", f"/instances/{name}/publish",  # type: ignore[no-any-return]
                            params={"project": self._p(project)}, json={"alias": alias}).json()

    def cancel_operation(self, op_id: str, project: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/operations/{op_id}",  # type: ignore[no-any-return]
                            params={"project": self._p(project)}).json()

    # placement groups
    def placement_groups(self, project: str = "default") -> list[dict[str, Any]]:
        return self.get("/placement-groups", params={"project": project})  # type: ignore[no-any-return]

    def placement_group(self, name: str, project: str = "default") -> dict[str, Any]:
        return self.get(f"/placement-groups/{name}", params={"project": project})  # type: ignore[no-any-return]

    def create_placement_group(self, name: str, policy: str = "spread", strict: bool = False,
                               project: str = "default") -> dict[str, Any]:
        return self.request("POST", "/placement-groups", params={"project": project},  # type: ignore[no-any-return]
                            json={"name": name, "policy": policy, "strict": strict}).json()

    def delete_placement_group(self, name: str, project: str = "default") -> None:
        self.request("DELETE", f"/placement-groups/{name}", params={"project": project})

    # networks
    def networks(self, project: str | None = None) -> list[dict[str, Any]]:
        return self.get("/networks", params={"project": self._p(project)})  # type: ignore[no-any-return]

    def network(self, name: str, project: str | None = None) -> dict[str, Any]:
        return self.get(f"/networks/{name}", params={"project": self._p(project)})  # type: ignore[no-any-return]

    def create_network(self, name: str, subnet: str | None = None, project: str | None = None,
                       *, dns_domain: str | None = None, nat: bool = False,
                       type: str = "bridge", vni: int | None = None, mtu: int | None = None
                       ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "subnet": subnet, "dns_domain": dns_domain,
                                "nat": nat}
        if type != "bridge" or vni is not None or mtu is not None:
            body.update(type=type, vni=vni, mtu=mtu)
        return self.request("POST", "/networks", params={"project": self._p(project)},  # type: ignore[no-any-return]
                            json=body).json()

    def delete_network(self, name: str, project: str | None = None) -> None:
        self.request("DELETE", f"/networks/{name}", params={"project": self._p(project)})

    def checkpoint(self, name: str, file: str | None = None, restore: bool = False,
                   project: str | None = None) -> dict[str, Any]:
        return self._op("POST", f"/instances/{name}/{'restore' if restore else 'checkpoint'}",
                        json={"file": file}, params={"project": self._p(project)})

    # hosts: tokens, remotes, migration
    def issue_token(self, name: str | None = None) -> dict[str, Any]:
        return self.request("POST", "/tokens", json={"name": name}).json()  # type: ignore[no-any-return]

    def remotes(self) -> list[dict[str, Any]]:
        return self.get("/remotes")  # type: ignore[no-any-return]

    # identities and the audit log
    def create_identity(self, name: str, role: str, project: str | None = "default",
                        expires: str | None = None) -> dict[str, Any]:
        return self.request("POST", "/identities", json={  # type: ignore[no-any-return]
            "name": name, "role": role, "project": project, "expires": expires}).json()

    def identities(self) -> list[dict[str, Any]]:
        return self.get("/identities")  # type: ignore[no-any-return]

    def revoke_identity(self, name: str) -> None:
        self.request("DELETE", f"/identities/{name}")

    def grant(self, name: str, project: str, role: str | None) -> dict[str, Any]:
        if role is None:
            return self.request("DELETE", f"/identities/{name}/roles/{project}").json()  # type: ignore[no-any-return]
        return self.request("PUT", f"/identities/{name}/roles/{project}",  # type: ignore[no-any-return]
                            json={"role": role}).json()

    def audit(self, project: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self.get("/audit", params={"project": project, "limit": limit})  # type: ignore[no-any-return]

    def add_remote(self, name: str, url: str, token: str, fingerprint: str | None = None
                   ) -> dict[str, Any]:
        return self.request("POST", "/remotes",  # type: ignore[no-any-return]
                            json={"name": name, "url": url, "token": token,
                                  "fingerprint": fingerprint}).json()

    def delete_remote(self, name: str) -> None:
        self.request("DELETE", f"/remotes/{name}")

    def migrate(self, name: str, remote: str, live: bool = True, project: str | None = None,
                on_progress: Callable[[dict[str, Any]], None] | None = None,
                bandwidth: str | None = None, postcopy: bool = False,
                wait: bool = True) -> dict[str, Any]:
        """Move an instance to ``remote``; ``wait=False`` returns the running operation."""
        op = self.request("POST", f"/instances/{name}/migrate",
                          params={"project": self._p(project)},
                          json={"remote": remote, "live": live, "bandwidth": bandwidth,
                                "postcopy": postcopy}).json()
        return self.wait(op, on_progress, timeout=1800) if wait else op

    def set_bandwidth(self, name: str, body: dict[str, Any],
                      project: str | None = None) -> dict[str, Any]:
        return self.request("POST", f"/instances/{name}/bandwidth",  # type: ignore[no-any-return]
                            params={"project": self._p(project)}, json=body).json()

    def attach_nic(self, name: str, network: str, nic_name: str | None = None,
                   ip: str | None = None, project: str | None = None) -> dict[str, Any]:
        return self.request("POST", f"/instances/{name}/nics",  # type: ignore[no-any-return]
                            params={"project": self._p(project)},
                            json={"network": network, "name": nic_name, "ip": ip}).json()

    def detach_nic(self, name: str, network: str,
                   project: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/instances/{name}/nics/{network}",  # type: ignore[no-any-return]
                            params={"project": self._p(project)}).json()

    # security groups and port forwards
    def groups(self, project: str | None = None) -> list[dict[str, Any]]:
        return self.get("/security-groups", params={"project": self._p(project)})  # type: ignore[no-any-return]

    def group(self, name: str, project: str | None = None) -> dict[str, Any]:
        return self.get(f"/security-groups/{name}", params={"project": self._p(project)})  # type: ignore[no-any-return]

    def create_group(self, name: str, description: str = "",
                     project: str | None = None) -> dict[str, Any]:
        return self.request("POST", "/security-groups", params={"project": self._p(project)},  # type: ignore[no-any-return]
                            json={"name": name, "description": description}).json()

    def delete_group(self, name: str, project: str | None = None) -> None:
        self.request("DELETE", f"/security-groups/{name}", params={"project": self._p(project)})

    def add_rule(self, name: str, rule: dict[str, Any],
                 project: str | None = None) -> dict[str, Any]:
        return self.request("POST", f"/security-groups/{name}/rules",  # type: ignore[no-any-return]
                            params={"project": self._p(project)}, json=rule).json()

    def remove_rule(self, name: str, index: int, project: str | None = None) -> dict[str, Any]:
        return self.request("DELETE", f"/security-groups/{name}/rules/{index}",  # type: ignore[no-any-return]
                            params={"project": self._p(project)}).json()

    def attach_group(self, name: str, instance: str, network: str | None = None,
                     project: str | None = None, detach: bool = False) -> None:
        self.request("POST", f"/security-groups/{name}/{'detach' if detach else 'attach'}",
                     params={"project": self._p(project)},
                     json={"instance": instance, "network": network})

    def forwards(self, network: str, project: str | None = None) -> list[dict[str, Any]]:
        return self.get(f"/networks/{network}/forwards", params={"project": self._p(project)})  # type: ignore[no-any-return]

    def add_forward(self, network: str, body: dict[str, Any],
                    project: str | None = None) -> dict[str, Any]:
        return self.request("POST", f"/networks/{network}/forwards",  # type: ignore[no-any-return]
                            params={"project": self._p(project)}, json=body).json()

    def delete_forward(self, network: str, protocol: str, address: str, port: int,
                       project: str | None = None) -> None:
        self.request("DELETE", f"/networks/{network}/forwards/{protocol}/{address}/{port}",
                     params={"project": self._p(project)})

    def operations(self, project: str | None = None) -> list[dict[str, Any]]:
        return self.get("/operations",  # type: ignore[no-any-return]
                        params={"project": self._p(project)})

    # projects
    def projects(self) -> list[dict[str, Any]]:
        return self.get("/projects")  # type: ignore[no-any-return]

    def project_info(self, name: str) -> dict[str, Any]:
        return self.get(f"/projects/{name}")  # type: ignore[no-any-return]

    def project_state(self, name: str) -> dict[str, Any]:
        return self.get(f"/projects/{name}/state")  # type: ignore[no-any-return]

    def create_project(self, name: str, description: str = "",
                       config: dict[str, str] | None = None) -> dict[str, Any]:
        return self.request("POST", "/projects", json={  # type: ignore[no-any-return]
            "name": name, "description": description, "config": config or {}}).json()

    def update_project(self, name: str, config: dict[str, str | None],
                       description: str | None = None) -> dict[str, Any]:
        """Set (a None value unsets) some settings."""
        return self.request("PATCH", f"/projects/{name}", json={  # type: ignore[no-any-return]
            "config": config, "description": description}).json()

    def delete_project(self, name: str) -> None:
        self.request("DELETE", f"/projects/{name}")

    # storage: pools, volumes, snapshots
    def pools(self) -> list[dict[str, Any]]:
        return self.get("/storage-pools")  # type: ignore[no-any-return]

    def pool(self, name: str) -> dict[str, Any]:
        return self.get(f"/storage-pools/{name}")  # type: ignore[no-any-return]

    def volumes(self, project: str | None = None) -> list[dict[str, Any]]:
        return self.get("/volumes", params={"project": self._p(project)})  # type: ignore[no-any-return]

    def volume(self, name: str, project: str | None = None) -> dict[str, Any]:
        return self.get(f"/volumes/{name}", params={"project": self._p(project)})  # type: ignore[no-any-return]

    def create_volume(self, name: str, size: str, pool: str | None = None,
                      project: str | None = None) -> dict[str, Any]:
        return self.request("POST", "/volumes", params={"project": self._p(project)},  # type: ignore[no-any-return]
                            json={"name": name, "size": size, "pool": pool}).json()

    def resize_volume(self, name: str, size: str, project: str | None = None) -> dict[str, Any]:
        return self.request("PATCH", f"/volumes/{name}", params={"project": self._p(project)},  # type: ignore[no-any-return]
                            json={"size": size}).json()

    def delete_volume(self, name: str, project: str | None = None) -> None:
        self.request("DELETE", f"/volumes/{name}", params={"project": self._p(project)})

    def attach_volume(self, name: str, instance: str, path: str = "", shared: bool = False,
                      project: str | None = None) -> dict[str, Any]:
        return self.request("POST", f"/volumes/{name}/attachments",  # type: ignore[no-any-return]
                            params={"project": self._p(project)},
                            json={"instance": instance, "path": path, "shared": shared}).json()

    def detach_volume(self, name: str, instance: str, project: str | None = None
                      ) -> dict[str, Any]:
        return self.request("DELETE", f"/volumes/{name}/attachments/{instance}",  # type: ignore[no-any-return]
                            params={"project": self._p(project)}).json()

    def snapshots(self, name: str, volume: bool = False, project: str | None = None
                  ) -> list[dict[str, Any]]:
        kind = "volumes" if volume else "instances"
        return self.get(f"/{kind}/{name}/snapshots", params={"project": self._p(project)})  # type: ignore[no-any-return]

    def snapshot(self, action: str, name: str, snap: str, volume: bool = False,
                 project: str | None = None, stateful: bool = False) -> None:
        """``action``: create, restore or delete; ``stateful``: a running VM's memory too."""
        base = f"/{'volumes' if volume else 'instances'}/{name}/snapshots"
        params = {"project": self._p(project)}
        if action == "create":
            body: dict[str, Any] = {"name": snap}
            if stateful:
                body["stateful"] = True
            self.request("POST", base, params=params, json=body)
        elif action == "restore":
            self.request("POST", f"{base}/{snap}/restore", params=params)
        else:
            self.request("DELETE", f"{base}/{snap}", params=params)


def _json_bytes(data: Any) -> bytes:
    return jsonlite.dumps(data).encode()


def _chunks(body: Any) -> Iterator[bytes]:
    """A request body (bytes, a binary file or None) in pieces to send."""
    if isinstance(body, bytes):
        if body:
            yield body
    elif body is not None:
        while chunk := body.read(1 << 20):
            yield chunk


def _head(conn: Any, sock: socket.socket) -> Response:
    """Read an answer's status and headers from ``sock`` through the h11 ``conn``."""
    import h11

    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(1 << 16))
        elif isinstance(event, h11.Response):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
            return Response(event.status_code, event.reason.decode("latin-1"), headers, b"")
        elif isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("connection closed before a response")


def _body(conn: Any, sock: socket.socket, where: str) -> Iterator[bytes]:
    """The answer's body in pieces as they come, to its end."""
    import h11

    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(1 << 16))
            elif isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return
    except (OSError, h11.ProtocolError) as err:
        raise DaemonUnreachable(f"lost cumulod at {where}: {err or type(err).__name__}"
                                ) from err


def _checked(resp: Response) -> Response:
    """``resp``, or the APIError its error answer says."""
    if resp.status_code >= 400:
        try:
            body = resp.json()
            msg, kind = body.get("error", resp.text), body.get("type", "")
        except ValueError:
            msg, kind = resp.text or resp.reason_phrase, ""
        raise APIError(msg, resp.status_code, kind)
    return resp


def error_from(kind: str) -> type[e.CumuloError]:
    return _BY_NAME.get(kind, e.CumuloError)
