"""Plain records the services pass around; the store maps them to rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cumulo.domain.lifecycle import State
from cumulo.domain.limits import Limits


@dataclass
class Project:
    name: str
    description: str = ""
    created_at: datetime | None = None
    config: dict[str, str] = field(default_factory=dict)   # domain/projects.py


@dataclass
class Image:
    fingerprint: str                 # sha256 of the root filesystem tree
    kind: str = "container"          # container, app, vm-disk, kernel (images/kinds.py)
    os: str = ""
    release: str = ""
    architecture: str = ""
    description: str = ""
    size: int = 0
    command: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    properties: dict[str, str] = field(default_factory=dict)   # source, variant, format...


@dataclass
class Network:
    project: str
    name: str
    subnet: str                      # CIDR, e.g. 10.210.0.0/24
    gateway: str                     # the bridge's address, first host of the subnet
    bridge: str                      # host link name, cu-b<hex>
    isolated: bool = True            # no traffic to other networks, nor out (else: NAT out)
    created_at: datetime | None = None
    dns_domain: str = "cumulo"       # instances resolve NAME and NAME.<dns_domain>
    type: str = "bridge"             # bridge (this host's) or overlay (every member's, VXLAN)
    vni: int | None = None           # an overlay's VXLAN network identifier
    mtu: int | None = None           # an overlay's MTU (the underlay's less the encapsulation)
    own_netns: bool = False          # gateway, DHCP/DNS and NAT in a namespace of its own on
                                     # each host: its subnet overlaps another project's network


VNI_FIRST, VNI_LAST = 1, 2**24 - 1   # VXLAN network identifiers: 24 bits, 0 unused


@dataclass(frozen=True)
class Tunnel:
    """One member's side of an overlay: its VXLAN device, the address it sends from and
    the members it replicates floods to; ``state`` is ``up`` or what went wrong."""

    member: str
    state: str
    device: str = ""
    local: str = ""
    peers: tuple[str, ...] = ()


@dataclass
class Nic:
    """One NIC of an instance; MAC and IP are kept for the instance's whole life."""

    network: str                     # network name, in the instance's project
    index: int                       # eth<index> inside
    mac: str
    ip: str
    host_name: str = ""              # host end of the veth, cu-v<hex>
    groups: list[str] = field(default_factory=list)       # security groups (domain/acl.py)
    bandwidth: dict[str, int] = field(default_factory=dict)  # ingress/egress bit/s, burst bytes


@dataclass
class Instance:
    project: str
    name: str
    type: str
    image: str                       # fingerprint
    state: State = State.CREATING
    limits: Limits = field(default_factory=Limits)
    privileged: bool = False
    command: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)   # per type, e.g. vm: accel
    exit_code: int | None = None
    last_error: str | None = None
    created_at: datetime | None = None
    nics: list[Nic] = field(default_factory=list)
    # its root in a storage pool: {"pool": name, "copy": bool, "size": bytes or None};
    # None for instances made before pools existed (a plain overlay in the instance dir)
    root: dict[str, Any] | None = None
    location: str | None = None      # the cluster member that runs it (None: no cluster)
    origin: str | None = None        # the member it was evacuated from, until restored
    ephemeral: bool = False          # stateless: recreated from its image if its member is lost
    # its host id when it is not the derived one: kept by a rename (the runtime, cgroups and
    # files keep their names), or given to a new instance whose derived one a renamed holds
    fixed_host_id: str | None = None

    @property
    def host_id(self) -> str:
        """Unique on the host: names are [a-z0-9-], so '_' cannot be ambiguous."""
        return self.fixed_host_id or default_host_id(self.project, self.name)


def default_host_id(project: str, name: str) -> str:
    return f"{project}_{name}"


class OpStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass
class Operation:
    id: str
    description: str
    status: OpStatus = OpStatus.PENDING
    progress: float = 0.0
    message: str = ""
    error: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    project: str = "default"
    error_type: str | None = None   # the error's class (ConflictError...): its HTTP status

    @property
    def done(self) -> bool:
        return self.status in (OpStatus.SUCCESS, OpStatus.FAILURE)
