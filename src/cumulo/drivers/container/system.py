"""System containers: the image's init (systemd) as PID 1, as Incus and OpenVZ run them.

An instance whose options carry ``init`` (set by the service from the image's
metadata, see `cumulo.images.system`) gets a ``config.json`` a whole OS can boot
in, unprivileged: the ``container`` environment variable systemd looks for, tmpfs
on /run and /run/lock, a writable /sys/fs/cgroup in its own cgroup namespace
(on cgroup v1 the named ``systemd`` hierarchy, on v2 the unified one) whose
directories belong to the container's root (`delegate`), the capabilities that a
user namespace makes harmless, and a seccomp list without mount, pivot_root and
reboot (namespaced there). ``cumulo stop`` sends the image's stop signal
(SIGRTMIN+3 asks systemd to power off) before the timeout.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from cumulo.errors import DriverError
from cumulo.host import cgroups

INIT_OPTION = "init"                 # the init PID 1 runs (its path): a system container
STOP_SIGNAL_OPTION = "stop_signal"   # what asks that init to power off
DEFAULT_STOP_SIGNAL = "SIGRTMIN+3"   # systemd: start poweroff.target
CONTAINER_ENV = "cumulo"             # $container, as systemd-detect-virt reads it

# namespaced in a user namespace, and systemd needs them to set up its services
USERNS_CAPABILITIES: tuple[str, ...] = tuple("CAP_" + c for c in (
    "SYS_ADMIN", "NET_ADMIN", "SYS_RESOURCE", "SYS_PTRACE", "DAC_READ_SEARCH",
    "IPC_LOCK", "IPC_OWNER", "LEASE", "LINUX_IMMUTABLE", "SYS_NICE", "SYS_TTY_CONFIG",
    "SYS_BOOT", "AUDIT_CONTROL", "SETPCAP", "NET_BROADCAST", "BLOCK_SUSPEND",
    "WAKE_ALARM", "SYSLOG"))
# system calls the application profile denies that an init needs (all namespaced)
INIT_SYSCALLS = frozenset({"mount", "umount2", "pivot_root", "reboot"})
# cgroup v2 files a delegated subtree's owner must own (cgroups(7), "Delegation")
V2_DELEGATE_FILES = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")


def is_system(options: dict[str, str]) -> bool:
    return bool(options.get(INIT_OPTION))


def stop_signal(options: dict[str, str]) -> int:
    """The signal number asking this instance's init to shut down (SIGTERM if none)."""
    name = options.get(STOP_SIGNAL_OPTION) or ""
    if not is_system(options):
        return int(signal.SIGTERM)
    name = name or DEFAULT_STOP_SIGNAL
    base, _, offset = name.removeprefix("SIG").partition("+")
    if base == "RTMIN":
        return int(signal.SIGRTMIN) + int(offset or 0)
    try:
        return int(signal.Signals["SIG" + base])
    except KeyError:
        return int(signal.SIGTERM)


def system_mounts() -> list[dict[str, Any]]:
    """/run, /run/lock and a writable /sys/fs/cgroup (replacing the read-only one)."""
    tmpfs = ["nosuid", "nodev", "mode=755"]
    return [
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": [*tmpfs, "size=65536k"]},
        {"destination": "/run/lock", "type": "tmpfs", "source": "tmpfs",
         "options": [*tmpfs, "noexec", "size=5120k"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "rw"]},
    ]


def apply(config: dict[str, Any], privileged: bool) -> None:
    """Turn an application container's ``config.json`` into a system container's
    (its mounts come from `with_mounts`)."""
    process = config["process"]
    process["env"] = [e for e in process["env"] if not e.startswith("container=")]
    process["env"].append(f"container={CONTAINER_ENV}")
    process["noNewPrivileges"] = False     # setuid programs (su, ping) must work
    if not privileged:
        caps = process["capabilities"]
        for key in ("bounding", "effective", "permitted"):
            caps[key] = list(dict.fromkeys([*caps[key], *USERNS_CAPABILITIES]))
        for rule in config["linux"]["seccomp"]["syscalls"]:
            rule["names"] = [n for n in rule["names"] if n not in INIT_SYSCALLS]


def with_mounts(standard: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``standard`` with /run and /run/lock after /proc, and the cgroup mount replaced."""
    mine = system_mounts()
    taken = {m["destination"] for m in mine}
    kept = [m for m in standard if m["destination"] not in taken]
    return kept[:1] + mine[:2] + kept[1:] + mine[2:]


def delegate(path: str, uid: int, gid: int) -> None:
    """Give the container's root its own cgroup, so its init can make sub-cgroups:
    on v2 the dir and the delegation files, on v1 the named ``systemd`` hierarchy."""
    try:
        _delegate(path, uid, gid)
    except OSError as err:
        raise DriverError(f"cannot hand cgroup {path} to the container's root: {err}"
                          ) from err


def _delegate(path: str, uid: int, gid: int) -> None:
    if cgroups.version() == 2:
        top = cgroups.CGROUP_ROOT / path.strip("/")
        _chown(top, uid, gid, V2_DELEGATE_FILES)
        return
    for mount, controllers in cgroups.hierarchies():
        if "name=systemd" in controllers or controllers == {"v2"}:
            top = mount / path.strip("/")
            if top.is_dir():
                _chown(top, uid, gid, None)


def _chown(top: Path, uid: int, gid: int, files: tuple[str, ...] | None) -> None:
    os.chown(top, uid, gid)
    for entry in os.scandir(top):
        if entry.is_file() and (files is None or entry.name in files):
            os.chown(entry.path, uid, gid)
