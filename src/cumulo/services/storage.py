"""Storage pools as the services see them: which pools exist, instance roots in them, and
the host mounts of the volumes containers use.

One pool today, ``default`` (``dir`` driver) under ``<state>/storage/default``; more
pools, and other drivers, plug in through ``storage.pools``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cumulo.domain.models import Instance
from cumulo.domain.units import format_size
from cumulo.domain.volumes import device_id
from cumulo.errors import InvalidInputError, NotFoundError
from cumulo.storage.base import RootSpec, StoragePool
from cumulo.storage.dir import DirPool
from cumulo.storage.pools import DEFAULT_POOL
from cumulo.store.volumes import VolumeStore

MIN_ROOT = 16 * 1024 * 1024      # an ext4 with a journal and room for a few files
MIN_VOLUME = 16 * 1024 * 1024


@dataclass(frozen=True)
class PoolInfo:
    name: str
    driver: str
    path: Path
    used: int
    free: int
    total: int
    roots: int
    volumes: int


class StorageService:
    """The daemon's pools and what lives in them."""

    def __init__(self, state_dir: Path, volumes: VolumeStore) -> None:
        pool = DirPool(DEFAULT_POOL, state_dir / "storage" / DEFAULT_POOL)
        pool.ensure()
        self.pools: dict[str, StoragePool] = {pool.name: pool}
        self.volumes = volumes

    def pool(self, name: str | None) -> StoragePool:
        name = name or DEFAULT_POOL
        try:
            return self.pools[name]
        except KeyError:
            raise NotFoundError("storage pool", name) from None

    def list_pools(self) -> list[PoolInfo]:
        return [self.info(name) for name in sorted(self.pools)]

    def info(self, name: str) -> PoolInfo:
        p = self.pool(name)
        u = p.usage()
        return PoolInfo(p.name, p.driver, p.path, u.used, u.free, u.total, u.roots, u.volumes)

    # instance roots
    def plan_root(self, pool: str | None, copy: bool, size: int | None) -> dict[str, Any]:
        """The ``root`` record of a new instance, after checking pool and size."""
        p = self.pool(pool)
        if size is not None:
            if size < MIN_ROOT:
                raise InvalidInputError(f"--disk {format_size(size)} is too small: at least"
                                        f" {format_size(MIN_ROOT)}")
            free = p.usage().free
            if size > free:
                raise InvalidInputError(f"--disk {format_size(size)} is more than pool"
                                        f" {p.name!r} has free ({format_size(free)})")
        return {"pool": p.name, "copy": copy, "size": size}

    def root_spec(self, inst: Instance) -> RootSpec | None:
        if inst.root is None:
            return None
        p = self.pool(str(inst.root["pool"]))
        size = inst.root.get("size")
        return RootSpec(pool=p.name, path=p.path, driver=p.driver,
                        copy=bool(inst.root.get("copy")), size=None if size is None else int(size))

    def root_pool(self, inst: Instance) -> StoragePool:
        if inst.root is None:
            raise InvalidInputError(f"instance {inst.name!r} predates storage pools: it has no"
                                    " root in a pool to snapshot")
        return self.pool(str(inst.root["pool"]))

    # volumes on the host
    def container_mounts(self, inst: Instance) -> tuple[tuple[Path, str], ...]:
        """Mount each volume attached to ``inst`` on the host; (host dir, path inside)."""
        out = []
        for vol in self.volumes.of_instance(inst.project, inst.name):
            att = next(a for a in vol.attachments if a.instance == inst.name)
            out.append((self.pool(vol.pool).mount_volume(vol.key), att.path))
        return tuple(out)

    def vm_disks(self, inst: Instance) -> tuple[tuple[str, Path, bool], ...]:
        """The volumes attached to VM ``inst``: (device id, file, shared), none mounted here.

        A host mount left by a stopped container is released first: the guest's kernel
        and the host's must never both have the filesystem mounted.
        """
        out = []
        for vol in self.volumes.of_instance(inst.project, inst.name):
            att = next(a for a in vol.attachments if a.instance == inst.name)
            pool = self.pool(vol.pool)
            pool.unmount_volume(vol.key)
            out.append((device_id(vol), pool.volume_file(vol.key), att.shared))
        return tuple(out)

    def release_unused_mounts(self, project: str) -> None:
        """Unmount volumes no container is attached to any more (a VM gets the file itself)."""
        for vol in self.volumes.list_in(project):
            if not any(a.path for a in vol.attachments):
                self.pool(vol.pool).unmount_volume(vol.key)
