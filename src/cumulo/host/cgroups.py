"""Reading an instance's cgroup usage and removing its cgroup dirs, on v1 and v2.

The version is detected at runtime: a ``cgroup.controllers`` file at the root of
``/sys/fs/cgroup`` means the unified (v2) hierarchy; otherwise each v1
controller has its own mount (a hybrid host may add a v2 mount for some).
Paths given here are cgroup paths such as ``/cumulo/default_web``.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
REMOVE_POLL = 0.05
MOUNTS_TTL = 5.0
_mounts: tuple[float, list[tuple[Path, set[str]]]] | None = None


@dataclass(frozen=True)
class CgroupUsage:
    cpu_time_ns: int | None = None
    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None
    pids: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None


def version() -> int:
    """2 for a unified-only host, 1 for v1 or hybrid, 0 without cgroups."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return 2
    return 1 if hierarchies() else 0


def hierarchies() -> list[tuple[Path, set[str]]]:
    """Every mounted cgroup hierarchy: (mount point, its v1 controllers or {"v2"}).

    Read again at most every ``MOUNTS_TTL`` seconds: cgroup mounts do not move while a
    daemon runs, and /proc/self/mountinfo grows with every instance's mounts, so
    parsing it for each cgroup file of each instance made a scrape quadratic."""
    global _mounts
    now = time.monotonic()
    if _mounts is not None and now - _mounts[0] < MOUNTS_TTL:
        return _mounts[1]
    found = _read_hierarchies()
    _mounts = (now, found)
    return found


def _read_hierarchies() -> list[tuple[Path, set[str]]]:
    found: list[tuple[Path, set[str]]] = []
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.readlines()
    except OSError:
        return found
    for line in lines:
        pre, _, post = line.partition(" - ")
        fields, rest = pre.split(), post.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        if rest[0] == "cgroup2":
            found.append((Path(fields[4]), {"v2"}))
        elif rest[0] == "cgroup":
            opts = set(rest[2].split(","))
            found.append((Path(fields[4]), opts - {"rw", "ro"}))
    return found


def controller_dir(controller: str, path: str) -> Path | None:
    """The directory of ``path`` in the hierarchy carrying ``controller`` (v1), or v2's."""
    rel = path.strip("/")
    if version() == 2:
        return CGROUP_ROOT / rel
    for mount, controllers in hierarchies():
        if controller in controllers:
            return mount / rel
    return None


def _read_int(path: Path | None, key: str | None = None) -> int | None:
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        if key is None:
            return int(text.strip())
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except ValueError:
        return None
    return None


def _io_v2(path: Path) -> tuple[int | None, int | None]:
    """Bytes read and written, summed over devices, from a v2 ``io.stat``."""
    try:
        text = path.read_text()
    except OSError:
        return None, None
    read = written = 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                written += int(value)
    return read, written


def _io_v1(blkio: Path | None) -> tuple[int | None, int | None]:
    """Bytes read and written, summed over devices, from v1 ``blkio`` (whole subtree)."""
    if blkio is None:
        return None, None
    try:
        text = (blkio / "blkio.throttle.io_service_bytes_recursive").read_text()
    except OSError:
        return None, None
    read = written = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            read += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            written += int(parts[2])
    return read, written


def read_usage(path: str) -> CgroupUsage:
    """CPU time, memory now and at peak, process count and block I/O bytes; None where
    unreadable."""
    if version() == 2:
        d = CGROUP_ROOT / path.strip("/")
        usec = _read_int(d / "cpu.stat", "usage_usec")
        io_read, io_write = _io_v2(d / "io.stat")
        return CgroupUsage(
            cpu_time_ns=None if usec is None else usec * 1000,
            memory_bytes=_read_int(d / "memory.current"),
            memory_peak_bytes=_read_int(d / "memory.peak"),
            pids=_read_int(d / "pids.current"),
            io_read_bytes=io_read, io_write_bytes=io_write,
        )
    mounts = hierarchies()

    def v1_dir(controller: str) -> Path | None:
        found = next((m for m, c in mounts if controller in c), None)
        return None if found is None else found / path.strip("/")

    cpu, mem, pids = v1_dir("cpuacct"), v1_dir("memory"), v1_dir("pids")
    io_read, io_write = _io_v1(v1_dir("blkio"))
    return CgroupUsage(
        cpu_time_ns=_read_int(cpu / "cpuacct.usage" if cpu else None),
        memory_bytes=_read_int(mem / "memory.usage_in_bytes" if mem else None),
        memory_peak_bytes=_read_int(mem / "memory.max_usage_in_bytes" if mem else None),
        pids=_read_int(pids / "pids.current" if pids else None),
        io_read_bytes=io_read, io_write_bytes=io_write,
    )


def frozen(path: str) -> bool:
    """True if the freezer holds ``path``'s tasks (a paused container)."""
    if version() == 2:
        return _read_int(CGROUP_ROOT / path.strip("/") / "cgroup.freeze") == 1
    d = controller_dir("freezer", path)
    try:
        return d is not None and (d / "freezer.state").read_text().strip() != "THAWED"
    except OSError:
        return False


def holds(pid: int, path: str) -> bool:
    """True if process ``pid`` lives in cgroup ``path`` or below it, in any hierarchy."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    top = "/" + path.strip("/")
    for line in text.splitlines():
        where = line.split(":", 2)[-1]
        if where == top or where.startswith(top + "/"):
            return True
    return False


def holders(dirs: list[str], most: int = 3) -> list[str]:
    """"PID (COMM)" of up to ``most`` processes in ``dirs`` (and their subgroups)."""
    found: list[str] = []
    for d in dirs:
        for procs in sorted(Path(d).rglob("cgroup.procs")):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    try:
                        comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    except OSError:
                        continue
                    if f"{pid} ({comm})" not in found:
                        found.append(f"{pid} ({comm})")
                    if len(found) >= most:
                        return found
    return found


def _rmdir_tree(top: Path) -> None:
    """Remove a cgroup dir and its child cgroups, deepest first (cgroupfs only rmdirs)."""
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(dirpath)


def remove(path: str, parent: str | None = None, wait: float = 0.0) -> list[str]:
    """Remove ``path`` in every hierarchy, then ``parent`` where it is left empty.

    A process that has closed its files but not yet left its cgroup (the last
    step of exit) keeps the dir busy for a moment, so retry for up to ``wait``
    seconds. Returns the dirs that could not be removed (still holding processes).
    """
    deadline = time.monotonic() + wait
    while (left := _remove_once(path, parent)) and time.monotonic() < deadline:
        time.sleep(REMOVE_POLL)
    return left


def _remove_once(path: str, parent: str | None) -> list[str]:
    left: list[str] = []
    seen: set[Path] = set()
    for mount, _controllers in hierarchies():
        real = mount.resolve()
        if real in seen:
            continue
        seen.add(real)
        target = mount / path.strip("/")
        if target.is_dir():
            try:
                _rmdir_tree(target)
            except OSError:
                left.append(str(target))
        if parent:
            with contextlib.suppress(OSError):  # absent, or holds other instances
                os.rmdir(mount / parent.strip("/"))
    return left
