"""The storage pool contract every pool driver (``dir`` today; btrfs, LVM thin, ZFS later) meets.

A pool holds, under names the services choose:

- instance roots (by host id): a container root mounted at a target the container
  driver gives (template-based: an overlay whose shared lower dir is the image;
  ``copy``: a full copy), or a VM root disk (a qcow2 over the image's base disk, or
  a full copy); ``size`` caps it;
- volumes: size-capped filesystems an instance can mount (containers) or get as a
  block device (VMs);
- snapshots of roots and of volumes, restored to the exact files; a VM root's snapshot
  may also hold the VM's memory and device state (``STATE_FILE``, written by the VM
  driver while the guest is paused at the instant its disk is copied).

Pools act on the host and never touch the store; every method leaves nothing
behind when it fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

STATE_FILE = "state"
# with_state(state_file, copy_disk): write the state and call copy_disk while still paused
StateWriter = Callable[[Path, Callable[[], None]], None]


@dataclass(frozen=True)
class RootSpec:
    """Where and how an instance's root lives: what the service hands to a driver."""

    pool: str                  # pool name
    path: Path                 # the pool's directory
    driver: str = "dir"
    copy: bool = False         # a full copy of the image instead of a clone of it
    size: int | None = None    # bytes; None: no cap beyond the pool's

    def to_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "path": str(self.path), "driver": self.driver,
                "copy": self.copy, "size": self.size}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RootSpec:
        size = d.get("size")
        return cls(pool=str(d["pool"]), path=Path(d["path"]), driver=str(d.get("driver", "dir")),
                   copy=bool(d.get("copy", False)), size=None if size is None else int(size))


@dataclass(frozen=True)
class PoolUsage:
    used: int      # bytes allocated by this pool's files (du-style)
    free: int      # bytes free on the filesystem holding it
    total: int     # size of that filesystem
    roots: int = 0     # instance roots in it
    volumes: int = 0


class StoragePool(Protocol):
    name: str
    driver: str
    path: Path

    def ensure(self) -> None:
        """Create the pool's directories if missing."""

    def usage(self) -> PoolUsage: ...

    # instance roots
    def mount_container_root(self, key: str, lower: Path, target: Path, owner: int,
                             copy: bool, size: int | None) -> None:
        """Mount the container root of ``key`` at ``target`` (made on first use; idempotent)."""

    def unmount_container_root(self, key: str) -> None: ...

    def container_root_data(self, key: str) -> Path:
        """The dir holding what is the instance's own in its container root: the overlay's
        upper dir of a clone, the whole tree of a copy (migrations carry it)."""

    def vm_disk(self, key: str, base: Path, copy: bool, size: int | None) -> Path:
        """The qcow2 root disk of VM ``key`` over (or copied from) ``base``; made on first use."""

    def delete_root(self, key: str) -> None:
        """Unmount and remove everything of ``key``'s root and its snapshots; idempotent."""

    def root_used(self, key: str) -> int: ...

    # volumes
    def create_volume(self, key: str, size: int, owner: int) -> None: ...

    def volume_file(self, key: str) -> Path: ...

    def mount_volume(self, key: str) -> Path:
        """Mount volume ``key`` on the host (idempotent) and return the mount point."""

    def unmount_volume(self, key: str) -> None: ...

    def volume_mounted(self, key: str) -> bool: ...

    def volume_used(self, key: str) -> int: ...

    def resize_volume(self, key: str, size: int) -> None: ...

    def delete_volume(self, key: str) -> None: ...

    # snapshots: kind is "root" or "volume"
    def snapshot_create(self, kind: str, key: str, snap: str,
                        with_state: StateWriter | None = None) -> None:
        """Copy the data of ``key``; ``with_state`` (VM roots) saves the memory as well."""

    def snapshot_state(self, kind: str, key: str, snap: str) -> Path | None:
        """The saved state file of a stateful snapshot; None for a files-only one."""

    def snapshot_restore(self, kind: str, key: str, snap: str) -> None: ...

    def snapshot_delete(self, kind: str, key: str, snap: str) -> None: ...

    def snapshot_list(self, kind: str, key: str) -> list[str]: ...
