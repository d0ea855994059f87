"""``cumulo publish``: a stopped container's root filesystem becomes a new image.

The tree is read through the container's own root mount (its overlay: the image
below, its changes above, deleted files hidden), copied with ``cp -a`` into a
staging dir, and, for an unprivileged container whose files belong to shifted
ids, shifted back down so the image is owned by 0:0 like any other.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from cumulo.errors import RuntimeToolError
from cumulo.images import kinds
from cumulo.images.files import ImageFiles, ImageMeta, ImageRecord

Progress = Callable[[float, str], None]


def _unshift(top: Path, offset: int) -> None:
    """Subtract ``offset`` from owners at or above it; keep setuid/setgid bits."""
    for dirpath, dirnames, filenames in os.walk(top):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in [".", *links, *filenames]:
            path = os.path.join(dirpath, name) if name != "." else dirpath
            st = os.lstat(path)
            uid = st.st_uid - offset if st.st_uid >= offset else st.st_uid
            gid = st.st_gid - offset if st.st_gid >= offset else st.st_gid
            os.lchown(path, uid, gid)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode))


def publish_tree(files: ImageFiles, source: Path, offset: int, meta: ImageMeta,
                 progress: Progress) -> ImageRecord:
    """Copy ``source`` (a mounted root) into the image store as a new image."""
    with files.staged(f"publishing {source}") as staging:
        rootfs = staging / kinds.ROOTFS
        progress(0.1, "copying the root filesystem")
        proc = subprocess.run(["cp", "-a", "--one-file-system", f"{source}/.", f"{rootfs}/"],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeToolError("cp", ["-a", str(source)], proc.returncode, proc.stderr)
        progress(0.6, "setting owners")
        if offset:
            _unshift(rootfs, offset)
        os.chmod(rootfs, 0o755)
        progress(0.8, "hashing and importing")
        record = files.import_tree(staging, meta)
    progress(1.0, f"image {record.sha256[:12]} ready")
    return record
