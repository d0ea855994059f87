"""Everything one daemon owns, wired together: store, operations, drivers, services."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from cumulo.drivers.base import InstanceDriver
from cumulo.drivers.registry import DriverContext, create_driver
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
from cumulo.services.placement import Scheduler
from cumulo.services.projects import ProjectService
from cumulo.services.storage import StorageService
from cumulo.services.volumes import VolumeService
from cumulo.services.watchdog import Watchdog
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
    scheduler: Scheduler   # cluster placement over the members table (store/members.py)
    projects: ProjectService
    watchdog: Watchdog | None = None   # started by the daemon (children that die)

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        self.history.stop()
        self.events.close()
        self.ops.shutdown()
        self.store.close()


def build_services(state_dir: Path, runtime_dir: Path, host: HostInfo, *,
                   db_url: str | None = None, driver_kinds: dict[str, str] | None = None,
                   cgroup_parent: str = "cumulo", oci_runtime: str | None = None,
                   net_kind: str = "linux", default_network: bool = False,
                   subnet_pool: str | None = None, listen_host: str | None = None) -> Services:
    """``driver_kinds`` maps instance type to driver name (tests map container to fake);
    ``net_kind`` is ``linux`` (the kernel) or ``fake`` (records only)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    runtime_dir.mkdir(parents=True, exist_ok=True)
    store = Store(db_url or f"sqlite:///{state_dir / 'cumulo.db'}")
    store.fail_unfinished_operations("the daemon stopped while this operation ran")
    events = EventBus()
    ops = Operations(store, events=events)
    kinds = driver_kinds or {"container": "container", "vm": "vm", "appvm": "appvm",
                             "imagevm": "imagevm"}
    drivers: dict[str, InstanceDriver] = {}
    for type_, kind in kinds.items():
        ctx = DriverContext(state_dir=state_dir / type_, runtime_dir=runtime_dir / type_,
                            cgroup_parent=cgroup_parent, host=host, oci_runtime=oci_runtime)
        drivers[type_] = create_driver(kind, ctx)
    image_root = state_dir / "images"
    images = ImageService(store, ops, image_root)
    networks = NetworkService(store, _host_network(net_kind, state_dir, runtime_dir),
                              subnet_pool or ipam.DEFAULT_POOL)
    networks.reconcile()
    if default_network:
        networks.ensure_default(state_dir / "default-network.created")
    storage = StorageService(state_dir, VolumeStore(store.db))
    instances = InstanceService(store, ops, drivers, host, state_dir, image_root, networks,
                                storage)
    instances.reconcile()
    volumes = VolumeService(storage, instances)
    identities = IdentityService(IdentityStore(store.db), AuditStore(store.db))
    migrations = MigrationService(instances, HostStore(store.db), listen_host, identities)
    migrations.recovery.start()   # migrations a killed daemon left half-way
    return Services(store, ops, host, instances, images, networks, storage, volumes,
                    CheckpointService(instances), migrations, events, History(instances),
                    identities, Scheduler(MemberStore(store.db)),
                    ProjectService(store.projects, events), Watchdog(instances, networks))


def _host_network(kind: str, state_dir: Path, runtime_dir: Path | None = None) -> HostNetwork:
    """One nftables table per daemon, named after its state dir (several may coexist)."""
    if kind == "fake":
        from cumulo.net.fake import FakeNetwork

        return FakeNetwork()
    from cumulo.net.linux import LinuxNetwork

    return LinuxNetwork(hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8],
                        dns_dir=runtime_dir / "dnsmasq" if runtime_dir is not None else None)
