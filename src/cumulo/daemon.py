"""cumulod: the per-host daemon. Runs in the foreground; stop it with SIGTERM or Ctrl-C.

Instances keep running when it stops; on start it reconciles the store with
what really runs on the host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import grp
import hashlib
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
from pathlib import Path

import uvicorn

from cumulo import __version__
from cumulo.api.app import create_app
from cumulo.cluster.membership import Identity, JoinToken
from cumulo.docker import serve as docker_serve
from cumulo.docker.common import Context as DockerContext
from cumulo.errors import CumuloError, InvalidInputError
from cumulo.host import certificate
from cumulo.host.heap_dump import heap_dumps_on_usr2
from cumulo.host.malloc_trim import Trimmer
from cumulo.host.probe import probe
from cumulo.services import history
from cumulo.services.events import LogHandler
from cumulo.services.host import Services, build_services
from cumulo.store.db import shown

DEFAULT_STATE = Path("/var/lib/cumulo")
DEFAULT_RUNTIME = Path("/run/cumulo")
# on SIGTERM: exec and console websockets are closed at once (their commands killed, the
# instances run on); other requests get this long before they are cancelled
GRACEFUL_STOP = 3  # seconds
log = logging.getLogger("cumulod")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cumulod", description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE,
                   help="persistent state: database, images, instances (default %(default)s)")
    p.add_argument("--runtime-dir", type=Path, default=None,
                   help="volatile state: sockets, runtime state "
                        "(default /run/cumulo, or STATE_DIR/run for another state dir)")
    p.add_argument("--socket", type=Path, default=None,
                   help="unix socket to serve on, mode 0660 (default RUNTIME_DIR/cumulo.sock)")
    p.add_argument("--listen", metavar="HOST:PORT", default=None,
                   help="also serve HTTPS on this TCP address, with this host's own"
                        " certificate (made on the first start, in STATE_DIR/tls); every"
                        " request there needs a token: cumulo identity create")
    p.add_argument("--insecure-http", action="store_true",
                   help="serve --listen as plain HTTP instead (loopback addresses only)")
    p.add_argument("--docker-socket", type=Path, default=None,
                   help="serve the Docker Engine API on this unix socket, mode 0660"
                        " (default RUNTIME_DIR/docker.sock)")
    p.add_argument("--docker-project", default="default",
                   help="project the Docker API's containers live in (default %(default)s)")
    p.add_argument("--docker-group", default=None, metavar="GROUP",
                   help="group that may use the Docker socket besides root (as Docker's"
                        " docker group); it acts with all rights in --docker-project")
    p.add_argument("--no-docker", dest="docker", action="store_false",
                   help="do not serve the Docker Engine API")
    p.add_argument("--database", default=None,
                   help="the store: sqlite:///PATH or postgresql://USER@HOST/DB, any"
                        " SQLAlchemy URL (default sqlite:///STATE_DIR/cumulo.db)")
    p.add_argument("--join", metavar="TOKEN", default=None,
                   help="join the cluster of this token (from `cumulo cluster add NAME` on a"
                        " member); needs --listen. Its store is the cluster's")
    p.add_argument("--heartbeat", type=float, default=None, metavar="SECONDS",
                   help="in a cluster: how often this member says it is alive (default 2)")
    p.add_argument("--offline-after", type=float, default=None, metavar="SECONDS",
                   help="in a cluster: a member silent this long is offline (default 10)")
    p.add_argument("--ephemeral-grace", type=float, default=None, metavar="SECONDS",
                   help="in a cluster: how long past offline a member's ephemeral instances"
                        " wait before they are recreated on another member (default 30)")
    p.add_argument("--cgroup-parent", default=None,
                   help="cgroup under which instances live (default cumulo, or cumulo-HASH "
                        "for another state dir)")
    p.add_argument("--runtime", choices=["runc", "crun"], default=None,
                   help="OCI runtime for containers (default: chosen from the host probe)")
    p.add_argument("--driver", action="append", default=[], metavar="TYPE=DRIVER",
                   help="map an instance type to a driver, e.g. container=fake (tests)")
    p.add_argument("--no-default-network", dest="default_network", action="store_false",
                   help="do not create the NAT network 'default' on the first start")
    p.add_argument("--subnet-pool", metavar="CIDR", default=None,
                   help="where networks without --subnet get a free /24 (default 10.210.0.0/16)")
    p.add_argument("--history-interval", type=float, default=history.INTERVAL,
                   metavar="SECONDS",
                   help="how often each instance's usage is sampled for its history"
                        " (default %(default)s; 0: no history)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"cumulod {__version__}")
    return p.parse_args(argv)


def _give_group(path: Path, group: str) -> None:
    """``group`` may connect to the socket at ``path`` (mode 0660)."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise InvalidInputError(f"--docker-group: no group {group!r} on this host") from None
    os.chown(path, 0, gid)


def _bind_unix(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        probe_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe_sock.connect(str(path))
            raise CumuloError(f"another cumulod is already serving {path}")
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # stale socket of a dead daemon
        finally:
            probe_sock.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    sock.listen(128)
    return sock


def _parse_listen(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CumuloError(f"invalid --listen {addr!r}: use HOST:PORT, e.g. 127.0.0.1:8443")
    return host.strip("[]"), int(port)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Server(uvicorn.Server):
    """uvicorn serving the sockets given to ``serve`` in plain HTTP (the unix socket),
    and ``tls_socket`` in HTTPS: one app, one loop, one shutdown."""

    def __init__(self, config: uvicorn.Config, tls_socket: socket.socket | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(config)
        self.tls_socket, self.tls = tls_socket, tls

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.tls_socket is None or not self.started:
            return
        config = self.config

        def protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state,
                app_state=self.lifespan.state, _loop=_loop)

        self.servers.append(await asyncio.get_running_loop().create_server(
            protocol, sock=self.tls_socket, ssl=self.tls, backlog=config.backlog))


def make_server(svc: Services, log_level: str, tls_socket: socket.socket | None = None,
                tls: ssl.SSLContext | None = None, fingerprint: str | None = None,
                listen: str | None = None, reports: Path | None = None) -> Server:
    """The server of the API: plain HTTP on the sockets given to ``serve``, HTTPS (with
    ``tls``) on ``tls_socket``."""
    return Server(uvicorn.Config(
        create_app(svc, tcp_auth=True, fingerprint=fingerprint, listen=listen,
                   reports=reports), log_level=log_level,
        access_log=False, ws="websockets-sansio", timeout_graceful_shutdown=GRACEFUL_STOP),
        tls_socket, tls)


def run(args: argparse.Namespace) -> None:
    state_dir = args.state_dir.resolve()
    custom = state_dir != DEFAULT_STATE
    runtime_dir = (args.runtime_dir or (state_dir / "run" if custom else DEFAULT_RUNTIME))
    sock_path = args.socket or runtime_dir / "cumulo.sock"
    tag = hashlib.sha256(str(state_dir).encode()).hexdigest()[:8]
    cgroup_parent = args.cgroup_parent or (f"cumulo-{tag}" if custom else "cumulo")
    kinds = dict(item.split("=", 1) for item in args.driver) if args.driver else None
    listen = _parse_listen(args.listen) if args.listen else None
    if args.insecure_http and (listen is None or not _loopback(listen[0])):
        raise CumuloError("--insecure-http serves plain HTTP on a loopback --listen only"
                          " (127.0.0.1, ::1): anywhere else tokens would cross the network"
                          " in the clear")
    join = JoinToken.decode(args.join) if args.join else None
    identity = Identity.load(state_dir)
    # a member's store is its cluster's (also after `cumulo cluster join` restarted it)
    database = (identity.database if identity else None) or args.database or (
        join.database if join else None)
    if os.geteuid() != 0 and kinds is None:
        raise CumuloError("cumulod must run as root: containers need namespaces, cgroups and"
                          " mounts (only test drivers, --driver TYPE=fake, run without it)")

    docker_path = (args.docker_socket or runtime_dir / "docker.sock") if args.docker else None
    sockets = [_bind_unix(sock_path)]
    tls_socket = tls = fingerprint = None
    docker_sock = None
    try:
        if docker_path is not None:
            docker_sock = _bind_unix(docker_path)
            if args.docker_group:
                _give_group(docker_path, args.docker_group)
        if listen:
            try:
                tcp = socket.create_server(listen)
                # inherited by each connection: no Nagle wait (for the peer's delayed
                # ACK, ~40 ms) between an answer's head and body, which TLS sends apart
                tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as err:
                raise CumuloError(f"cannot listen on {args.listen}: {err.strerror}") from err
            if args.insecure_http:
                sockets.append(tcp)
                log.warning("serving plain HTTP on %s (--insecure-http)", args.listen)
            else:
                tls_socket = tcp
                key, cert, fingerprint = certificate.ensure(state_dir / "tls", listen[0])
                tls = certificate.server_context(key, cert)
                log.info("serving HTTPS on %s; certificate sha256 fingerprint %s",
                         args.listen, fingerprint)
        host = probe()
        for note in host.notes:
            log.info("host: %s", note)
        svc = build_services(state_dir, runtime_dir.resolve(), host, db_url=database,
                             driver_kinds=kinds, cgroup_parent=cgroup_parent,
                             oci_runtime=args.runtime, default_network=args.default_network,
                             subnet_pool=args.subnet_pool,
                             listen_host=listen[0] if listen else None,
                             listen=args.listen, join=join, heartbeat=args.heartbeat,
                             offline_after=args.offline_after,
                             ephemeral_grace=args.ephemeral_grace,
                             fingerprint=fingerprint)
        svc.cluster.start()
        svc.history.interval = args.history_interval
        svc.history.start()
        if svc.watchdog is not None:
            svc.watchdog.start()
        trimmer = Trimmer()   # freed native memory back to the kernel (glibc)
        trimmer.start()
        handler = LogHandler(svc.events, logging.INFO)
        for name in ("cumulo", "cumulod"):   # our records become ``logging`` events
            logging.getLogger(name).addHandler(handler)
        try:
            docker = None
            if docker_sock is not None:
                docker = docker_serve.context(svc, state_dir, args.docker_project, docker_path)
            log.info("cumulod %s serving %s (state %s, store %s)", __version__, sock_path,
                     state_dir, shown(svc.store.db.engine.url))
            if docker is not None:
                log.info("Docker API on %s (project %s)", docker_path, args.docker_project)
            # uvicorn handles SIGTERM, then raises it again once it has shut down: with
            # the default action, that would kill the daemon before the last exec
            # sessions are killed and the services closed
            signal.signal(signal.SIGTERM, _stopped)
            heap_dumps_on_usr2(state_dir)
            server = make_server(svc, args.log_level, tls_socket, tls, fingerprint,
                                 args.listen, state_dir / "reports")
            # the start-up's objects (modules, the app) live as long as the daemon: out of
            # the collector's way, so full collections come as often as the garbage of
            # the work needs them (netlink messages are cycles) instead of once its heap
            # grew by a quarter of the whole start-up's
            gc.freeze()
            asyncio.run(_serve(server, sockets, docker, docker_sock))
        finally:
            for name in ("cumulo", "cumulod"):
                logging.getLogger(name).removeHandler(handler)
            trimmer.stop()
            svc.close()
    finally:
        for s in [*sockets, *([tls_socket] if tls_socket else [])]:
            s.close()
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        if docker_sock is not None and docker_path is not None:
            docker_sock.close()
            with contextlib.suppress(FileNotFoundError):
                docker_path.unlink()


async def _serve(server: uvicorn.Server, sockets: list[socket.socket],
                 docker: DockerContext | None, docker_sock: socket.socket | None) -> None:
    """cumulod's API until it stops; the Docker API beside it on its own socket."""
    stopping = asyncio.Event()
    task = None
    if docker is not None and docker_sock is not None:
        task = asyncio.create_task(docker_serve.run(docker, docker_sock, stopping))
    try:
        await server.serve(sockets=sockets)
    finally:
        stopping.set()
        if task is not None:
            await task


def _stopped(_sig: int, _frame: object) -> None:
    """SIGTERM after uvicorn's shutdown: the daemon is already stopping."""


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except CumuloError as err:
        print(f"cumulod: error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
