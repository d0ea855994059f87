"""Wire schemas of the REST API (pydantic). Unknown fields are refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsIn(Strict):
    cpu: float | None = Field(None, description="CPUs worth of time, fractions allowed")
    cpu_weight: int | None = Field(None, description="relative CPU share, 1..10000")
    cpuset: str | None = Field(None, description="CPUs it may run on, e.g. 0-1")
    memory: int | str | None = Field(None, description="bytes or a size like 256MiB")
    memory_swap: int | str | None = Field(None, description="memory+swap, bytes or a size")
    pids: int | None = Field(None, description="max processes")
    io_weight: int | None = Field(None, description="relative block I/O share, 10..1000")


class NicIn(Strict):
    network: str = Field(description="network name in the same project")
    ip: str | None = Field(None, description="static IPv4 address; default: the next free one")
    limit_ingress: str | None = Field(None, description="cap on what the instance receives, "
                                                        "e.g. 20Mbit")
    limit_egress: str | None = Field(None, description="cap on what the instance sends")
    limit_burst: str | None = Field(None, description="bucket size, e.g. 64k (default: 20 ms)")


class InstanceCreate(Strict):
    name: str
    image: str
    type: str = "container"
    limits: LimitsIn = LimitsIn()
    privileged: bool = False
    command: list[str] | None = None
    options: dict[str, str] = Field(
        {}, description="per type: a vm takes accel (auto|kvm|tcg), machine (microvm|pc|q35)"
                        " and io (paravirt|emulated)")
    start: bool = False
    networks: list[NicIn] | None = Field(
        None, description="one NIC per entry; [] loopback only; default: the network "
                          "'default' if the project has one, else loopback only")
    pool: str | None = Field(None, description="storage pool of the root (default: default)")
    full_copy: bool = Field(False, alias="copy",
                            description="a full copy of the image instead of a clone of it")
    disk: int | str | None = Field(None, description="root size cap: bytes or a size like 2GiB")
    ssh_key: str | None = Field(None, description="vm, system container: SSH public"
                                " key(s), authorized_keys lines, for root in the guest")
    user_data: str | None = Field(
        None, description="vm booting its own disk, system container: cloud-init user-data for"
                          " its NoCloud seed (a #cloud-config YAML document or a #! script)")
    cloud_config: dict[str, Any] | None = Field(
        None, description="vm booting its own disk, system container: cloud-config keys"
                          " merged into the user-data (ssh_authorized_keys add up)")
    ephemeral: bool = Field(False, description="stateless: in a cluster, recreated from its"
                                               " image on another member if its own is lost")
    placement_group: str | None = Field(
        None, description="in a cluster: a placement group of the project (spread: apart from"
                          " its other instances, compact: together)")


class InstanceStateChange(Strict):
    action: Literal["start", "stop", "restart", "pause", "resume"]
    timeout: float = Field(30.0, ge=0, le=3600)
    force: bool = False


class InstancePatch(Strict):
    limits: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, str | None] = Field(
        default_factory=dict, description="the options that may change (cluster.evacuate);"
        " null takes the default again")


class Usage(BaseModel):
    cpu_time_ns: int | None = None
    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None
    pids: int | None = None


class NicCounters(BaseModel):
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    rx_dropped: int
    tx_dropped: int


class NicOut(BaseModel):
    network: str
    index: int
    mac: str
    ip: str
    host_name: str
    groups: list[str] = Field([], description="security groups of the NIC")
    bandwidth: dict[str, int] = Field({}, description="ingress/egress bit/s, burst bytes")
    counters: NicCounters | None = Field(
        None, description="as the instance sees it; only on a single instance while running")


class InstanceOut(BaseModel):
    name: str
    project: str
    type: str
    image: str
    state: str
    limits: dict[str, Any]
    privileged: bool
    command: list[str]
    options: dict[str, str]
    exit_code: int | None
    last_error: str | None
    created_at: datetime | None
    pid: int | None = None
    usage: Usage | None = None
    nics: list[NicOut] = []
    root: dict[str, Any] | None = Field(
        None, description="storage of its root: pool, copy (bool), size (bytes or null)")
    details: dict[str, Any] | None = Field(
        None, description="per type, live: a VM's footprint (qemu_rss_bytes, qemu_pss_bytes,"
                          " qemu_threads, initramfs_bytes) and balloon_actual_bytes")
    location: str | None = Field(None, description="in a cluster: the member that runs it")
    ephemeral: bool = Field(False, description="stateless: recreated from its image on"
                                               " another member if its own is lost")


class ExecIn(Strict):
    command: list[str] = Field(min_length=1)
    env: dict[str, str] = {}
    cwd: str = "/"
    tty: bool = False
    rows: int = Field(24, ge=1, le=1000)
    cols: int = Field(80, ge=1, le=1000)
    stdin: str = Field("", description="bytes sent to the command's stdin (non-streaming exec)")
    timeout: float = Field(60.0, gt=0, le=3600)


class ExecOut(BaseModel):
    exit_code: int
    stdout: str
    stderr: str


class HistoryPoint(BaseModel):
    time: float = Field(description="unix time of the reading")
    cpu_seconds: float | None = Field(description="CPU time used since start")
    cpu_usage: float | None = Field(description="CPUs used since the point before")
    memory_bytes: int | None
    processes: int | None
    disk_read_bytes: int | None
    disk_write_bytes: int | None
    rx_bytes: int = Field(description="received over all NICs (as the instance sees it)")
    tx_bytes: int


class HistoryOut(BaseModel):
    interval: float = Field(description="seconds between readings")
    points: list[HistoryPoint] = Field(description="oldest first")


class ImageBuild(Strict):
    builder: str = Field(description="busybox, debian/<release> (e.g. debian/12), app or kernel")
    alias: str | None = None
    variant: str | None = Field(None, description="debian: minbase (default), apt, standard...")
    packages: list[str] = Field([], description="debian: extra packages to install")
    binary: str | None = Field(None, description="app: absolute path of the program on the host")
    profile: str | None = Field(None, description="kernel: what the kernel is for (app)")
    features: list[str] = Field([], description="kernel: fragments to add (net, block, rng)")
    vm: bool = Field(False, description="debian: a disk VMs boot through firmware (GRUB,"
                                        " the distribution's kernel)")


class ImageOut(BaseModel):
    fingerprint: str
    kind: str
    os: str
    release: str
    architecture: str
    description: str
    size: int
    command: list[str]
    aliases: list[str]
    created_at: datetime | None
    properties: dict[str, str] = {}


class AliasIn(Strict):
    name: str
    target: str


class OperationOut(BaseModel):
    id: str
    description: str
    status: str
    progress: float
    message: str
    error: str | None
    resources: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None
    project: str = "default"
    error_type: str | None = None   # a failure's error class (ConflictError...)


class ErrorOut(BaseModel):
    error: str
    type: str


class ServerOut(BaseModel):
    api_version: str
    version: str
    instance_types: list[str]
    certificate_fingerprint: str | None = Field(
        None, description="sha256 of the certificate --listen serves (what clients pin)")


class CheckpointIn(Strict):
    file: str | None = Field(None, description="absolute path on the daemon's host; default: "
                                               "a file in the instance's own dir")


class BandwidthIn(Strict):
    network: str | None = Field(None, description="only the NIC on this network; default: all")
    ingress: str | None = Field(None, description='e.g. 20Mbit; "none" lifts the cap')
    egress: str | None = None
    burst: str | None = Field(None, description="e.g. 64k")


class NicAttachIn(Strict):
    network: str
    name: str | None = Field(None, description="eth<N> inside; default: the first free one")
    ip: str | None = Field(None, description="static IPv4 address; default: the next free")


class NetworkCreate(Strict):
    name: str
    subnet: str | None = Field(None, description="IPv4 CIDR; default: a free /24 of the pool")
    dns_domain: str | None = Field(
        None, description="instances resolve NAME and NAME.<dns_domain>; default: cumulo")
    nat: bool = Field(False, description="masquerade traffic out of the subnet; "
                                         "default: isolated (no traffic out)")
    type: str = Field("bridge", description="bridge (this host's), or overlay: one"
                                            " segment over every cluster member (VXLAN)")
    vni: int | None = Field(None, description="an overlay's VXLAN id; default: the lowest"
                                              " free one")
    mtu: int | None = Field(None, description="an overlay's MTU; default: the underlay's"
                                              " less 50 (the VXLAN headers)")


class TunnelOut(BaseModel):
    member: str
    state: str = Field(description="up, member offline, or what failed")
    device: str
    local: str = Field(description="the address the member's tunnel sends from")
    peers: list[str] = Field(description="the members' addresses it floods to")


class NetworkOut(BaseModel):
    name: str
    project: str
    subnet: str
    gateway: str
    bridge: str
    isolated: bool
    created_at: datetime | None
    used_by: list[str] = []
    dns_domain: str = "cumulo"
    nat: bool = False
    type: str = "bridge"
    vni: int | None = None
    mtu: int | None = None
    own_netns: bool = Field(False, description="its gateway, DHCP/DNS and NAT live in a"
                            " network namespace of its own on each host: its subnet"
                            " overlaps another project's network")
    tunnels: list[TunnelOut] = []


class PoolOut(BaseModel):
    name: str
    driver: str
    path: str
    used: int = Field(description="bytes its files really take on disk")
    free: int = Field(description="bytes free on the filesystem holding it")
    total: int
    roots: int = Field(description="instance roots in it")
    volumes: int


class VolumeCreate(Strict):
    name: str
    size: int | str = Field(description="bytes or a size like 1GiB")
    pool: str | None = Field(None, description="default: the default pool")


class VolumeResize(Strict):
    size: int | str = Field(description="new size; never below what is in use")


class AttachmentIn(Strict):
    instance: str
    path: str = Field("", description="mount point inside a container; empty for a VM (disk)")
    shared: bool = Field(False, description="allow several running instances at once")


class AttachmentOut(BaseModel):
    instance: str
    path: str
    shared: bool


class VolumeOut(BaseModel):
    name: str
    project: str
    pool: str
    size: int
    used: int | None = Field(None, description="bytes in use in its filesystem")
    created_at: datetime | None
    attachments: list[AttachmentOut]


class SnapshotIn(Strict):
    name: str
    stateful: bool = Field(False, description="a running VM: save its memory and device"
                                             " state too, so a restore continues it")


class SnapshotOut(BaseModel):
    name: str
    stateful: bool = False
