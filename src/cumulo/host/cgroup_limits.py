"""A cgroup with limits for a process we spawn ourselves (QEMU, swtpm), on v1 and v2.

runc makes the cgroups of containers; a VM's QEMU has no runtime to do that, so
this module creates the cgroup, writes its limits and gives the argv prefix that
puts the new process into it before it runs (``sh`` writes its own pid, then
``exec``\\s the program: QEMU's ``-daemonize`` child inherits the cgroup, and no
``preexec_fn`` runs in a threaded daemon). Reading usage and removing the cgroup
are in ``cgroups``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from cumulo.errors import UnsupportedError
from cumulo.host import cgroups

CPU_PERIOD_US = 100_000
# v1: the hierarchies a VM joins (cpuacct and pids for the usage, the rest for limits)
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
V2_CONTROLLERS = ("memory", "cpu", "pids")
JOIN_SCRIPT = ('p=$$; while [ "$1" != -- ]; do echo "$p" > "$1" || exit 125; shift; done;'
               ' shift; exec "$@"')


@dataclass(frozen=True)
class CgroupLimits:
    """What the processes of one cgroup may use together; ``None``: unlimited."""

    memory_max: int | None = None      # bytes
    cpu_max: float | None = None       # CPUs worth of time per period (CFS quota)
    pids_max: int | None = None        # processes and threads


def limit_files(version: int, limits: CgroupLimits) -> dict[str, dict[str, str]]:
    """{controller: {file name: value}} to write for ``limits`` on cgroup ``version``."""
    quota = None if limits.cpu_max is None else max(1000, round(limits.cpu_max * CPU_PERIOD_US))
    files: dict[str, dict[str, str]] = {"memory": {}, "cpu": {}, "pids": {}}
    if version == 2:
        if limits.memory_max is not None:
            files["memory"]["memory.max"] = str(limits.memory_max)
        if quota is not None:
            files["cpu"]["cpu.max"] = f"{quota} {CPU_PERIOD_US}"
        if limits.pids_max is not None:
            files["pids"]["pids.max"] = str(limits.pids_max)
        return {c: f for c, f in files.items() if f}
    if limits.memory_max is not None:
        files["memory"]["memory.limit_in_bytes"] = str(limits.memory_max)
    if quota is not None:   # the period first: a quota is checked against it
        files["cpu"]["cpu.cfs_period_us"] = str(CPU_PERIOD_US)
        files["cpu"]["cpu.cfs_quota_us"] = str(quota)
    if limits.pids_max is not None:
        files["pids"]["pids.max"] = str(limits.pids_max)
    return {c: f for c, f in files.items() if f}


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as err:
        raise UnsupportedError(f"cannot set {path.name}={value} on {path.parent}: {err}") from err


def _enable_v2(root: Path, rel: str) -> None:
    """Delegate our controllers down to the parent of ``rel`` (v2 needs each level)."""
    available = set((root / "cgroup.controllers").read_text().split())
    wanted = [c for c in V2_CONTROLLERS if c in available]
    missing = sorted(set(V2_CONTROLLERS) - available)
    if missing:
        raise UnsupportedError(f"cgroup v2 controller(s) {', '.join(missing)} not available"
                               f" on this host: VM limits cannot be enforced")
    here = root
    for part in [p for p in rel.split("/") if p][:-1]:
        enabled = set((here / "cgroup.subtree_control").read_text().split())
        if set(wanted) - enabled:
            _write(here / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        here = here / part
        here.mkdir(exist_ok=True)
    enabled = set((here / "cgroup.subtree_control").read_text().split())
    if set(wanted) - enabled:
        _write(here / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))


def dirs(path: str, version: int | None = None, root: Path = cgroups.CGROUP_ROOT) -> list[Path]:
    """The directories of cgroup ``path``: one on v2, one per hierarchy we join on v1."""
    version = cgroups.version() if version is None else version
    rel = path.strip("/")
    if version == 2:
        return [root / rel]
    found: list[Path] = []
    for controller in V1_CONTROLLERS:
        d = cgroups.controller_dir(controller, path)
        if d is None:
            raise UnsupportedError(f"the cgroup v1 {controller} controller is not mounted:"
                                   " VM limits cannot be enforced")
        if all(d.resolve() != f.resolve() for f in found):
            found.append(d)
    return found


def create(path: str, limits: CgroupLimits, version: int | None = None,
           root: Path = cgroups.CGROUP_ROOT) -> list[Path]:
    """Make cgroup ``path`` with ``limits``; returns the ``cgroup.procs`` files to join.

    Raises ``UnsupportedError`` (and leaves nothing behind) if a controller is missing
    or a limit is refused.
    """
    version = cgroups.version() if version is None else version
    if version == 0:
        raise UnsupportedError("no cgroup hierarchy is mounted: VM limits cannot be enforced")
    made: list[Path] = []
    try:
        if version == 2:
            _enable_v2(root, path.strip("/"))
        targets = dirs(path, version, root)
        for d in targets:
            if not d.is_dir():
                d.mkdir(parents=True)
                made.append(d)
        files = limit_files(version, limits)
        for d in targets:
            for controller, values in files.items():
                if version == 2 or _carries(d, controller):
                    for name, value in values.items():
                        _write(d / name, value)
    except BaseException as err:
        for d in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        if isinstance(err, OSError):
            raise UnsupportedError(f"cannot create cgroup {path}: {err}") from err
        raise
    return [d / "cgroup.procs" for d in targets]


def _carries(d: Path, controller: str) -> bool:
    """True if v1 dir ``d`` is in the hierarchy of ``controller`` (its files are there)."""
    prefix = {"memory": "memory.", "cpu": "cpu.cfs_", "pids": "pids."}[controller]
    return any(f.name.startswith(prefix) for f in d.iterdir())


def spawn_prefix(procs: list[Path], shell: str = "/bin/sh") -> list[str]:
    """argv to put before a command so it runs inside the cgroup of ``procs`` files."""
    return [shell, "-c", JOIN_SCRIPT, "sh", *[str(p) for p in procs], "--"]


def join(pid: int, procs: list[Path]) -> None:
    """Move a running process (and, on v2, all its threads) into the cgroup."""
    for p in procs:
        _write(p, str(pid))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_limits(path: str) -> dict[str, int | float | None]:
    """The limits the kernel holds for cgroup ``path`` now (None: unlimited or unreadable)."""
    rel = path.strip("/")
    if cgroups.version() == 2:
        d = cgroups.CGROUP_ROOT / rel
        mem, cpu, pids = _read(d / "memory.max"), _read(d / "cpu.max"), _read(d / "pids.max")
        quota, _, period = (cpu or "max").partition(" ")
    else:
        mem_d, cpu_d, pids_d = (cgroups.controller_dir(c, path) for c in ("memory", "cpu", "pids"))
        mem = _read(mem_d / "memory.limit_in_bytes") if mem_d else None
        if mem is not None and int(mem) >= 2**62:
            mem = None      # v1's "unlimited" is a huge page-rounded number
        pids = _read(pids_d / "pids.max") if pids_d else None
        quota = (_read(cpu_d / "cpu.cfs_quota_us") if cpu_d else None) or "-1"
        period = (_read(cpu_d / "cpu.cfs_period_us") if cpu_d else None) or ""
    cpu_max = None
    if quota not in ("max", "-1") and period.isdigit():
        cpu_max = int(quota) / int(period)
    return {"memory_max": int(mem) if mem and mem.isdigit() else None,
            "cpu_max": cpu_max,
            "pids_max": int(pids) if pids and pids.isdigit() else None}
