"""Thin typed netlink calls: the only module that imports pyroute2.

Everything runs in the caller's network namespace unless a ``netns`` path is
given (``/proc/PID/ns/net`` or ``/run/netns/NAME``); pyroute2 then opens its
socket inside that namespace. Errors from the kernel
come out as ``DriverError`` with the object's name in the message.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from cumulo.errors import DriverError

IFNAMSIZ = 15
NTF_MASTER = 0x04   # an FDB entry of the bridge the port is on (not the port's own)


@contextlib.contextmanager
def _ipr(netns: Path | None = None, what: str = "netlink") -> Iterator[Any]:
    """An IPRoute socket in ``netns`` (or here); kernel errors become DriverError."""
    try:
        ipr = IPRoute(netns=str(netns), flags=0) if netns is not None else IPRoute()
    except (OSError, NetlinkError) as err:
        raise DriverError(f"{what}: cannot open netlink in {netns or 'this namespace'}: "
                          f"{err}") from err
    try:
        yield ipr
    except NetlinkError as err:
        raise DriverError(f"{what}: {os.strerror(err.code)}") from err
    finally:
        ipr.close()


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _check_name(name: str) -> None:
    if not name or len(name) > IFNAMSIZ or "/" in name:
        raise DriverError(f"invalid interface name {name!r}")


# --- links -------------------------------------------------------------------
def link_exists(name: str, netns: Path | None = None) -> bool:
    with _ipr(netns, f"link {name}") as ipr:
        return _index(ipr, name) is not None


def list_links(prefix: str, netns: Path | None = None) -> list[str]:
    """Names of the links whose name starts with ``prefix``."""
    with _ipr(netns, "list links") as ipr:
        names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
    return sorted(n for n in names if n and n.startswith(prefix))


def create_bridge(name: str, mac: str | None = None) -> None:
    """A Linux bridge named ``name`` (nothing if it exists), set up; ``mac``: its own
    address, set once (else the kernel takes its lowest port's, which changes)."""
    _check_name(name)
    with _ipr(None, f"bridge {name}") as ipr:
        if _index(ipr, name) is None:
            ipr.link("add", ifname=name, kind="bridge")
        idx = _index(ipr, name)
        if mac is not None:
            link = ipr.get_links(idx)[0]
            if str(link.get_attr("IFLA_ADDRESS")).lower() != mac.lower():
                ipr.link("set", index=idx, address=mac)
        ipr.link("set", index=idx, state="up")


def _add_address(ipr: Any, idx: int, iface: IPv4Interface) -> None:
    """``iface`` on link ``idx``, kept if already there."""
    have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)}
    if str(iface.ip) not in have:
        ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)


def set_address(name: str, iface: IPv4Interface, netns: Path | None = None) -> None:
    """Give link ``name`` the address ``iface`` (kept if already there)."""
    with _ipr(netns, f"address of {name}") as ipr:
        idx = _index(ipr, name)
        if idx is None:
            raise DriverError(f"link {name} does not exist")
        _add_address(ipr, idx, iface)


def delete_link(name: str, netns: Path | None = None) -> None:
    """Remove link ``name``; gone already is fine."""
    with _ipr(netns, f"delete link {name}") as ipr:
        idx = _index(ipr, name)
        if idx is not None:
            try:
                ipr.link("del", index=idx)
            except NetlinkError as err:   # a veth goes with its peer's namespace meanwhile
                if err.code != errno.ENODEV:
                    raise


def create_tap(name: str, bridge: str) -> None:
    """A persistent tap ``name`` on ``bridge``, up: QEMU opens it by name (the VM's NIC)."""
    _check_name(name)
    with _ipr(None, f"tap {name}") as ipr:
        if _index(ipr, name) is None:
            ipr.link("add", ifname=name, kind="tuntap", mode="tap", ifr={"no_pi": True})
        idx, br = _index(ipr, name), _index(ipr, bridge)
        if idx is None or br is None:
            raise DriverError(f"link {name if idx is None else bridge} does not exist")
        ipr.link("set", index=idx, master=br, state="up")


def create_veth_into(host_name: str, bridge: str | None, netns: Path, peer_name: str,
                     mac: str | None) -> None:
    """A veth pair: ``host_name`` here, up, enslaved to ``bridge`` (None: to nothing);
    ``peer_name`` in ``netns`` (with ``mac``, or the kernel's)."""
    _check_name(host_name)
    _check_name(peer_name)
    fd = os.open(netns, os.O_RDONLY)
    try:
        with _ipr(None, f"veth {host_name}") as ipr:
            br = _index(ipr, bridge) if bridge is not None else None
            if bridge is not None and br is None:
                raise DriverError(f"bridge {bridge} does not exist")
            peer: dict[str, Any] = {"ifname": peer_name, "net_ns_fd": fd}
            if mac is not None:
                peer["address"] = mac
            ipr.link("add", ifname=host_name, kind="veth", peer=peer)
            idx = _index(ipr, host_name)
            if br is not None:
                ipr.link("set", index=idx, master=br, state="up")
            else:
                ipr.link("set", index=idx, state="up")
    finally:
        os.close(fd)


# --- named network namespaces (net/l3ns.py) ----------------------------------
def netns_path(name: str) -> Path:
    return Path(pr_netns.NETNS_RUN_DIR) / name


def create_netns(name: str) -> Path:
    """The named namespace ``name`` (``/run/netns/NAME``), made if missing; its path."""
    path = netns_path(name)
    if not path.exists():
        try:
            pr_netns.create(name)
        except OSError as err:
            raise DriverError(f"cannot make network namespace {name}: {err}") from err
    return path


def remove_netns(name: str) -> None:
    """Unmount and remove the named namespace ``name`` (gone already is fine)."""
    if not netns_path(name).exists():
        return
    try:
        pr_netns.remove(name)
    except OSError as err:
        if err.errno != errno.ENOENT:
            raise DriverError(f"cannot remove network namespace {name}: {err}") from err


def list_netns(prefix: str) -> list[str]:
    """Named namespaces whose name starts with ``prefix``."""
    try:
        return sorted(n for n in pr_netns.listnetns() if n.startswith(prefix))
    except OSError:
        return []


def configure_nic(netns: Path, name: str, iface: IPv4Interface, gateway: IPv4Address) -> None:
    """Inside ``netns``: ``name`` up with ``iface``, default route via ``gateway``."""
    with _ipr(netns, f"{name} in {netns}") as ipr:
        idx = _index(ipr, name)
        if idx is None:
            raise DriverError(f"link {name} is missing in {netns}")
        _add_address(ipr, idx, iface)
        ipr.link("set", index=idx, state="up")
        if not ipr.get_default_routes(family=2):
            ipr.route("add", dst="0.0.0.0/0", gateway=str(gateway), oif=idx)


def link_up(name: str, netns: Path | None = None) -> None:
    """``name`` (in ``netns``) up; an error if it does not exist."""
    with _ipr(netns, f"{name} in {netns or 'this namespace'}") as ipr:
        idx = _index(ipr, name)
        if idx is None:
            raise DriverError(f"link {name} is missing in {netns or 'this namespace'}")
        ipr.link("set", index=idx, state="up")


STAT_KEYS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_dropped", "tx_dropped")


def link_stats(name: str, netns: Path | None = None) -> dict[str, int] | None:
    """The kernel's 64-bit counters of ``name``; None if the link is gone."""
    with _ipr(netns, f"counters of {name}") as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return None
        stats = ipr.get_links(idx)[0].get_attr("IFLA_STATS64")
        return {k: int(stats[k]) for k in STAT_KEYS} if stats is not None else None


def host_addresses(netns: Path | None = None) -> list[IPv4Interface]:
    """Every IPv4 address on the links of this (or ``netns``'s) namespace."""
    with _ipr(netns, "list addresses") as ipr:
        return [IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
                for a in ipr.get_addr(family=2)]


def clear_root_qdisc(name: str, netns: Path | None = None) -> None:
    """Remove ``name``'s root qdisc (none set, or link gone, is fine)."""
    with _ipr(netns, f"rate limit on {name}") as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return
        try:
            ipr.tc("del", index=idx, root=True)
        except NetlinkError as err:
            if err.code != errno.EINVAL:  # EINVAL: only the default qdisc is there
                raise


# --- htb shaping and ifb redirection (net/tc.py, net/shaping.py) -------------
HTB_ROOT, HTB_CLASS = 0x10000, 0x10010   # 1: and 1:10, the class all traffic goes to
INGRESS = 0xFFFF0000                      # ffff:, the ingress qdisc's handle
TC_H_ROOT = 0xFFFFFFFF
ETH_P_ALL = 0x0003


def _root_kind(ipr: Any, idx: int) -> str | None:
    for q in ipr.get_qdiscs(index=idx):
        if q["parent"] == TC_H_ROOT:
            return str(q.get_attr("TCA_KIND"))
    return None


def set_htb(name: str, bits: int, burst: int, quantum: int,
            netns: Path | None = None) -> None:
    """An htb root with one class of ``bits``/s (rate = ceil) that all traffic of ``name`` takes.

    A live change only replaces the class, so packets queued in it are kept.
    """
    with _ipr(netns, f"rate limit on {name}") as ipr:
        idx = _index(ipr, name)
        if idx is None:
            raise DriverError(f"link {name} does not exist")
        kind = _root_kind(ipr, idx)
        if kind != "htb":
            if kind not in (None, "noqueue", "pfifo_fast", "fq_codel", "mq"):
                ipr.tc("del", index=idx, root=True)
            ipr.tc("add", "htb", index=idx, handle=HTB_ROOT, default=HTB_CLASS & 0xFFFF)
        ipr.tc("replace-class", "htb", index=idx, handle=HTB_CLASS, parent=HTB_ROOT,
               rate=f"{bits}bit", ceil=f"{bits}bit", burst=burst, cburst=burst,
               quantum=quantum)


def create_ifb(name: str) -> None:
    """An ifb device ``name`` (kept if it exists), set up: the queue for a link's ingress."""
    _check_name(name)
    with _ipr(None, f"ifb {name}") as ipr:
        if _index(ipr, name) is None:
            ipr.link("add", ifname=name, kind="ifb")
        ipr.link("set", index=_index(ipr, name), state="up")


def redirect_ingress(name: str, target: str) -> None:
    """Everything ``name`` receives goes through ``target``'s egress queue (ingress + mirred).

    The filter is u32 matching every packet: the matchall classifier is not in
    every kernel (these hosts lack it), u32 is.
    """
    with _ipr(None, f"redirect {name} to {target}") as ipr:
        idx, to = _index(ipr, name), _index(ipr, target)
        if idx is None or to is None:
            raise DriverError(f"link {name if idx is None else target} does not exist")
        if not any(q["handle"] == INGRESS for q in ipr.get_qdiscs(index=idx)):
            ipr.tc("add", "ingress", index=idx, handle=INGRESS)
        if any(f.get_attr("TCA_KIND") == "u32" for f in ipr.get_filters(index=idx,
                                                                         parent=INGRESS)):
            return
        ipr.tc("add-filter", "u32", index=idx, parent=INGRESS, prio=1, protocol=ETH_P_ALL,
               keys=["0x0/0x0+0"], target=0x10001,
               action=[{"kind": "mirred", "direction": "egress", "action": "redirect",
                        "ifindex": to}])


def clear_ingress(name: str) -> None:
    """Drop ``name``'s ingress qdisc and its redirect (none, or link gone, is fine)."""
    with _ipr(None, f"ingress of {name}") as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return
        try:
            ipr.tc("del", "ingress", index=idx, handle=INGRESS)
        except NetlinkError as err:
            if err.code not in (errno.EINVAL, errno.ENOENT):
                raise


# --- VXLAN (net/vxlan.py) ----------------------------------------------------
FLOOD_MAC = "00:00:00:00:00:00"   # a VXLAN FDB entry for every unknown or broadcast frame


def create_vxlan(name: str, vni: int, local: str, port: int, bridge: str, mtu: int,
                 stale: str | None = None) -> None:
    """A VXLAN device ``name`` (id ``vni``, sending from ``local`` to UDP ``port``,
    learning off) on ``bridge``, up, with ``mtu``; one with other settings is made again.
    The kernel takes one device per id, address and port: another one named ``stale*``
    with this id is a leftover (a deleted network's whose id went to this one, not yet
    cleaned up here) and is removed."""
    _check_name(name)
    with _ipr(None, f"vxlan {name}") as ipr:
        idx, br = _index(ipr, name), _index(ipr, bridge)
        if br is None:
            raise DriverError(f"bridge {bridge} does not exist")
        if idx is not None:
            data = ipr.get_links(idx)[0].get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
            if (data is None or data.get_attr("IFLA_VXLAN_ID") != vni
                    or data.get_attr("IFLA_VXLAN_LOCAL") != local):
                ipr.link("del", index=idx)
                idx = None
        if idx is None:
            def add() -> None:
                ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local,
                         vxlan_port=port, vxlan_learning=0)

            try:
                add()
            except NetlinkError as err:
                if err.code != errno.EEXIST or not stale or not _drop_vxlans(ipr, vni, stale):
                    raise
                add()
            idx = _index(ipr, name)
        ipr.link("set", index=idx, master=br, mtu=mtu, state="up")
        ipr.link("set", index=br, mtu=mtu)


def _drop_vxlans(ipr: Any, vni: int, prefix: str) -> bool:
    """Delete the VXLAN devices with id ``vni`` named ``prefix*``; whether there was one."""
    found = False
    for link in ipr.get_links():
        info = link.get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
        if (str(link.get_attr("IFLA_IFNAME")).startswith(prefix) and data is not None
                and info.get_attr("IFLA_INFO_KIND") == "vxlan"
                and data.get_attr("IFLA_VXLAN_ID") == vni):
            ipr.link("del", index=link["index"])
            found = True
    return found


def flood_peers(name: str) -> list[str] | None:
    """The addresses ``name``'s all-zero FDB entries replicate to; None: no such link."""
    with _ipr(None, f"fdb of {name}") as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return None
        return sorted(str(e.get_attr("NDA_DST")) for e in ipr.fdb("dump", ifindex=idx)
                      if e.get_attr("NDA_LLADDR") == FLOOD_MAC and e.get_attr("NDA_DST"))


def set_flood_peers(name: str, peers: list[str]) -> None:
    """Exactly ``peers`` in ``name``'s all-zero FDB entries (head-end replication)."""
    have = flood_peers(name)
    if have is None:
        raise DriverError(f"link {name} does not exist")
    with _ipr(None, f"fdb of {name}") as ipr:
        idx = _index(ipr, name)
        for dst in sorted(set(peers) - set(have)):
            ipr.fdb("append", ifindex=idx, lladdr=FLOOD_MAC, dst=dst)
        for dst in sorted(set(have) - set(peers)):
            ipr.fdb("del", ifindex=idx, lladdr=FLOOD_MAC, dst=dst)


def forget_mac(bridge: str, mac: str, keep: str) -> list[str]:
    """Drop what ``bridge`` learned of ``mac`` on any port but ``keep`` (``bridge fdb del
    MAC dev PORT master``); the ports it was on. A MAC that moved here (a live migration
    over an overlay) is otherwise still sent out where it was, and frames for it that
    come in on that port are dropped, until the instance sends something."""
    mac = mac.lower()
    gone = []
    with _ipr(None, f"fdb of {bridge}") as ipr:
        br, port = _index(ipr, bridge), _index(ipr, keep)
        if br is None:
            raise DriverError(f"bridge {bridge} does not exist")
        for e in ipr.fdb("dump"):
            idx = int(e["ifindex"])
            if (str(e.get_attr("NDA_LLADDR")).lower() != mac or idx == port
                    or e.get_attr("NDA_MASTER") != br):
                continue
            try:
                ipr.fdb("del", ifindex=idx, lladdr=mac, flags=NTF_MASTER)
            except NetlinkError as err:
                if err.code != errno.ENOENT:   # aged out meanwhile
                    raise
            gone.append(ipr.get_links(idx)[0].get_attr("IFLA_IFNAME"))
    return gone


def mtu_of_address(address: str) -> int | None:
    """The MTU of the link holding ``address`` here; None if no link has it."""
    with _ipr(None, f"link of {address}") as ipr:
        for a in ipr.get_addr(family=2):
            if a.get_attr("IFA_ADDRESS") == address:
                return int(ipr.get_links(a["index"])[0].get_attr("IFLA_MTU"))
    return None


def set_mtu(name: str, mtu: int, netns: Path | None = None) -> None:
    with _ipr(netns, f"mtu of {name}") as ipr:
        idx = _index(ipr, name)
        if idx is None:
            raise DriverError(f"link {name} does not exist")
        ipr.link("set", index=idx, mtu=mtu)
