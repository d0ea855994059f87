"""Security groups: named lists of allow rules that NICs take (checked user input)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Network

from cumulo.errors import InvalidInputError

PROTOCOLS = ("tcp", "udp", "icmp", "any")
DIRECTIONS = ("ingress", "egress")


@dataclass(frozen=True)
class AclRule:
    """Allow traffic: ``peer`` is the source of ingress, the destination of egress."""

    direction: str = "ingress"
    protocol: str = "any"
    ports: tuple[int, int] | None = None      # tcp/udp destination port range
    cidr: str | None = None                   # peer address range; None: any
    group: str | None = None                  # peer: NICs in this security group

    def describe(self) -> str:
        peer = f"group {self.group}" if self.group else (self.cidr or "anywhere")
        ports = "" if self.ports is None else (
            f" port {self.ports[0]}" if self.ports[0] == self.ports[1]
            else f" ports {self.ports[0]}-{self.ports[1]}")
        where = "from" if self.direction == "ingress" else "to"
        return f"{self.direction} {self.protocol}{ports} {where} {peer}"


def parse_ports(text: str) -> tuple[int, int]:
    """``80`` or ``8000-8080`` to an inclusive range."""
    m = re.fullmatch(r"\s*(\d{1,5})\s*(?:-\s*(\d{1,5})\s*)?", text)
    if m is None:
        raise InvalidInputError(f"invalid port range {text!r}: use 80 or 8000-8080")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if not 1 <= lo <= hi <= 65535:
        raise InvalidInputError(f"invalid port range {text!r}: ports are 1 to 65535, low-high")
    return lo, hi


def make_rule(direction: str, protocol: str, ports: str | None, cidr: str | None,
              group: str | None) -> AclRule:
    """A checked rule from user input; one clear error for each bad field."""
    if direction not in DIRECTIONS:
        raise InvalidInputError(f"invalid direction {direction!r}: use ingress or egress")
    if protocol not in PROTOCOLS:
        raise InvalidInputError(f"invalid protocol {protocol!r}: use {', '.join(PROTOCOLS)}")
    span = None
    if ports:
        if protocol not in ("tcp", "udp"):
            raise InvalidInputError("ports need --protocol tcp or udp")
        span = parse_ports(ports)
    if cidr and group:
        raise InvalidInputError("give a CIDR or a group as the peer, not both")
    if cidr:
        try:
            cidr = str(IPv4Network(cidr, strict=False))
        except ValueError as err:
            raise InvalidInputError(f"invalid CIDR {cidr!r}: {err}") from None
    return AclRule(direction=direction, protocol=protocol, ports=span, cidr=cidr or None,
                   group=group or None)



@dataclass
class SecurityGroup:
    project: str
    name: str
    description: str = ""
    rules: list[AclRule] = field(default_factory=list)
    created_at: datetime | None = None
