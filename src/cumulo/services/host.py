"""Everything one daemon owns, wired together: store, operations, drivers, services."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cumulo.cluster import image_pull, settings
from cumulo.cluster.membership import JoinToken, Membership
from cumulo.cluster.rebalancer import Rebalancer
from cumulo.cluster.recover import GRACE, Recovery
from cumulo.drivers.base import InstanceDriver
from cumulo.drivers.registry import DriverContext, create_driver
from cumulo.errors import ConflictError, NotFoundError
from cumulo.host.info import HostInfo
from cumulo.net import ipam
from cumulo.net.base import HostNetwork
from cumulo.services.checkpoints import CheckpointService
from cumulo.services.events import EventBus
from cumulo.services.history import History
from cumulo.services.identities import IdentityService
from cumulo.services.images import ImageService
from cumulo.services.instances import InstanceService
from cumulo.services.migrations import MigrationService
from cumulo.services.networks import NetworkService
from cumulo.services.operations import Operations
from cumulo.services.overlays import OVERLAY, Overlays
from cumulo.services.placement import Scheduler
from cumulo.services.projects import ProjectService
from cumulo.services.storage import StorageService
from cumulo.services.volumes import VolumeService
from cumulo.services.watchdog import Watchdog
from cumulo.store.cluster import ClusterStore
from cumulo.store.hosts import HostStore
from cumulo.store.identities import AuditStore, IdentityStore
from cumulo.store.members import MemberStore
from cumulo.store.repo import Store
from cumulo.store.volumes import VolumeStore

log = logging.getLogger(__name__)


@dataclass
class Services:
    store: Store
    ops: Operations
    host: HostInfo
    instances: InstanceService
    images: ImageService
    networks: NetworkService
    storage: StorageService
    volumes: VolumeService
    checkpoints: CheckpointService
    migrations: MigrationService
    events: EventBus
    history: History
    identities: IdentityService
    cluster: Membership
    scheduler: Scheduler   # cluster placement over the members table (store/members.py)
    projects: ProjectService
    watchdog: Watchdog | None = None   # started by the daemon (children that die)

    def close(self) -> None:
        self.cluster.stop()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.history.stop()
        self.events.close()
        self.ops.shutdown()
        self.identities.audit.close()   # what is queued is written
        self.store.close()


def build_services(state_dir: Path, runtime_dir: Path, host: HostInfo, *,
                   db_url: str | None = None, driver_kinds: dict[str, str] | None = None,
                   cgroup_parent: str = "cumulo", oci_runtime: str | None = None,
                   net_kind: str = "linux", default_network: bool = False,
                   subnet_pool: str | None = None, listen_host: str | None = None,
                   listen: str | None = None, join: JoinToken | None = None,
                   heartbeat: float | None = None, offline_after: float | None = None,
                   ephemeral_grace: float | None = None, fingerprint: str | None = None
                   ) -> Services:
    """``driver_kinds`` maps instance type to driver name (tests map container to fake);
    ``net_kind`` is ``linux`` (the kernel) or ``fake`` (records only); ``listen``: the
    HOST:PORT other members reach; ``join``: become a member of the cluster of that
    token before anything else; ``fingerprint``: of the certificate --listen serves
    (members pin it)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    runtime_dir.mkdir(parents=True, exist_ok=True)
    store = Store(db_url or f"sqlite:///{state_dir / 'cumulo.db'}")
    kinds = driver_kinds or {"container": "container", "vm": "vm", "appvm": "appvm",
                             "imagevm": "imagevm"}
    try:
        cluster = _membership(store, state_dir, host, sorted(kinds), listen, fingerprint,
                              join, heartbeat, offline_after)
    except BaseException:
        store.close()
        raise
    store.fail_unfinished_operations("the daemon stopped while this operation ran",
                                     cluster.member)
    events = EventBus()
    ops = Operations(store, events=events)
    ops.member = lambda: cluster.member
    drivers: dict[str, InstanceDriver] = {}
    for type_, kind in kinds.items():
        ctx = DriverContext(state_dir=state_dir / type_, runtime_dir=runtime_dir / type_,
                            cgroup_parent=cgroup_parent, host=host, oci_runtime=oci_runtime)
        drivers[type_] = create_driver(kind, ctx)
    image_root = state_dir / "images"
    images = ImageService(store, ops, image_root)
    host_net = _host_network(net_kind, state_dir, runtime_dir)
    networks = NetworkService(store, host_net, subnet_pool or ipam.DEFAULT_POOL,
                              Overlays(store, host_net, lambda: cluster.member,
                                       lambda: _addresses(cluster),
                                       lambda: _addresses(cluster, offline=True)))
    networks.reconcile()
    if default_network:
        networks.ensure_default(state_dir / "default-network.created")
    storage = StorageService(state_dir, VolumeStore(store.db))
    scheduler = cluster.scheduler = Scheduler(
        MemberStore(store.db, cluster.offline_after),
        strategy_of=lambda: settings.strategy(cluster.store.config()))
    instances = InstanceService(store, ops, drivers, host, state_dir, image_root, networks,
                                storage, cluster)
    instances.fetch_image = partial(image_pull.pull, cluster, images)
    instances.reconcile()
    cluster.on_beat.append(Recovery(cluster, instances, GRACE if ephemeral_grace is None
                                    else ephemeral_grace).run)
    cluster.on_beat.append(Rebalancer(cluster, instances).tick)   # its automatic mode
    cluster.on_beat.append(_network_sync(store, networks))
    volumes = VolumeService(storage, instances)
    identities = IdentityService(IdentityStore(store.db), AuditStore(store.db))
    migrations = MigrationService(instances, HostStore(store.db), listen_host, identities)
    migrations.recovery.start()   # migrations a killed daemon left half-way
    return Services(store, ops, host, instances, images, networks, storage, volumes,
                    CheckpointService(instances), migrations, events, History(instances),
                    identities, cluster, scheduler, ProjectService(store.projects, events),
                    Watchdog(instances, networks))


def _network_sync(store: Store, networks: NetworkService) -> Callable[[], None]:
    """In a cluster, a network another member created gets its bridge here too, an
    overlay's tunnels follow members that join, leave or come back, and the DHCP and DNS
    of an overlay follow NICs made or removed on other members, and the firewall
    follows security groups changed through another member (checked after each
    heartbeat)."""
    def state() -> tuple[set[str], tuple[object, ...]]:
        nets = store.list_networks()
        overlays = networks.overlays.signature() if networks.overlays else ()
        return {n.bridge for n in nets}, overlays
    seen, nics = state(), _overlay_nics(store)

    def sync() -> None:
        nonlocal seen, nics
        with networks.lock:   # not while this member creates or deletes one
            try:
                now, now_nics = state(), _overlay_nics(store)
                for bridge in sorted(seen[0] - now[0]):   # deleted through another member
                    networks.forget(bridge)
                if now != seen:
                    networks.reconcile()
                    seen = now
                if now_nics != nics:
                    there = {(n.project, n.name) for n in store.list_networks()}
                    for project, name in {k[:2] for k in now_nics ^ nics} & there:
                        networks.nics_changed(project, [name])   # (not a deleted one's)
                    nics = now_nics
            finally:   # groups and forwards changed through another member (no nft run
                networks.firewall.apply_quietly()   # if none), whatever failed above
    return sync


def _overlay_nics(store: Store) -> set[tuple[str, str, str, str, str]]:
    """(project, network, instance, MAC, IP) of every NIC on an overlay."""
    found = set()
    for n in store.list_networks():
        if n.type == OVERLAY:
            with contextlib.suppress(NotFoundError):   # deleted meanwhile
                found |= {(n.project, n.name, inst, nic.mac, nic.ip)
                          for inst, nic in store.network_nics(n.project, n.name)}
    return found


def _addresses(cluster: Membership, offline: bool = False) -> dict[str, str]:
    """Each member's cluster address (the host of its --listen), but offline ones'
    (unless ``offline``)."""
    if cluster.identity is None:
        return {}
    found = {m.name: _host(m.address) for m in cluster.store.list_members()
             if offline or cluster.state_of(m) != "offline"}
    if cluster.address:   # this member, even when its own heartbeat is late
        found[cluster.identity.member] = _host(cluster.address)
    return found


def _host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def _membership(store: Store, state_dir: Path, host: HostInfo, types: list[str],
                listen: str | None, fingerprint: str | None, join: JoinToken | None,
                heartbeat: float | None, offline_after: float | None) -> Membership:
    """This daemon's membership; a join happens here, before the daemon touches any
    instance (until then it would take the others' for its own)."""
    cluster = Membership(ClusterStore(store.db), HostStore(store.db), IdentityStore(store.db),
                         state_dir, host, types, listen, fingerprint)
    if heartbeat is not None:
        cluster.heartbeat_interval = heartbeat
    if offline_after is not None:
        cluster.offline_after = offline_after
    if join is not None and (cluster.identity is None or cluster.identity.member != join.name):
        cluster.join(join)
    if cluster.identity is None and store.db.engine.dialect.name != "sqlite" \
            and cluster.store.list_members():
        raise ConflictError("this store holds a cluster and this host is not one of its"
                            " members: join it with `cumulod --join TOKEN` (from `cumulo"
                            " cluster add NAME` on a member)")
    return cluster


def _host_network(kind: str, state_dir: Path, runtime_dir: Path | None = None) -> HostNetwork:
    """One nftables table per daemon, named after its state dir (several may coexist)."""
    if kind == "fake":
        from cumulo.net.fake import FakeNetwork

        return FakeNetwork()
    from cumulo.net.linux import LinuxNetwork

    return LinuxNetwork(hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8],
                        dns_dir=runtime_dir / "dnsmasq" if runtime_dir is not None else None)
