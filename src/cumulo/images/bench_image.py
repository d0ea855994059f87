"""The "bench" image: the busybox rootfs plus the host's benchmark tools and their libraries.

The benchmark lab (cumulo.lab) runs the same binaries natively and inside instances, so
the image carries the host's own ``sysbench``, ``hpcc``, ``iperf3``, ``qperf`` and ``fio``
(Debian packages), every
shared library ``ldd`` lists for them, the dynamic loader, and the Open MPI runtime hpcc
needs even as a single process (its plugin and data directories, with their libraries).
Same binary, same libraries on every platform: what differs is only the virtualization.
Files are copied, never linked: the image must not change when the host upgrades.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from cumulo.errors import DriverError, UnsupportedError
from cumulo.images import builders as b
from cumulo.images.files import ImageFiles, ImageMeta, ImageRecord, remove_tree

# binary -> Debian package. hpcc runs as one MPI process ("singleton"); the lab sets
# OMPI_MCA_ess_singleton_isolated=1 so it does not fork Open MPI's orted daemon.
# Debian's fio links librbd, librados, glusterfs... (~80 MB of libraries): they are loaded
# at start, so they come along.
TOOLS = {"sysbench": "sysbench", "hpcc": "hpcc", "iperf3": "iperf3", "qperf": "qperf",
         "fio": "fio"}
# What Open MPI loads at run time by path (plugins, help texts, its config).
TREES = [
    Path("/usr/lib/x86_64-linux-gnu/openmpi"),
    Path("/usr/lib/x86_64-linux-gnu/pmix2"),
    Path("/etc/openmpi"),
    Path("/usr/share/openmpi"),
    Path("/usr/share/pmix"),
]
_LDD_PATH = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def shared_libraries(path: Path) -> set[Path]:
    """The absolute paths ``ldd`` resolves for an ELF file (loader included)."""
    try:
        proc = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        raise DriverError(f"cannot run ldd on {path}: {err}") from err
    if proc.returncode != 0:   # "not a dynamic executable": a static file needs nothing
        return set()
    if "not found" in proc.stdout:
        missing = [ln.split()[0] for ln in proc.stdout.splitlines() if "not found" in ln]
        raise DriverError(f"{path} needs libraries the host lacks: {', '.join(missing)}")
    return {Path(m.group(1)) for m in map(_LDD_PATH.search, proc.stdout.splitlines()) if m}


def _copy_file(src: Path, rootfs: Path) -> None:
    """Copy the content behind ``src`` to the same path in the rootfs (symlinks followed)."""
    dest = rootfs / src.relative_to("/")
    if dest.exists() or dest.is_symlink():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src.resolve(), dest)


def _elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def tool_paths() -> dict[str, Path]:
    found = {name: shutil.which(name) for name in TOOLS}
    missing = [TOOLS[n] for n, p in found.items() if p is None]
    if missing:
        raise UnsupportedError(f"the bench image needs {', '.join(missing)}: "
                               f"apt-get install {' '.join(missing)}")
    return {n: Path(p) for n, p in found.items() if p}


def install_tools(rootfs: Path) -> None:
    """The tools, the trees Open MPI reads, and every library any of them links."""
    elves: list[Path] = []
    for path in tool_paths().values():
        _copy_file(path, rootfs)
        elves.append(path)
    for tree in TREES:
        if not tree.is_dir():
            continue
        dest = rootfs / tree.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(tree, dest, symlinks=True, dirs_exist_ok=True)
        elves += [p for p in tree.rglob("*.so*") if p.is_file() and _elf(p)]
    libs: set[Path] = set()
    for elf in elves:
        libs |= shared_libraries(elf)
    for lib in sorted(libs):
        _copy_file(lib, rootfs)


def build_bench(files: ImageFiles, progress: b.Progress | None = None) -> ImageRecord:
    """busybox + sysbench, hpcc (with Open MPI), iperf3, qperf and fio from the host."""
    report = progress or b._noop
    if not b.BUSYBOX.is_file():
        raise UnsupportedError("busybox-static is not installed: apt-get install busybox-static")
    tool_paths()
    version = b.busybox_version()
    applets = [
        line.strip().lstrip("/") for line in b._busybox_output("--list-full").splitlines()
        if line.strip() and line.strip().lstrip("/") != "bin/busybox"
    ]
    meta = ImageMeta(
        os="busybox", release=version, architecture=os.uname().machine,
        description=f"BusyBox {version} with the host's benchmark tools (benchmark lab)",
        command=list(b.BUSYBOX_COMMAND),
    )
    staging = files.staging_dir()
    try:
        rootfs = staging / "rootfs"
        report(0.05, "creating directories")
        b._make_dirs(rootfs)
        b._install_busybox(rootfs)
        b._install_applets(rootfs, applets, lambda f, m: report(f / 2, m))
        report(0.5, "copying the benchmark tools, Open MPI and their libraries")
        install_tools(rootfs)
        b._write_etc(rootfs, version)
        b._chown_root(rootfs)
        report(0.9, "hashing and importing")
        record = files.import_tree(staging, meta)
    except BaseException as err:
        with contextlib.suppress(DriverError):
            remove_tree(staging)
        if isinstance(err, OSError):
            raise DriverError(f"building the bench image failed: {err}") from err
        raise
    report(1.0, f"image {record.sha256[:12]} ready")
    return record
