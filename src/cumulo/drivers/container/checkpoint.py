"""Container state archives: CRIU images (and the root's changes) in one tar file.

``cumulo checkpoint`` and container migration both move a container's state as one
file: ``images/`` holds what ``runtime checkpoint`` wrote (processes, memory,
namespaces, descriptors.json), and, when the state is to run on another host,
``upper/`` holds the overlay's upper dir: every file the container changed, with
overlayfs' whiteouts and opaque-dir xattrs kept by GNU tar. A live migration sends a
first archive of a pre-dump (memory only, taken while the container runs) and then
the final one, whose images name the pre-dump as their parent.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
from pathlib import Path

from cumulo.errors import DriverError, RuntimeToolError, UnsupportedError
from cumulo.host.criu import criu_binary, has_feature, network_lock_conf, unavailable
from cumulo.host.info import HostInfo

IMAGES = "images"
PARENT = "parent"        # a pre-dump's images, next to ``images`` when restoring
UPPER = "upper"
TAR_TIMEOUT = 300.0
TAR_OPTS = ("--xattrs", "--xattrs-include=*", "--numeric-owner", "--sparse")


def require_criu(host: HostInfo) -> str:
    """The CRIU binary to hand to the runtime; a clear error if this host has no usable one
    (missing, failing ``criu check``, or unable to lock the network)."""
    path = criu_binary()
    if (why := unavailable(host, path)) is not None:
        raise UnsupportedError(f"containers cannot be checkpointed on this host: {why}")
    assert path is not None
    return path


def write_criu_conf(path: Path, host: HostInfo) -> None:
    """The CRIU options file runc passes for our containers (``org.criu.config``)."""
    text = network_lock_conf(host.criu_network_lock or "iptables")
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@functools.cache
def mem_tracking(criu: str) -> bool:
    """CRIU can track memory changes here (the kernel's soft-dirty bits): pre-dumps work."""
    return has_feature(criu, "mem_dirty_track")


def require_mem_tracking(criu: str) -> None:
    if not mem_tracking(criu):
        raise UnsupportedError("no pre-dump: this kernel does not track memory changes"
                               " (CONFIG_MEM_SOFT_DIRTY is off)")


def _tar(args: list[str]) -> None:
    try:
        proc = subprocess.run(["tar", *TAR_OPTS, *args], capture_output=True, text=True,
                              timeout=TAR_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DriverError(f"tar failed: {err}") from err
    if proc.returncode != 0:
        raise RuntimeToolError("tar", args[:1], proc.returncode, proc.stderr)


def pack(archive: Path, work: Path | None, upper: Path | None) -> int:
    """Write ``work/images`` (if ``work``) and ``upper`` (as ``upper/``) to ``archive``;
    returns its size."""
    tmp = archive.with_name(f".{archive.name}.tmp")
    args = ["-cf", str(tmp)]
    if work is not None:
        args += ["-C", str(work), IMAGES]
    if upper is not None:
        args += ["-C", str(upper.parent), "--transform", f"s,^{upper.name},{UPPER},",
                 upper.name]
    try:
        _tar(args)
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    return archive.stat().st_size


def unpack(archive: Path, dest: Path, images: bool = True) -> None:
    """Extract the images of an archive made by ``pack`` into ``dest/images``."""
    if not archive.is_file():
        raise DriverError(f"no checkpoint at {archive}")
    dest.mkdir(parents=True, exist_ok=True)
    _tar(["-xf", str(archive), "-C", str(dest), "--anchored", f"--exclude={UPPER}"])
    if images and not (dest / IMAGES / "inventory.img").is_file():
        raise DriverError(f"{archive} holds no CRIU images: not a container checkpoint")


def has_upper(archive: Path) -> bool:
    """The archive carries the root's changes (it was made for another host)."""
    try:
        proc = subprocess.run(["tar", "-tf", str(archive)], capture_output=True, text=True,
                              timeout=TAR_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DriverError(f"tar failed: {err}") from err
    return any(line.startswith(f"{UPPER}/") for line in proc.stdout.splitlines())


def unpack_upper(archive: Path, data: Path) -> None:
    """Make ``data`` (the root's own dir, unmounted from the container) hold exactly the
    archive's ``upper/``; ``data`` itself (its owner) stays."""
    data.mkdir(parents=True, exist_ok=True)
    for entry in data.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    _tar(["-xf", str(archive), "-C", str(data), "--strip-components=1", f"{UPPER}/"])


def make_searchable(work: Path) -> None:
    """Let the restored tasks look files up in the image dirs (runc makes them 0600).

    A task CRIU forks into a new user namespace opens a few images (``timens-*.img``)
    before its id map is written, as "other": it needs search permission on the dir.
    Files keep their modes: CRIU's dump already made those world-readable.
    """
    for top in (work / IMAGES, work / PARENT):
        if top.exists():
            target = top.resolve()
            os.chmod(target, stat.S_IMODE(target.stat().st_mode) | 0o711)


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def reset(path: Path) -> None:
    """An empty directory at ``path``."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
