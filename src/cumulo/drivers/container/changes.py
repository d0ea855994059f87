"""What a container changed in its root against its image (``docker diff``), the way
Docker computes it.

A clone's root is an overlay: its upper dir holds every change, a whiteout (a 0/0
character device) marks a deletion. As Docker's overlay driver does, the upper dir is
walked in lexical order: an entry the image has is modified (a directory only if its
mode, size or mtime differ), one it has not is added, a whiteout is deleted; the parent
of an added or deleted entry is reported modified first (never ``/``). A root that is
a full copy is compared with the image tree instead, with the rules of Docker's naive
driver (mode, owner, device, and size and mtime for non-directories). The runtime's
mount points (``INIT_PATHS``) are left out, as Docker's init layer hides them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MODIFIED, ADDED, DELETED = 0, 1, 2   # Docker's Kind
# what the runtime makes in a root as mount points: Docker keeps them in an "init" layer
# under the container's own, so they are never reported, nor their directory's new mtime
INIT_PATHS = frozenset({"/etc/resolv.conf", "/etc/hostname", "/etc/hosts", "/etc/mtab",
                        "/proc", "/sys", "/dev", "/.dockerenv"})
INIT_DIRS = frozenset({"/", "/etc"})


class _Changes:
    def __init__(self) -> None:
        self.out: list[tuple[str, int]] = []
        self.dirs: set[str] = set()   # directories reported already

    def add(self, path: str, kind: int, is_dir: bool) -> None:
        if kind in (ADDED, DELETED):
            parent = os.path.dirname(path)
            if parent != "/" and parent not in self.dirs:
                self.out.append((parent, MODIFIED))
                self.dirs.add(parent)
        if is_dir:
            self.dirs.add(path)
        self.out.append((path, kind))


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _entries(d: Path) -> list[str]:
    try:
        return sorted(os.listdir(d), key=os.fsencode)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def overlay_changes(upper: Path, lower: Path) -> list[tuple[str, int]]:
    """(path, kind) of the changes an overlay's ``upper`` dir holds over ``lower``."""
    found = _Changes()

    def walk(rel: str) -> None:
        for name in _entries(upper / rel.lstrip("/")):
            path = f"{rel.rstrip('/')}/{name}"
            if path in INIT_PATHS:
                continue
            st = os.lstat(upper / path.lstrip("/"))
            is_dir = stat.S_ISDIR(st.st_mode)
            if _is_whiteout(st):
                found.add(path, DELETED, False)
                continue
            old = _lstat(lower / path.lstrip("/"))
            if old is None:
                found.add(path, ADDED, is_dir)
            elif not (is_dir and stat.S_ISDIR(old.st_mode) and old.st_mode == st.st_mode
                      and (path in INIT_DIRS or (old.st_size == st.st_size
                                                 and old.st_mtime_ns == st.st_mtime_ns))):
                found.add(path, MODIFIED, is_dir)   # an unchanged directory: not reported
            if is_dir:
                walk(path)

    walk("/")
    return found.out


def _differs(old: os.stat_result, new: os.stat_result, old_path: Path, new_path: Path
             ) -> bool:
    if (old.st_mode, old.st_uid, old.st_gid, old.st_rdev) != (
            new.st_mode, new.st_uid, new.st_gid, new.st_rdev):
        return True
    if stat.S_ISDIR(new.st_mode):
        return False   # a directory's size says nothing; its entries tell
    if stat.S_ISLNK(new.st_mode):
        return os.readlink(old_path) != os.readlink(new_path)
    return old.st_size != new.st_size or old.st_mtime_ns != new.st_mtime_ns


def tree_changes(root: Path, lower: Path) -> list[tuple[str, int]]:
    """(path, kind) of the changes of a full copy ``root`` against the image ``lower``."""
    found = _Changes()

    def walk(rel: str) -> None:
        here = rel.lstrip("/")
        for name in sorted(set(_entries(root / here)) | set(_entries(lower / here)),
                           key=os.fsencode):
            path = f"{rel.rstrip('/')}/{name}"
            if path in INIT_PATHS:
                continue
            new, old = _lstat(root / path.lstrip("/")), _lstat(lower / path.lstrip("/"))
            if new is None:
                found.add(path, DELETED, False)
                continue
            is_dir = stat.S_ISDIR(new.st_mode)
            if old is None:
                found.add(path, ADDED, is_dir)
            elif _differs(old, new, lower / path.lstrip("/"), root / path.lstrip("/")):
                found.add(path, MODIFIED, is_dir)
            if is_dir and (old is None or stat.S_ISDIR(old.st_mode)):
                walk(path)

    walk("/")
    return found.out
