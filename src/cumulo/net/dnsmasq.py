"""DHCP and DNS for one network: one dnsmasq per bridge, in the daemon's own netns
(or the network's own, net/l3ns.py).

Each network gets a directory ``<runtime_dir>/dnsmasq/<bridge>/`` holding its
config, pid file, leases, and two files written from the store: ``dhcp-hosts``
(MAC -> IP, so a NIC always gets the address IPAM gave it) and ``hosts``
(``NAME`` and ``NAME.<domain>`` -> IP). dnsmasq listens on the bridge only
(never on lo or the host's links), answers only for names it knows on an
isolated network, and re-reads both files on SIGHUP. It runs daemonized, so it
outlives cumulod like instances do; a new cumulod finds it again by its pid file.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from cumulo.errors import DriverError, InvalidInputError, UnsupportedError

DEFAULT_DOMAIN = "cumulo"
LEASE_TIME = "1h"
START_TIMEOUT = 10.0
STOP_WAIT = 5.0
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class DnsHost:
    """One NIC as DHCP and DNS see it: the instance's name, MAC and IP."""

    name: str
    mac: str
    ip: IPv4Address


@dataclass(frozen=True)
class DnsSettings:
    """What one network's dnsmasq serves."""

    bridge: str
    subnet: IPv4Network
    gateway: IPv4Address
    domain: str = DEFAULT_DOMAIN
    upstream: bool = False   # forward unknown names to the host's resolvers (NAT networks)
    mtu: int | None = None   # told to DHCP clients (an overlay's)
    own_netns: bool = False  # runs in the network's namespace (net/l3ns.py)


def check_domain(text: str) -> str:
    """A DNS domain for a network's names: lower-case labels, like ``cumulo`` or ``lab.example``."""
    domain = text.strip().lower().rstrip(".")
    labels = domain.split(".")
    if (not domain or len(domain) > 253 or not all(_LABEL.fullmatch(lb) for lb in labels)
            or labels[-1].isdigit()):
        raise InvalidInputError(
            f"invalid DNS domain {text!r}: use dot-separated labels of a-z, 0-9 and '-'"
            " (1 to 63 characters, not starting or ending with '-'), e.g. cumulo or lab.example")
    return domain


def config_text(s: DnsSettings, d: Path, user: str, interface: str | None = None) -> str:
    """The whole dnsmasq config (one long option per line); nothing else is read.
    ``interface``: where it listens, if not on the bridge."""
    net = s.subnet
    lines = [
        f"interface={interface or s.bridge}", "except-interface=lo", "bind-interfaces",
        "no-hosts", "domain-needed", "bogus-priv", "strict-order", "no-ping",
        f"domain={s.domain}", f"local=/{s.domain}/", f"addn-hosts={d / 'hosts'}",
        f"dhcp-range={net.network_address},static,{net.netmask},{LEASE_TIME}",
        f"dhcp-option=option:router,{s.gateway}",
        f"dhcp-option=option:dns-server,{s.gateway}",
        f"dhcp-option=option:domain-search,{s.domain}",
        f"dhcp-hostsfile={d / 'dhcp-hosts'}", f"dhcp-leasefile={d / 'leases'}",
        "dhcp-authoritative", "dhcp-no-override",
        f"pid-file={d / 'pid'}", f"log-facility={d / 'log'}", f"user={user}",
    ]
    if s.mtu is not None:
        lines.append(f"dhcp-option=option:mtu,{s.mtu}")
    if not s.upstream:
        lines.append("no-resolv")   # an isolated network resolves its own names only
    return "\n".join(lines) + "\n"


def hosts_text(hosts: list[DnsHost], domain: str) -> str:
    return "".join(f"{h.ip} {h.name}.{domain} {h.name}\n" for h in sorted(hosts, key=_key))


def dhcp_hosts_text(hosts: list[DnsHost]) -> str:
    return "".join(f"{h.mac},{h.ip},{h.name}\n" for h in sorted(hosts, key=_key))


def stale_leases(leases: Path, hosts: list[DnsHost]) -> set[str]:
    """Lines of the lease file giving one of ``hosts``' addresses to another MAC, or an
    address to a MAC no host has any more (a NIC detached or deleted)."""
    owner = {str(h.ip): h.mac.lower() for h in hosts}
    try:
        lines = leases.read_text().splitlines()
    except OSError:
        return set()
    stale = set()
    for line in lines:
        fields = line.split()   # expiry, MAC, IP, name, client id
        if len(fields) >= 3 and fields[1].lower() != owner.get(fields[2]):
            stale.add(line)
    return stale


def _drop_leases(leases: Path, stale: set[str]) -> None:
    try:
        kept = [ln for ln in leases.read_text().splitlines() if ln not in stale]
        _write(leases, "".join(f"{ln}\n" for ln in kept))
    except OSError as err:
        raise DriverError(f"cannot rewrite the leases {leases}: {err}") from err


def _key(h: DnsHost) -> tuple[str, str]:
    return (h.name, str(h.ip))


def _write(path: Path, text: str) -> bool:
    """Replace ``path`` atomically (mode 0644); False if it already held ``text``."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def _searchable_by_others(path: Path) -> bool:
    """Every directory from / down to ``path`` lets other users through."""
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [path, *path.parents])


class Dnsmasq:
    """The dnsmasq processes of one daemon, one per bridge, under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def dir(self, bridge: str) -> Path:
        return self.root / bridge

    def _binary(self) -> str:
        found = shutil.which("dnsmasq", path="/usr/sbin:/usr/bin:/sbin:/bin")
        if found is None:
            raise UnsupportedError("DHCP and DNS on networks need dnsmasq: install dnsmasq-base")
        return found

    def _user(self, d: Path) -> str:
        """dnsmasq drops to its own user, which must re-read the hosts files on SIGHUP."""
        if not _searchable_by_others(d):
            return "root"  # a private state dir (tests under a 0700 tmp dir)
        for name in ("dnsmasq", "nobody"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                return name
        return "root"

    def pid(self, bridge: str) -> int | None:
        """The pid of this bridge's dnsmasq if it runs (checked against its command line)."""
        d = self.dir(bridge)
        try:
            pid = int((d / "pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        want = f"--conf-file={d / 'dnsmasq.conf'}".encode()
        return pid if want in cmdline else None

    def ensure(self, settings: DnsSettings, hosts: list[DnsHost], netns: Path | None = None,
               interface: str | None = None) -> None:
        """Running with ``settings`` and ``hosts``: started, reloaded or restarted;
        ``netns``: in that namespace, on ``interface`` there."""
        d = self.dir(settings.bridge)
        try:
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o755)
            conf_changed = _write(d / "dnsmasq.conf", config_text(settings, d, self._user(d),
                                                                interface))
            _write(d / "hosts", hosts_text(hosts, settings.domain))
            _write(d / "dhcp-hosts", dhcp_hosts_text(hosts))
        except OSError as err:
            raise DriverError(f"cannot write the dnsmasq files of {settings.bridge}: {err}"
                              ) from err
        pid = self.pid(settings.bridge)
        # an address given again to a new MAC while an old lease holds it: dnsmasq would
        # answer "no address available" until the lease ran out (SIGHUP keeps leases);
        # the lease of a NIC that is gone goes too
        stale = stale_leases(d / "leases", hosts)
        if pid is not None and not conf_changed and not stale:
            self._signal(pid, signal.SIGHUP)  # re-reads hosts and dhcp-hosts
            return
        if pid is not None:
            self._kill(settings.bridge, pid)
        if stale:
            _drop_leases(d / "leases", stale)
        self._start(settings.bridge, netns)

    def _start(self, bridge: str, netns: Path | None = None) -> None:
        d = self.dir(bridge)
        (d / "pid").unlink(missing_ok=True)
        # dnsmasq forks and its parent exits once the child is ready, or with the error
        try:
            enter = [] if netns is None else ["nsenter", f"--net={netns}"]
            r = subprocess.run([*enter, self._binary(), f"--conf-file={d / 'dnsmasq.conf'}"],
                               capture_output=True, text=True, timeout=START_TIMEOUT,
                               stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as err:
            raise DriverError(f"cannot start dnsmasq for {bridge}: {err}") from err
        if r.returncode != 0:
            lines = (r.stderr or r.stdout).strip().splitlines()
            raise DriverError(f"dnsmasq for {bridge} failed: "
                              f"{lines[0] if lines else f'exit status {r.returncode}'}")
        deadline = time.monotonic() + START_TIMEOUT
        while self.pid(bridge) is None:
            if time.monotonic() > deadline:
                raise DriverError(f"dnsmasq for {bridge} wrote no pid file")
            time.sleep(0.01)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _kill(self, bridge: str, pid: int) -> None:
        self._signal(pid, signal.SIGTERM)
        deadline, killed = time.monotonic() + STOP_WAIT, False
        while self.pid(bridge) == pid:
            if time.monotonic() > deadline:
                if killed:
                    raise DriverError(f"dnsmasq {pid} of {bridge} does not exit")
                self._signal(pid, signal.SIGKILL)
                deadline, killed = time.monotonic() + STOP_WAIT, True
            time.sleep(0.01)

    def stop(self, bridge: str) -> None:
        """No dnsmasq and no files left for ``bridge`` (nothing there is fine)."""
        pid = self.pid(bridge)
        if pid is not None:
            self._kill(bridge, pid)
        shutil.rmtree(self.dir(bridge), ignore_errors=True)

    def bridges(self) -> list[str]:
        """Bridges that have a dnsmasq directory (running or not)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())
