"""The ``dir`` pool: plain directories and files on the host filesystem.

Layout under the pool directory::

    roots/<key>/upper, work        container clone: overlay upper over the image (lower)
    roots/<key>/rootfs             container full copy (--copy), bind-mounted
    roots/<key>/disk.ext4, mnt/    with a size: the above live in a loop-mounted sparse ext4
    roots/<key>/root.qcow2         VM root disk: qcow2 backed by the image's base disk
    roots/<key>/root.json          how the root was made and where it is mounted
    volumes/<key>.ext4, <key>.mnt  a volume: sparse ext4 file, mounted only while in use
    snapshots/<kind>/<key>/<snap>/ copies (reflinked where the filesystem can) of the above
    snapshots/root/<key>/<snap>/state  a stateful VM snapshot's memory and device state

Copy-on-write comes from overlayfs (containers) and qcow2 backing files (VMs), so
clones cost only what they write, whatever the host filesystem is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from cumulo.errors import (
    ConflictError,
    DriverError,
    InvalidInputError,
    NotFoundError,
    RuntimeToolError,
)
from cumulo.host import mounts, space
from cumulo.host.mounts import is_mounted
from cumulo.storage import ext4
from cumulo.storage.base import STATE_FILE, PoolUsage, StateWriter
from cumulo.storage.tools import copy_tree, disk_usage, run, umount

KINDS = ("root", "volume")


def _rmtree(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as err:
        raise DriverError(f"cannot remove {path}: {err}") from err


def _copy_file(src: Path, dst: Path) -> None:
    """Sparse (and reflinked where possible) copy through a temp name, then rename."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        run(["cp", "--sparse=always", "--reflink=auto", str(src), str(tmp)])
        os.rename(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


class DirPool:
    """``StoragePool`` on a directory."""

    driver = "dir"

    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, Path(path)
        self.roots = self.path / "roots"
        self.volumes = self.path / "volumes"
        self.snapshots = self.path / "snapshots"

    def ensure(self) -> None:
        try:
            for d in (self.roots, self.volumes, self.snapshots):
                d.mkdir(parents=True, exist_ok=True)
            meta = self.path / "pool.json"
            if not meta.exists():
                meta.write_text(json.dumps({"name": self.name, "driver": self.driver}) + "\n")
        except OSError as err:
            raise DriverError(f"cannot prepare pool {self.name!r} at {self.path}: {err}") from err

    def usage(self) -> PoolUsage:
        st = os.statvfs(self.path)
        roots = sum(1 for _ in self.roots.iterdir()) if self.roots.is_dir() else 0
        vols = sum(1 for _ in self.volumes.glob("*.ext4")) if self.volumes.is_dir() else 0
        return PoolUsage(used=disk_usage(self.path), free=st.f_bavail * st.f_frsize,
                         total=st.f_blocks * st.f_frsize, roots=roots, volumes=vols)

    def full_error(self, what: str) -> DriverError:
        """The one line for a write that found the pool full, with its free space now."""
        return space.full_error(f"storage pool {self.name!r}", self.path, f"make {what}")

    # --- instance roots -------------------------------------------------------
    def _root_meta(self, key: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.roots / key / "root.json").read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise DriverError(f"unreadable root record of {key!r}: {err}") from err
        return data

    def _data_top(self, key: str, meta: dict[str, Any]) -> Path:
        """Where upper/work or rootfs live: the root dir, or its mounted ext4 when sized."""
        d = self.roots / key
        if meta.get("size"):
            ext4.mount(d / "disk.ext4", d / "mnt")
            return d / "mnt"
        return d

    def _data(self, key: str, meta: dict[str, Any]) -> Path:
        return self._data_top(key, meta) / ("rootfs" if meta.get("copy") else "upper")

    def mount_container_root(self, key: str, lower: Path, target: Path, owner: int,
                             copy: bool, size: int | None) -> None:
        if is_mounted(target):
            return
        d = self.roots / key
        fresh = not (d / "root.json").exists()
        try:
            if fresh:
                d.mkdir(parents=True, exist_ok=True)
                meta: dict[str, Any] = {"type": "container", "copy": copy, "size": size,
                                        "target": str(target), "owner": owner}
                if size:
                    img = d / "disk.ext4"
                    ext4.make(img.with_suffix(".tmp"), size)
                    os.rename(img.with_suffix(".tmp"), img)
                (d / "root.json").write_text(json.dumps(meta) + "\n")
            meta = self._root_meta(key)
            top = self._data_top(key, meta)
            target.mkdir(parents=True, exist_ok=True)
            if meta["copy"]:
                rootfs = top / "rootfs"
                if not rootfs.exists():
                    tmp = top / ".rootfs.tmp"
                    _rmtree(tmp)
                    copy_tree(lower, tmp)
                    os.rename(tmp, rootfs)
                mounts.bind(rootfs, target)
            else:
                upper, work = top / "upper", top / "work"
                for sub in (upper, work):
                    sub.mkdir(exist_ok=True)
                os.chown(upper, owner, owner)
                mounts.overlay(lower, upper, work, target)
        except BaseException as err:
            if fresh:
                with contextlib.suppress(DriverError):
                    self.delete_root(key)
            if space.no_space(err):
                raise self.full_error(f"the root of {key!r}") from err
            if isinstance(err, OSError):
                raise DriverError(f"cannot prepare the root of {key!r}: {err}") from err
            raise

    def unmount_container_root(self, key: str) -> None:
        meta = self._root_meta(key)
        if meta.get("target"):
            umount(Path(meta["target"]))
        umount(self.roots / key / "mnt")

    def container_root_data(self, key: str) -> Path:
        meta = self._root_meta(key)
        if meta.get("type") != "container":
            raise NotFoundError("container root", key)
        return self._data(key, meta)

    def vm_disk(self, key: str, base: Path, copy: bool, size: int | None) -> Path:
        d = self.roots / key
        disk = d / "root.qcow2"
        if disk.exists():
            return disk
        tmp = d / ".root.qcow2.tmp"
        fresh = not d.exists()
        try:
            d.mkdir(parents=True, exist_ok=True)
            if size is not None:
                info = json.loads(run(["qemu-img", "info", "--output=json", str(base)]))
                if size < int(info["virtual-size"]):
                    raise InvalidInputError(
                        f"--disk {size} bytes is smaller than the image's disk"
                        f" ({int(info['virtual-size'])} bytes)")
            if copy:
                run(["qemu-img", "convert", "-O", "qcow2", str(base), str(tmp)])
            else:
                fmt = "raw" if base.suffix == ".raw" else "qcow2"   # an imported raw disk
                run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", fmt,
                     str(tmp)])
            if size is not None:
                run(["qemu-img", "resize", "-q", str(tmp), str(size)])
            (d / "root.json").write_text(json.dumps(
                {"type": "vm", "copy": copy, "size": size, "base": str(base)}) + "\n")
            os.rename(tmp, disk)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            if fresh:
                with contextlib.suppress(DriverError):
                    self.delete_root(key)
            if space.no_space(err):
                raise self.full_error(f"the root disk of {key!r}") from err
            if isinstance(err, (OSError, ValueError, KeyError)):
                raise DriverError(f"cannot make the root disk of {key!r}: {err}") from err
            raise
        return disk

    def delete_root(self, key: str) -> None:
        self.unmount_container_root(key)
        _rmtree(self.roots / key)
        _rmtree(self.snapshots / "root" / key)

    def root_used(self, key: str) -> int:
        return disk_usage(self.roots / key)

    # --- volumes --------------------------------------------------------------
    def volume_file(self, key: str) -> Path:
        return self.volumes / f"{key}.ext4"

    def _volume_mnt(self, key: str) -> Path:
        return self.volumes / f"{key}.mnt"

    def create_volume(self, key: str, size: int, owner: int) -> None:
        img = self.volume_file(key)
        if img.exists():
            raise ConflictError(f"volume {key!r} already exists in pool {self.name!r}")
        tmp = img.with_name(f".{img.name}.tmp")
        try:
            self.volumes.mkdir(parents=True, exist_ok=True)
            ext4.make(tmp, size, root_owner=owner)
            os.rename(tmp, img)
        except (OSError, RuntimeToolError) as err:
            if space.no_space(err):
                raise self.full_error(f"volume {key!r}") from err
            if isinstance(err, RuntimeToolError):
                raise
            raise DriverError(f"cannot create volume {key!r}: {err}") from err
        finally:
            tmp.unlink(missing_ok=True)

    def _require_volume(self, key: str) -> Path:
        img = self.volume_file(key)
        if not img.exists():
            raise NotFoundError("volume", key)
        return img

    def mount_volume(self, key: str) -> Path:
        img, mnt = self._require_volume(key), self._volume_mnt(key)
        try:
            ext4.mount(img, mnt)
        except BaseException:
            with contextlib.suppress(OSError):
                mnt.rmdir()
            raise
        return mnt

    def unmount_volume(self, key: str) -> None:
        mnt = self._volume_mnt(key)
        umount(mnt)
        with contextlib.suppress(FileNotFoundError):
            mnt.rmdir()

    def volume_mounted(self, key: str) -> bool:
        return is_mounted(self._volume_mnt(key))

    def volume_used(self, key: str) -> int:
        return ext4.used_bytes(self._require_volume(key))

    def resize_volume(self, key: str, size: int) -> None:
        img = self._require_volume(key)
        current = img.stat().st_size
        if size < current:
            if self.volume_mounted(key):
                raise ConflictError(f"cannot shrink volume {key!r} while it is in use")
            need = ext4.min_bytes(img)
            if size < need:
                raise InvalidInputError(
                    f"cannot shrink volume {key!r} to {size} bytes: its data needs {need}")
        ext4.resize(img, size, self._volume_mnt(key))

    def delete_volume(self, key: str) -> None:
        self.unmount_volume(key)
        _rmtree(self.volume_file(key))
        _rmtree(self.snapshots / "volume" / key)

    # --- snapshots ------------------------------------------------------------
    def _snap_dir(self, kind: str, key: str, snap: str) -> Path:
        if kind not in KINDS:
            raise InvalidInputError(f"unknown snapshot kind {kind!r}")
        return self.snapshots / kind / key / snap

    def snapshot_list(self, kind: str, key: str) -> list[str]:
        d = self.snapshots / kind / key
        return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) \
            if d.is_dir() else []

    def snapshot_create(self, kind: str, key: str, snap: str,
                        with_state: StateWriter | None = None) -> None:
        final = self._snap_dir(kind, key, snap)
        if final.exists():
            raise ConflictError(f"snapshot {snap!r} of {key!r} already exists")
        tmp = final.with_name(f".{snap}.tmp")
        _rmtree(tmp)
        try:
            tmp.mkdir(parents=True)
            if kind == "volume":
                self._snapshot_volume(key, tmp)
            else:
                meta = self._root_meta(key)
                if not meta:
                    raise NotFoundError("instance root", key)
                if meta["type"] == "vm":
                    disk = self.roots / key / "root.qcow2"
                    if with_state is None:
                        _copy_file(disk, tmp / "root.qcow2")
                    else:   # the disk copied at the instant the state was saved
                        with_state(tmp / STATE_FILE, lambda: _copy_file(disk, tmp / "root.qcow2"))
                elif with_state is not None:
                    raise InvalidInputError("only a VM root can have a stateful snapshot")
                else:
                    copy_tree(self._data(key, meta), tmp / "data")
            os.rename(tmp, final)
        except (OSError, RuntimeToolError) as err:
            if space.no_space(err):
                raise self.full_error(f"snapshot {snap!r} of {key!r}") from err
            if isinstance(err, RuntimeToolError):
                raise
            raise DriverError(f"cannot snapshot {key!r}: {err}") from err
        finally:
            _rmtree(tmp)

    def _snapshot_volume(self, key: str, dest: Path) -> None:
        img, mnt = self._require_volume(key), self._volume_mnt(key)
        frozen = self.volume_mounted(key)
        if frozen:  # a consistent image while containers keep it mounted
            run(["fsfreeze", "-f", str(mnt)])
        try:
            _copy_file(img, dest / "volume.ext4")
        finally:
            if frozen:
                run(["fsfreeze", "-u", str(mnt)])

    def snapshot_restore(self, kind: str, key: str, snap: str) -> None:
        src = self._snap_dir(kind, key, snap)
        if not src.is_dir():
            raise NotFoundError("snapshot", f"{key}/{snap}")
        try:
            if kind == "volume":
                self.unmount_volume(key)
                _copy_file(src / "volume.ext4", self.volume_file(key))
                return
            meta = self._root_meta(key)
            if meta.get("type") == "vm":
                _copy_file(src / "root.qcow2", self.roots / key / "root.qcow2")
                return
            if meta.get("target"):
                umount(Path(meta["target"]))   # remounted at the next start
            data = self._data(key, meta)
            old = data.with_name(f".{data.name}.old")
            _rmtree(old)
            copy_tree(src / "data", data.with_name(f".{data.name}.new"))
            os.rename(data, old)
            os.rename(data.with_name(f".{data.name}.new"), data)
            _rmtree(old)
            work = data.with_name("work")
            if work.is_dir():   # overlay's scratch space must start empty
                _rmtree(work)
                work.mkdir()
        except OSError as err:
            raise DriverError(f"cannot restore snapshot {snap!r} of {key!r}: {err}") from err

    def snapshot_state(self, kind: str, key: str, snap: str) -> Path | None:
        state = self._snap_dir(kind, key, snap) / STATE_FILE
        return state if state.is_file() else None

    def snapshot_delete(self, kind: str, key: str, snap: str) -> None:
        d = self._snap_dir(kind, key, snap)
        if not d.is_dir():
            raise NotFoundError("snapshot", f"{key}/{snap}")
        _rmtree(d)
