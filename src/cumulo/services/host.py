"""Everything one daemon owns, wired together: store, operations, drivers, services."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cumulo.drivers.base import InstanceDriver
from cumulo.drivers.registry import DriverContext, create_driver
from cumulo.host.info import HostInfo
from cumulo.services.images import ImageService
from cumulo.services.instances import InstanceService
from cumulo.services.operations import Operations
from cumulo.store.repo import Store

log = logging.getLogger(__name__)


@dataclass
class Services:
    store: Store
    ops: Operations
    host: HostInfo
    instances: InstanceService
    images: ImageService

    def close(self) -> None:
        self.ops.shutdown()
        self.store.close()


def build_services(state_dir: Path, runtime_dir: Path, host: HostInfo, *,
                   db_url: str | None = None, driver_kinds: dict[str, str] | None = None,
                   cgroup_parent: str = "cumulo", oci_runtime: str | None = None) -> Services:
    """``driver_kinds`` maps instance type to driver name (tests map container to fake)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    runtime_dir.mkdir(parents=True, exist_ok=True)
    store = Store(db_url or f"sqlite:///{state_dir / 'cumulo.db'}")
    store.fail_unfinished_operations("the daemon stopped while this operation ran")
    ops = Operations(store)
    kinds = driver_kinds or {"container": "container", "vm": "vm"}
    drivers: dict[str, InstanceDriver] = {}
    for type_, kind in kinds.items():
        ctx = DriverContext(state_dir=state_dir / type_, runtime_dir=runtime_dir / type_,
                            cgroup_parent=cgroup_parent, host=host, oci_runtime=oci_runtime)
        drivers[type_] = create_driver(kind, ctx)
    image_root = state_dir / "images"
    images = ImageService(store, ops, image_root)
    instances = InstanceService(store, ops, drivers, host, state_dir, image_root)
    instances.reconcile()
    return Services(store, ops, host, instances, images)
