"""Volume and snapshot use cases: create, resize, attach (hot-plug into running VMs),
detach, delete; snapshots of instance roots and of volumes.

Every check runs before anything changes, so a refused request leaves no trace.
"""

from __future__ import annotations

import posixpath

from cumulo import faults
from cumulo.domain.lifecycle import State
from cumulo.domain.models import Instance
from cumulo.domain.units import format_size, parse_size, validate_name
from cumulo.domain.volumes import Volume, device_id
from cumulo.drivers.base import DiskHotplug
from cumulo.drivers.container.oci_spec import IDMAP_BASE
from cumulo.errors import ConflictError, CumuloError, InvalidInputError, NotFoundError
from cumulo.services.instances import InstanceService
from cumulo.services.stateful_snapshots import StatefulSnapshots
from cumulo.services.storage import MIN_VOLUME, StorageService
from cumulo.storage.base import StoragePool

LIVE = (State.RUNNING, State.PAUSED)
FORBIDDEN_PATHS = ("/", "/proc", "/sys", "/dev")


class VolumeService:
    def __init__(self, storage: StorageService, instances: InstanceService) -> None:
        self.storage, self.instances = storage, instances
        self.store = storage.volumes
        self.stateful = StatefulSnapshots(instances)

    # volumes
    def list_in(self, project: str) -> list[Volume]:
        return self.store.list_in(project)

    def get(self, project: str, name: str) -> Volume:
        return self.store.get(project, name)

    def used(self, vol: Volume) -> int | None:
        try:
            return self.storage.pool(vol.pool).volume_used(vol.key)
        except CumuloError:
            return None

    def create(self, project: str, name: str, size: int | str, pool: str | None = None
               ) -> Volume:
        validate_name(name, "volume")
        nbytes = self._size(size)
        p = self.storage.pool(pool)
        try:
            self.store.get(project, name)
            raise ConflictError(f"volume {name!r} already exists")
        except NotFoundError:
            pass
        vol = Volume(project=project, name=name, pool=p.name, size=nbytes)
        # root of the filesystem owned by a container's mapped root, so it can write there
        p.create_volume(vol.key, nbytes, owner=IDMAP_BASE)
        try:
            return self.store.add(vol)
        except BaseException:
            p.delete_volume(vol.key)
            raise

    @staticmethod
    def _size(size: int | str) -> int:
        nbytes = parse_size(size)
        if nbytes < MIN_VOLUME:
            raise InvalidInputError(f"volume size {format_size(nbytes)} is too small: at least"
                                    f" {format_size(MIN_VOLUME)}")
        return nbytes

    def delete(self, project: str, name: str) -> None:
        vol = self.store.get(project, name)
        if vol.attachments:
            users = ", ".join(a.instance for a in vol.attachments)
            raise ConflictError(f"cannot delete volume {name!r}: it is attached to {users}")
        self.storage.pool(vol.pool).delete_volume(vol.key)
        self.store.delete(project, name)

    def resize(self, project: str, name: str, size: int | str) -> Volume:
        vol = self.store.get(project, name)
        nbytes = self._size(size)
        pool = self.storage.pool(vol.pool)
        used = pool.volume_used(vol.key)
        if nbytes < used:
            raise InvalidInputError(
                f"cannot resize volume {name!r} to {format_size(nbytes)}: {format_size(used)}"
                " of it is in use")
        for att in vol.attachments:
            inst = self.instances.get(project, att.instance)
            if inst.state in LIVE and inst.type != "container":
                raise ConflictError(f"cannot resize volume {name!r} while {att.instance!r}"
                                    " runs with it: stop it first")
        if nbytes < vol.size and pool.volume_mounted(vol.key):
            users = ", ".join(a.instance for a in vol.attachments)
            raise ConflictError(f"cannot shrink volume {name!r} while it is mounted for"
                                f" {users}: detach it first (growing works online)")
        pool.resize_volume(vol.key, nbytes)
        return self.store.set_size(project, name, nbytes)

    def attach(self, project: str, name: str, instance: str, path: str = "",
               shared: bool = False) -> Volume:
        vol = self.store.get(project, name)
        inst = self.instances.get(project, instance)
        if inst.state == State.CREATING:   # (its launch does not look for volumes)
            raise ConflictError(f"instance {instance!r} is still being created: attach"
                                " the volume once it is")
        if any(a.instance == instance for a in vol.attachments):
            raise ConflictError(f"volume {name!r} is already attached to {instance!r}")
        if inst.type == "container":
            path = posixpath.normpath(path) if path else ""
            if not path.startswith("/") or path in FORBIDDEN_PATHS:
                raise InvalidInputError(
                    f"give the path to mount volume {name!r} at inside {instance!r},"
                    " e.g. /data (not /, /proc, /sys or /dev)")
        elif path:
            raise InvalidInputError(f"{instance!r} is a {inst.type}: it gets volume {name!r}"
                                    " as a disk, not at a path; leave the path out")
        for att in vol.attachments:
            other = self.instances.get(project, att.instance)
            if other.state in LIVE and not (shared and att.shared):
                raise ConflictError(
                    f"volume {name!r} is attached to running instance {att.instance!r}:"
                    " detach it there first, or attach with --shared on both")
            if (other.type == "container") != (inst.type == "container"):
                raise ConflictError(
                    f"volume {name!r} is attached to {other.type} {att.instance!r}: a"
                    " container and a VM cannot share one filesystem")
        driver = self.instances.drivers.get(inst.type)
        if inst.type != "container" and inst.state in LIVE:
            if not isinstance(driver, DiskHotplug):
                raise InvalidInputError(f"{inst.type} instances cannot take a disk while"
                                        " running: stop it first")
            self.storage.pool(vol.pool).unmount_volume(vol.key)   # the VM gets the file
            driver.attach_disk(inst.host_id, device_id(vol),
                               self.storage.pool(vol.pool).volume_file(vol.key), shared)
        faults.point("volume.attach.before_record")
        try:
            return self.store.attach(project, name, instance, path, shared)
        except BaseException:
            if inst.type != "container" and inst.state in LIVE and \
                    isinstance(driver, DiskHotplug):
                driver.detach_disk(inst.host_id, device_id(vol))
            raise

    def detach(self, project: str, name: str, instance: str) -> Volume:
        vol = self.store.get(project, name)
        inst = self.instances.get(project, instance)
        if not any(a.instance == instance for a in vol.attachments):
            raise NotFoundError("attachment", f"{name} to {instance}")
        driver = self.instances.drivers.get(inst.type)
        if inst.type != "container" and inst.state in LIVE and isinstance(driver, DiskHotplug):
            driver.detach_disk(inst.host_id, device_id(vol))
        out = self.store.detach(project, name, instance)
        if inst.state not in LIVE:
            self.storage.release_unused_mounts(project)
        return out

    # snapshots
    def _target(self, project: str, name: str, volume: bool
                ) -> tuple[str, str, Instance | Volume]:
        if volume:
            vol = self.store.get(project, name)
            return "volume", vol.key, vol
        inst = self.instances.get(project, name)
        return "root", inst.host_id, inst

    def _pool_of(self, target: Instance | Volume) -> StoragePool:
        if isinstance(target, Volume):
            return self.storage.pool(target.pool)
        return self.storage.root_pool(target)

    def snapshots(self, project: str, name: str, volume: bool = False) -> list[str]:
        kind, key, target = self._target(project, name, volume)
        return self._pool_of(target).snapshot_list(kind, key)

    def snapshot(self, project: str, name: str, snap: str, volume: bool = False,
                 stateful: bool = False) -> None:
        validate_name(snap, "snapshot")
        kind, key, target = self._target(project, name, volume)
        if stateful:
            if isinstance(target, Volume):
                raise InvalidInputError("--stateful is for a running VM, not a volume")
            pool = self._pool_of(target)
            if snap in pool.snapshot_list(kind, key):
                raise ConflictError(f"snapshot {snap!r} of {name!r} already exists")
            attached = len(self.store.of_instance(project, name))
            self.stateful.create(target, pool, snap, attached)
        else:
            self._check_quiet(project, target, "snapshot", allow_containers=True)
            self._pool_of(target).snapshot_create(kind, key, snap)
            faults.point("snapshot.after_create")
        if isinstance(target, Instance):
            self.instances.events.lifecycle("snapshot-created", project, name, snapshot=snap,
                                            stateful=stateful)

    def is_stateful(self, project: str, name: str, snap: str, volume: bool = False) -> bool:
        kind, key, target = self._target(project, name, volume)
        return self._pool_of(target).snapshot_state(kind, key, snap) is not None

    def restore(self, project: str, name: str, snap: str, volume: bool = False) -> None:
        kind, key, target = self._target(project, name, volume)
        pool = self._pool_of(target)
        if snap not in pool.snapshot_list(kind, key):
            raise NotFoundError("snapshot", f"{name}/{snap}")
        self._check_quiet(project, target, "restore", allow_containers=False)
        state = pool.snapshot_state(kind, key, snap)
        if state is not None and isinstance(target, Instance):
            self.stateful.restore(target, pool, snap, state)
            return
        pool.snapshot_restore(kind, key, snap)

    def delete_snapshot(self, project: str, name: str, snap: str, volume: bool = False) -> None:
        kind, key, target = self._target(project, name, volume)
        self._pool_of(target).snapshot_delete(kind, key, snap)

    def _check_quiet(self, project: str, target: Instance | Volume, action: str,
                     allow_containers: bool) -> None:
        """Refuse to copy or replace data a running instance is writing to."""
        if isinstance(target, Volume):
            users = [self.instances.get(project, a.instance) for a in target.attachments]
        else:
            users = [target]
        for inst in users:
            if inst.state in LIVE and not (allow_containers and inst.type == "container"):
                what = f"volume {target.name!r}" if isinstance(target, Volume) else \
                    f"instance {inst.name!r}"
                hint = " (or use --stateful)" if action == "snapshot" and \
                    inst.type != "container" and not isinstance(target, Volume) else ""
                raise ConflictError(f"cannot {action} {what} while {inst.name!r} is"
                                    f" {inst.state.value}: stop it first{hint}")
