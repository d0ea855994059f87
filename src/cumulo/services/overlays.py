"""Overlay networks: one layer-2 segment over every cluster member, joined by VXLAN.

The network's row (subnet, VNI, MTU) is cluster-wide in the shared store, and so are
its NICs: one address plan. Each member gives the network its bridge (the same
gateway address and MAC everywhere) and a VXLAN device sending from its cluster
address, flooding to every other online member (``plan``); it records what it set up
in the store, which ``cumulo network info`` shows. Members follow membership changes
after each heartbeat (services/host.py: ``_network_sync``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cumulo.domain.models import VNI_FIRST, VNI_LAST, Network, Tunnel
from cumulo.errors import ConflictError, CumuloError, InvalidInputError, UnsupportedError
from cumulo.net import vxlan
from cumulo.net.base import HostNetwork
from cumulo.store.repo import Store

log = logging.getLogger(__name__)
OVERLAY, BRIDGE = "overlay", "bridge"
TYPES = (BRIDGE, OVERLAY)

Addresses = Callable[[], dict[str, str]]   # member -> cluster address, of online members


def plan(network: Network, member: str, addresses: dict[str, str]) -> vxlan.TunnelPlan:
    """``member``'s side of ``network``: from its address to every other member's."""
    if network.vni is None or network.mtu is None:
        raise ConflictError(f"network {network.name!r} is no overlay")
    if member not in addresses:
        raise ConflictError(f"member {member!r} has no cluster address")
    return vxlan.TunnelPlan(
        bridge=network.bridge, vni=network.vni, local=addresses[member],
        peers=tuple(sorted({a for m, a in addresses.items() if m != member})),
        mtu=network.mtu)


def check_vni(vni: int | None) -> None:
    if vni is not None and not VNI_FIRST <= vni <= VNI_LAST:
        raise InvalidInputError(f"invalid VNI {vni}: VXLAN takes {VNI_FIRST} to {VNI_LAST}")


def overlay_mtu(underlay: int, wanted: int | None) -> int:
    """The MTU inside: ``wanted``, or the underlay's less the encapsulation; refused when
    the frame would not fit in the underlay or is below what IPv4 needs."""
    most = underlay - vxlan.OVERHEAD
    if most < vxlan.MIN_MTU:
        raise UnsupportedError(f"the underlay's MTU {underlay} leaves {most} inside VXLAN"
                               f" ({vxlan.OVERHEAD} bytes of headers): below {vxlan.MIN_MTU}")
    if wanted is None:
        return most
    if wanted > most:
        raise InvalidInputError(f"MTU {wanted} is too large for the encapsulation: the"
                                f" underlay carries {underlay}, VXLAN takes {vxlan.OVERHEAD},"
                                f" so at most {most}")
    if wanted < vxlan.MIN_MTU:
        raise InvalidInputError(f"MTU {wanted} is too small: at least {vxlan.MIN_MTU}")
    return wanted


class Overlays:
    """This member's side of every overlay network."""

    def __init__(self, store: Store, host_net: HostNetwork, member: Callable[[], str | None],
                 addresses: Addresses, every: Addresses | None = None) -> None:
        self.store, self.host_net = store, host_net
        self.member, self.addresses = member, addresses
        self.every = every or addresses   # offline members' addresses too

    def members(self) -> tuple[str | None, dict[str, str]]:
        """This member (None: in no cluster) and every member's cluster address."""
        me = self.member()
        return me, (self.every() if me is not None else {})

    def _me(self) -> tuple[str, dict[str, str]]:
        me = self.member()
        if me is None:
            raise UnsupportedError("an overlay network spans a cluster: this host is in no"
                                   " cluster (`cumulo cluster enable` first)")
        return me, self.addresses()

    def check_new(self, vni: int | None, mtu: int | None) -> int:
        """Refuse a new overlay that cannot be (no cluster, bad VNI or MTU); its MTU."""
        me, addresses = self._me()
        check_vni(vni)
        local = addresses.get(me)
        underlay = self.host_net.underlay_mtu(local) if local else None
        if underlay is None:
            raise ConflictError(f"no link of this host holds its cluster address {local}")
        return overlay_mtu(underlay, mtu)

    def ensure(self, network: Network) -> None:
        """This member's tunnel for ``network``, recorded in the store (an error too)."""
        me, addresses = self._me()
        p = plan(network, me, addresses)
        try:
            self.host_net.ensure_tunnel(p)
        except CumuloError as err:
            self._record(network, Tunnel(me, f"error: {err}"[:255], local=p.local))
            raise
        self._record(network, Tunnel(me, "up", vxlan.device_name(network.bridge), p.local,
                                     p.peers))

    def _record(self, network: Network, tunnel: Tunnel) -> None:
        try:
            self.store.set_tunnel(network.project, network.name, tunnel)
        except CumuloError as err:   # deleted meanwhile, or the store away for a moment
            log.warning("cannot record the tunnel of %s: %s", network.name, err)

    def sync(self) -> None:
        """Every overlay's tunnel as membership says now (a member joined, left, came back)."""
        if self.member() is None:
            return
        for n in self.store.list_networks():
            if n.type == OVERLAY:
                try:
                    self.ensure(n)
                except CumuloError as err:
                    log.error("cannot set up the tunnel of overlay %s: %s", n.name, err)

    def tunnels(self, network: Network) -> list[Tunnel]:
        """Each member's side, as it last recorded it; a member that is offline now is
        said so (its tunnels are out of the others' floods)."""
        online = self.addresses() if self.member() is not None else {}
        return [t if t.member in online else Tunnel(t.member, "member offline", t.device,
                                                    t.local, t.peers)
                for t in self.store.tunnels(network.project, network.name)]

    def signature(self) -> tuple[object, ...]:
        """What the tunnels depend on: the overlays and the members' addresses."""
        if self.member() is None:
            return ()
        nets = tuple((n.bridge, n.vni) for n in self.store.list_networks() if n.type == OVERLAY)
        return nets, tuple(sorted(self.addresses().items())) if nets else ()
