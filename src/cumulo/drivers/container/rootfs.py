"""Per-instance root filesystems: an overlay on a (uid-shifted) image rootfs.

Unprivileged containers run with root mapped to ``IDMAP_BASE``, so their lower
dir must be owned by the shifted ids. That copy is made once per image, next to
it (``<rootfs>.idmap-<base>``), atomically and under a file lock; instances then
mount an overlay with their own upper dir, so the image is never written to.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from cumulo.drivers.base import InstanceSpec
from cumulo.drivers.container.oci_spec import IDMAP_BASE
from cumulo.errors import DriverError, RuntimeToolError
from cumulo.host import mounts
from cumulo.host.mounts import is_mounted
from cumulo.storage.pools import pool_of


def shifted_path(rootfs: Path, base: int = IDMAP_BASE) -> Path:
    return rootfs.with_name(f"{rootfs.name}.idmap-{base}")


def _shift_tree(top: Path, base: int) -> None:
    """Add ``base`` to the owner and group of every entry, keeping setuid bits."""
    for dirpath, dirnames, filenames in os.walk(top):
        # a directory is shifted once, as "." when walked; only links to dirs are not walked
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in [".", *links, *filenames]:
            path = os.path.join(dirpath, name) if name != "." else dirpath
            st = os.lstat(path)
            os.lchown(path, st.st_uid + base, st.st_gid + base)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode))


def ensure_shifted(rootfs: Path, base: int = IDMAP_BASE) -> Path:
    """The cached uid-shifted copy of ``rootfs``, built on first use."""
    target = shifted_path(rootfs, base)
    if target.is_dir():
        return target
    lock_path = rootfs.with_name(f".{rootfs.name}.idmap.lock")
    try:
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if target.is_dir():
                return target
            tmp = Path(tempfile.mkdtemp(prefix=f".{rootfs.name}.idmap-", dir=rootfs.parent))
            try:
                _copy(rootfs, tmp / "tree")
                _shift_tree(tmp / "tree", base)
                os.rename(tmp / "tree", target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:
        raise DriverError(f"cannot prepare id-shifted copy of {rootfs}: {err}") from err
    return target


def _copy(src: Path, dst: Path) -> None:
    proc = subprocess.run(
        ["cp", "-a", "--reflink=auto", str(src), str(dst)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeToolError("cp", ["-a", str(src)], proc.returncode, proc.stderr)


def make_searchable(path: Path) -> None:
    """Add search (x) permission to ``path`` and its ancestors, as Podman does.

    The runtime mounts the rootfs from inside the user namespace, where mapped
    root is "other" to host-owned dirs: a 0700 ancestor would refuse it.
    """
    for d in [path, *path.parents]:
        mode = stat.S_IMODE(os.stat(d).st_mode)
        if mode & 0o011 != 0o011:
            os.chmod(d, mode | 0o011)


def mount_overlay(
    rootfs: Path, instance_dir: Path, privileged: bool, base: int = IDMAP_BASE
) -> Path:
    """Mount ``instance_dir/rootfs`` (idempotent); returns the mount point."""
    lower = rootfs if privileged else ensure_shifted(rootfs, base)
    upper, work, target = (instance_dir / n for n in ("upper", "work", "rootfs"))
    if is_mounted(target):
        return target
    for d in (upper, work, target):
        d.mkdir(parents=True, exist_ok=True)
    owner = 0 if privileged else base
    if not privileged:
        make_searchable(instance_dir)
    os.chown(upper, owner, owner)
    mounts.overlay(lower, upper, work, target)
    return target


def mount_root(spec: InstanceSpec, base: int = IDMAP_BASE) -> Path:
    """Mount ``instance_dir/rootfs`` from the spec's storage pool (or the plain overlay)."""
    if spec.root is None:
        return mount_overlay(spec.rootfs, spec.instance_dir, spec.privileged, base)
    lower = spec.rootfs if spec.privileged else ensure_shifted(spec.rootfs, base)
    if not spec.privileged:
        make_searchable(spec.instance_dir)
    target = spec.instance_dir / "rootfs"
    pool_of(spec.root).mount_container_root(
        spec.host_id, lower, target, 0 if spec.privileged else base, spec.root.copy,
        spec.root.size)
    return target


def copy_out(spec: InstanceSpec, dest: Path, base: int = IDMAP_BASE) -> None:
    """Copy the root as the container sees it (its mount: image below, changes above,
    deleted files gone) to ``dest`` (not yet there), owned by the ids inside it."""
    _copy(mount_root(spec, base), dest)
    if not spec.privileged:
        try:
            _shift_tree(dest, -base)
        except (OverflowError, OSError) as err:
            raise DriverError(f"cannot shift the ids of {dest} back by {base}: {err}") from err


def unmount(instance_dir: Path) -> None:
    """Unmount the instance's rootfs if mounted (lazily, if something holds it)."""
    mounts.umount(instance_dir / "rootfs")
