"""Pure translation of an ``InstanceSpec`` into an OCI runtime ``config.json``.

The result mirrors what Podman or Docker generate for a default container:
the usual namespaces, Docker's default capabilities, masked and read-only
/proc paths, the standard mounts, and a seccomp denylist. No I/O here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cumulo.domain.limits import Limits
from cumulo.drivers.base import InstanceSpec
from cumulo.drivers.container import system
from cumulo.drivers.container.seccomp import default_profile
from cumulo.host.criu import CONFIG_ANNOTATION

OCI_VERSION = "1.0.2"
# One shared id map for all unprivileged containers (LXD's default layout).
IDMAP_BASE = 1_000_000
IDMAP_SIZE = 65_536
CFS_PERIOD = 100_000
V1_DEFAULT_SHARES = 1024
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CAPABILITIES: tuple[str, ...] = tuple(
    "CAP_" + c
    for c in (
        "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
        "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
        "AUDIT_WRITE",
    )
)
MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)


def _mounts() -> list[dict[str, Any]]:
    nse = ["nosuid", "noexec", "nodev"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": nse},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": [*nse, "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nse},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*nse, "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": [*nse, "relatime", "ro"]},
    ]


RESOLV_CONF = "resolv.conf"  # in the instance dir, bind-mounted read-only


def _dns_mounts(spec: InstanceSpec) -> list[dict[str, Any]]:
    """/etc/resolv.conf from the instance dir, as Podman does, when the service gave one."""
    if spec.resolv_conf is None:
        return []
    return [{"destination": "/etc/resolv.conf", "type": "bind",
             "source": str(spec.instance_dir / RESOLV_CONF),
             "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}]


def cpu_shares(weight: int) -> int:
    """cgroup v2 weight (1..10000) to v1 shares (2..262144), the runc/crun formula."""
    return 2 + ((weight - 1) * 262142) // 9999


def resources(limits: Limits) -> dict[str, Any]:
    """The OCI ``linux.resources`` section for ``limits`` (also used by ``runc update``)."""
    res: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if limits.cpu is not None:
        cpu["quota"] = round(limits.cpu * CFS_PERIOD)
        cpu["period"] = CFS_PERIOD
    if limits.cpu_weight is not None:
        cpu["shares"] = cpu_shares(limits.cpu_weight)
    if limits.cpuset is not None:
        cpu["cpus"] = limits.cpuset
    if cpu:
        res["cpu"] = cpu
    if limits.memory is not None:
        swap = limits.memory_swap if limits.memory_swap is not None else limits.memory
        res["memory"] = {"limit": limits.memory, "swap": swap}
    if limits.pids is not None:
        res["pids"] = {"limit": limits.pids}
    if limits.io_weight is not None:
        res["blockIO"] = {"weight": limits.io_weight}
    return res


def update_resources(limits: Limits, host_cpus: int) -> dict[str, Any]:
    """Resources for ``runc update``: a limit left out is reset, not kept.

    ``update`` only touches what it is given, so "unlimited" must be spelled out.
    """
    res = resources(limits)
    cpu = res.setdefault("cpu", {})
    cpu.setdefault("quota", -1)
    cpu.setdefault("period", CFS_PERIOD)
    cpu.setdefault("shares", V1_DEFAULT_SHARES)
    cpu.setdefault("cpus", f"0-{host_cpus - 1}")
    res.setdefault("memory", {"limit": -1, "swap": -1})
    res.setdefault("pids", {"limit": -1})
    return res


def host_binds(binds: list[tuple[str, str, bool]]) -> list[dict[str, Any]]:
    """Host directories at their paths inside, read-only or not."""
    return [{"destination": path, "type": "bind", "source": source,
             "options": ["rbind", "ro" if ro else "rw", "nosuid", "nodev"]}
            for source, path, ro in binds]


def mounts(spec: InstanceSpec) -> list[dict[str, Any]]:
    """The standard mounts, the network's resolv.conf, then each volume at its path."""
    binds = [{"destination": path, "type": "bind", "source": str(source),
              "options": ["rbind", "rw", "nosuid", "nodev"]} for source, path in spec.volumes]
    standard = system.with_mounts(_mounts()) if system.is_system(spec.options) else _mounts()
    return standard + _dns_mounts(spec) + binds


def set_criu_conf(data: dict[str, Any], criu_conf: Path) -> bool:
    """Point runc's CRIU options file at ``criu_conf`` (its network lock) in a loaded
    ``config.json``; True if that changed it (a config written before it was set)."""
    annotations = data.setdefault("annotations", {})
    if annotations.get(CONFIG_ANNOTATION) == str(criu_conf):
        return False
    annotations[CONFIG_ANNOTATION] = str(criu_conf)
    return True


def build_config(spec: InstanceSpec, cgroups_path: str, rootfs: str = "rootfs",
                 criu_conf: Path | None = None) -> dict[str, Any]:
    """The complete ``config.json`` for ``spec``; ``rootfs`` is relative to the bundle;
    ``criu_conf`` holds the options runc passes to CRIU at a checkpoint or restore."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": spec.hostname, "TERM": "xterm", **spec.env}
    caps = list(CAPABILITIES)
    namespaces: list[dict[str, str]] = [
        {"type": t} for t in ("pid", "mount", "uts", "ipc", "network", "cgroup")]
    if spec.netns_path is not None:
        namespaces[4]["path"] = str(spec.netns_path)
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path,
        "resources": {"devices": [{"allow": False, "access": "rwm"}], **resources(spec.limits)},
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "seccomp": default_profile(),
    }
    if not spec.privileged:
        namespaces.append({"type": "user"})
        idmap = [{"containerID": 0, "hostID": IDMAP_BASE, "size": IDMAP_SIZE}]
        linux["uidMappings"] = idmap
        linux["gidMappings"] = [dict(m) for m in idmap]
    config: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": spec.terminal,
            "user": {"uid": spec.user[0], "gid": spec.user[1]},
            "args": list(spec.command),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": spec.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": spec.hostname,
        "mounts": mounts(spec),
        "linux": linux,
    }
    if system.is_system(spec.options):
        system.apply(config, spec.privileged)
    if criu_conf is not None:
        set_criu_conf(config, criu_conf)
    return config
