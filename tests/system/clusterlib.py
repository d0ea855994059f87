"""A cluster of three cumulod for system tests, shared by the modules that need one:
each member in its own network namespace, veths to a bridge in a fourth namespace
(the "underlay"), one PostgreSQL database over the test server's unix socket. m1
enables the cluster, m2 and m3 join with tokens m1 printed; busybox is built on m1
and imported on the others. Traffic stays inside the namespaces made here."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.system.conftest import Daemon, leftovers

NAMES = ("m1", "m2", "m3")


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=30)


def member_daemon(top: Path, ns: str, ip: str, tag: str, extra: list[str],
                  offline_after: str = "3") -> Daemon:
    top.mkdir(parents=True, exist_ok=True)
    d = Daemon(state_dir=top / "state", socket=top / "cumulo.sock",
               cgroup_parent=f"cumulo-cl-{top.name}-{tag}", log=top / "cumulod.log",
               wrapper=["nsenter", f"--net=/run/netns/{ns}"], start_timeout=180)
    d.extra = [*d.extra, "--listen", f"{ip}:8443", "--heartbeat", "0.5",
               "--offline-after", offline_after, "--ephemeral-grace", "2", *extra]
    d.env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "CUMULO_SOCKET": str(d.socket)}
    return d


def make_underlay(hub: str, nss: list[str], prefix: str) -> None:
    """Namespaces ``hub`` and ``nss`` made; each of ``nss`` gets an eth0 at
    ``prefix.N/24`` (N from 1), veths to a bridge in ``hub``."""
    for ns in (hub, *nss):
        sh("ip", "netns", "add", ns)
    sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", hub, "link", "set", "br0", "up")
    for i, ns in enumerate(nss, start=1):
        sh("ip", "-n", hub, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        sh("ip", "-n", hub, "link", "set", f"p{i}", "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{prefix}.{i}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


@contextlib.contextmanager
def outside(nss: list[str], address: str) -> Iterator[str]:
    """One more namespace on the underlay of the members ``nss`` (made by
    ``three_members``) at ``address``/24: a host that is no member (a client of port
    forwards, a server NAT egress reaches). Removed at the end."""
    tag = nss[0][-6:]
    hub, ns = f"cu-t-clh{tag}", f"cu-t-clo{tag}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", hub, "link", "add", "po", "type", "veth", "peer", "name", "eth0",
           "netns", ns)
        sh("ip", "-n", hub, "link", "set", "po", "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@contextlib.contextmanager
def three_members(tmp: Path, pg_server: object, underlay: str = "10.78.0",
                  offline_after: str = "3") -> Iterator[tuple[list[Daemon], str, list[str]]]:
    """(the members' daemons, the store's URL, their namespaces); everything goes at
    the end, and no cgroup of theirs is left. ``offline_after``: seconds of silence
    until a member is offline (short for the tests that wait for it; on a loaded host
    a busy member may miss that many heartbeats)."""
    from tests import pg

    assert isinstance(pg_server, pg.PgServer)
    url = pg_server.create_database().replace("postgresql+psycopg://", "postgresql://")
    tag = uuid.uuid4().hex[:6]
    hub, nss = f"cu-t-clh{tag}", [f"cu-t-cl{i}{tag}" for i in (1, 2, 3)]
    daemons: list[Daemon] = []
    try:
        make_underlay(hub, nss, underlay)
        m1 = member_daemon(tmp / "m1", nss[0], f"{underlay}.1", tag, ["--database", url],
                           offline_after)
        daemons.append(m1)   # before it starts: one that never answers is stopped too
        m1.start()
        m1.cli("cluster", "enable", "m1")
        for i, name in ((2, "m2"), (3, "m3")):
            token = m1.cli("cluster", "add", name).stdout.strip()
            d = member_daemon(tmp / name, nss[i - 1], f"{underlay}.{i}", tag,
                              ["--join", token], offline_after)
            d.join_token = token  # type: ignore[attr-defined]  # (reused in a bad case)
            daemons.append(d)
            d.start()
        m1.cli("image", "build", "busybox")
        file = str(tmp / "busybox.tar.gz")
        m1.cli("image", "export", "busybox", file)
        for d in daemons[1:]:
            d.cli("image", "import", file, "--alias", "busybox")
        yield daemons, url, nss
    finally:
        try:
            stop_all(daemons, [hub, *nss])
        finally:
            pg_server.drop_database(url)
    for d in daemons:
        assert not leftovers(d.cgroup_parent)
        shutil.rmtree(d.state_dir, ignore_errors=True)


def stop_all(daemons: list[Daemon], namespaces: list[str]) -> None:
    """Every instance, network and group of the running ``daemons`` deleted, the daemons
    stopped (killed if need be), their cgroup parents and ``namespaces`` removed."""
    try:
        for d in daemons:
            try:
                if d.proc is not None and d.proc.poll() is None:
                    d.clear()
            finally:   # a failed delete still stops the daemon (it says what it left)
                d.stop()
                for cg in Path("/sys/fs/cgroup").glob(f"*/{d.cgroup_parent}"):
                    cg.rmdir()
    finally:
        for d in daemons:
            d.stop(signal.SIGKILL)
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def members(d: Daemon) -> dict[str, dict[str, object]]:
    return {m["name"]: m for m in json.loads(d.cli("cluster", "list", "--format",
                                                   "json").stdout)}


def listed(d: Daemon) -> dict[str, dict[str, object]]:
    return {i["name"]: i for i in json.loads(d.cli("list", "--format", "json").stdout)}


def poll(what: str, check: object, timeout: float = 60,
         why: Callable[[], object] | None = None) -> None:
    """Until ``check()``; at the timeout, fail saying ``what`` (and ``why()``: what
    there was instead)."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() >= deadline:
            raise AssertionError(what if why is None else f"{what}: {why()}")
        time.sleep(0.2)


def one_line_error(r: subprocess.CompletedProcess[str], text: str) -> None:
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], r.stderr
