"""Stateful snapshots of running VMs: the memory and device state saved with the root disk.

Taking one pauses the guest, streams its state into the snapshot and copies the root
disk at that same paused instant, then lets it run on (the VM driver's ``save_state``).
Restoring one puts that disk back and starts QEMU from the saved state, so the guest
continues where it was instead of booting. Containers' running state is
`cumulo checkpoint` (CRIU), not a snapshot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from cumulo.domain.lifecycle import Action, State, guard
from cumulo.domain.models import Instance
from cumulo.drivers.live_snapshot import LiveSnapshot
from cumulo.drivers.migratable import Migratable
from cumulo.errors import ConflictError, CumuloError, UnsupportedError
from cumulo.services.instances import InstanceService
from cumulo.storage.base import StoragePool


class StatefulSnapshots:
    def __init__(self, instances: InstanceService) -> None:
        self.instances = instances

    def _driver(self, inst: Instance) -> LiveSnapshot:
        driver = self.instances._driver(inst.type)
        if not isinstance(driver, LiveSnapshot):
            raise UnsupportedError(
                f"{inst.name!r} is a {inst.type}: --stateful saves the memory of running VMs"
                " only; snapshot it without --stateful, or keep its running state with"
                " `cumulo checkpoint` (CRIU for containers)")
        return driver

    def create(self, inst: Instance, pool: StoragePool, snap: str, volumes: int) -> None:
        """Snapshot running VM ``inst`` with its state; ``volumes``: how many are attached."""
        driver = self._driver(inst)
        if inst.state != State.RUNNING:
            raise ConflictError(
                f"cannot take a stateful snapshot of {inst.name!r} while it is"
                f" {inst.state.value}: --stateful saves a running VM's memory (start it, or"
                " snapshot it without --stateful)")
        if volumes:
            raise UnsupportedError(
                f"{inst.name!r} has {volumes} volume(s) attached, and a stateful snapshot"
                " holds only the root disk: detach them first, or snapshot without --stateful")
        with self.instances._locked(inst):
            current = self.instances.get(inst.project, inst.name)
            if current.state != State.RUNNING:
                raise ConflictError(f"{inst.name!r} is {current.state.value} now, not running")

            def with_state(path: Path, copy_disk: Callable[[], None]) -> None:
                driver.save_state(inst.host_id, path, copy_disk)

            pool.snapshot_create("root", inst.host_id, snap, with_state)

    def restore(self, inst: Instance, pool: StoragePool, snap: str, state: Path) -> None:
        """Put back the snapshot's disk of stopped VM ``inst`` and run it from ``state``."""
        driver = self._driver(inst)
        if not isinstance(driver, Migratable):
            raise UnsupportedError(f"{inst.type} instances cannot load a saved state")
        guard(inst.name, inst.state, Action.RESTORE)
        with self.instances._locked(inst):
            current = self.instances.get(inst.project, inst.name)
            guard(inst.name, current.state, Action.RESTORE)
            pool.snapshot_restore("root", inst.host_id, snap)
            try:
                driver.restore(self.instances._spec(current), state)
            except BaseException:
                with contextlib.suppress(CumuloError):
                    self.instances.networks.detach(current)
                raise
            self.instances.store.update_instance(inst.project, inst.name, state=State.RUNNING,
                                                 exit_code=None, last_error=None)
