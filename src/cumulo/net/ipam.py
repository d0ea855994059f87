"""IP address management, pure: subnets, overlaps, the default pool, free addresses.

No I/O here: callers pass in what is in use (other networks' subnets, the
host's own addresses) and get a decision or a ``InvalidInputError`` a user can read.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from cumulo.errors import ConflictError, InvalidInputError

DEFAULT_POOL = "10.210.0.0/16"
DEFAULT_PREFIX = 24
MIN_PREFIX, MAX_PREFIX = 8, 29  # a /30 leaves no room for a gateway and two instances


def parse_subnet(text: str) -> IPv4Network:
    """A subnet in CIDR form (``10.0.5.0/24``), with host bits zero."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise InvalidInputError(
            f"invalid subnet {text!r}: use IPv4 CIDR notation like 10.20.30.0/24") from None
    if not isinstance(net, IPv4Network):
        raise InvalidInputError(f"invalid subnet {text!r}: only IPv4 subnets are supported")
    if "/" not in text:
        raise InvalidInputError(f"invalid subnet {text!r}: give a prefix length, e.g. /24")
    if str(net.network_address) != text.strip().split("/")[0]:
        raise InvalidInputError(
            f"invalid subnet {text!r}: host bits are set, did you mean {net}?")
    if not MIN_PREFIX <= net.prefixlen <= MAX_PREFIX:
        raise InvalidInputError(
            f"invalid subnet {text!r}: prefix length must be /{MIN_PREFIX} to /{MAX_PREFIX}")
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified:
        raise InvalidInputError(f"invalid subnet {text!r}: not a unicast range instances can use")
    return net


def parse_address(text: str) -> IPv4Address:
    try:
        return IPv4Address(text.strip())
    except ValueError:
        raise InvalidInputError(
            f"invalid IP address {text!r}: use dotted IPv4 like 10.20.30.5") from None


def gateway_of(net: IPv4Network) -> IPv4Address:
    """The bridge's own address: the first host of the subnet."""
    return next(net.hosts())


def overlapping(net: IPv4Network, others: Iterable[IPv4Network]) -> IPv4Network | None:
    """The first of ``others`` that shares an address with ``net``, if any."""
    return next((o for o in others if net.overlaps(o)), None)


def check_free(net: IPv4Network, networks: dict[str, IPv4Network],
               host: Iterable[IPv4Interface]) -> None:
    """Refuse a subnet that overlaps another network's or one on the host's interfaces."""
    for name, other in networks.items():
        if net.overlaps(other):
            raise ConflictError(f"subnet {net} overlaps {other} of network {name!r}")
    for iface in host:
        if iface.network.prefixlen > 0 and net.overlaps(iface.network) \
                and not iface.ip.is_loopback:
            raise ConflictError(f"subnet {net} overlaps {iface.network}, in use on this host")


def pick_subnet(networks: Iterable[IPv4Network], host: Iterable[IPv4Interface],
                pool: str = DEFAULT_POOL, prefix: int = DEFAULT_PREFIX) -> IPv4Network:
    """The first /``prefix`` of ``pool`` that overlaps nothing in use."""
    taken = [*networks, *(i.network for i in host if not i.ip.is_loopback)]
    for candidate in IPv4Network(pool).subnets(new_prefix=prefix):
        if overlapping(candidate, taken) is None:
            return candidate
    raise ConflictError(f"no free /{prefix} left in the address pool {pool}: give --subnet")


def next_free(net: IPv4Network, used: Iterable[IPv4Address]) -> IPv4Address:
    """The lowest host address after the gateway that nobody uses."""
    taken = {gateway_of(net), *used}
    for addr in net.hosts():
        if addr not in taken:
            return addr
    raise ConflictError(f"network {net} has no free address left")


def check_address(net: IPv4Network, addr: IPv4Address, used: Iterable[IPv4Address]) -> None:
    """A static address must be a host of ``net``, not the gateway, not taken."""
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise InvalidInputError(f"address {addr} is not a usable host address of {net}")
    if addr == gateway_of(net):
        raise InvalidInputError(f"address {addr} is the gateway of {net}")
    if addr in set(used):
        raise ConflictError(f"address {addr} is already used on {net}")


def mac_for(seed: bytes) -> str:
    """A locally administered unicast MAC derived from ``seed`` (stable across restarts)."""
    digest = hashlib.sha256(seed).digest()
    return ":".join(f"{b:02x}" for b in (0x0A, 0xCE, *digest[:4]))
