"""Probe what this host can do: kernel, cgroups, KVM, OCI runtimes and helper tools.

`probe()` reads /proc, /sys and the tools' ``--version`` output once (no cache; the
daemon calls it at start; the tools run side by side). Missing tools are ``None``;
nothing raises. Each limitation becomes a sentence in ``HostInfo.notes``. The parse
helpers take text so they can be unit-tested without the real host.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cumulo.host.criu import criu_binary, network_lock
from cumulo.host.criu import unavailable as criu_unavailable
from cumulo.host.info import HostInfo

CGROUP_ROOT = Path("/sys/fs/cgroup")
# v1 controllers Cumulo uses for limits and lifecycle; these are what we report.
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer", "devices")
# Every v1 controller the kernel may mount; a mount of any of them means "v1 in use".
_ALL_V1 = frozenset(
    V1_CONTROLLERS + ("net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc")
)
TOOL_TIMEOUT = 5.0
CRIU_CHECK_TIMEOUT = 10.0
_VERSION_RE = re.compile(r"(\d+(?:\.\d+)+)")


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo, reduced to what the probe needs."""

    mountpoint: str
    fstype: str
    options: frozenset[str]   # super options, e.g. {"rw", "cpu", "cpuacct"}


# --- parse helpers (pure) -------------------------------------------------------------


def parse_version(text: str) -> str | None:
    """First dotted number on the first non-empty line ("runc version 1.1.5+ds1" -> "1.1.5")."""
    for line in text.splitlines():
        if line.strip():
            m = _VERSION_RE.search(line)
            return m.group(1) if m else None
    return None


def parse_cpu_flags(cpuinfo: str) -> set[str]:
    """The union of the ``flags`` lines of /proc/cpuinfo (x86)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            flags.update(value.split())
    return flags


def parse_meminfo_total(meminfo: str) -> int:
    """MemTotal in bytes (0 if absent)."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            unit = 1024 if len(parts) > 2 and parts[2].lower() == "kb" else 1
            return int(parts[1]) * unit
    return 0


def memory_available() -> int:
    """MemAvailable now, in bytes: what a new instance may take without pushing others out
    (0 if unknown)."""
    for line in _read(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _unescape(field: str) -> str:
    """Decode mountinfo's octal escapes (``\\040`` is a space)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/self/mountinfo; optional fields end at the " - " separator."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 2:
            continue
        opts = frozenset(rest[2].split(",")) if len(rest) > 2 else frozenset()
        mounts.append(Mount(_unescape(fields[4]), rest[0], opts))
    return mounts


def cgroup_layout(mounts: list[Mount], root: str = str(CGROUP_ROOT)) -> tuple[int, dict[str, str]]:
    """(cgroup version, {v1 controller: its mount point}) from the mount table.

    2 when ``root`` itself is cgroup2; 1 when any v1 controller is mounted (hybrid
    counts as 1); else 0. The dict lists the v1 controllers Cumulo uses.
    """
    if any(m.mountpoint == root and m.fstype == "cgroup2" for m in mounts):
        return 2, {}
    v1: dict[str, str] = {}
    any_v1 = False
    for m in mounts:
        if m.fstype != "cgroup":
            continue
        any_v1 = any_v1 or bool(m.options & _ALL_V1)
        for ctl in m.options & set(V1_CONTROLLERS):
            v1.setdefault(ctl, m.mountpoint)
    return (1 if any_v1 else 0), v1


def kvm_mode(flags: set[str], modules: set[str], dev_kvm: bool) -> tuple[str, bool]:
    """(kvm kind, usable): "vmx"/"svm" from CPU flags, else "pvm", else "none".

    Usable means a stock guest kernel runs under KVM: hardware virtualization, the
    matching module loaded and /dev/kvm present. PVM needs a PVM guest kernel.
    """
    for kind, module in (("vmx", "kvm_intel"), ("svm", "kvm_amd")):
        if kind in flags:
            return kind, dev_kvm and module in modules
    if "kvm_pvm" in modules and dev_kvm:
        return "pvm", False
    return "none", False


def pick_oci_runtime(runtimes: dict[str, str], cgroup_version: int, crun_ok: bool) -> str | None:
    """crun on pure v2 hosts, else runc, else crun if it can run here."""
    if cgroup_version == 2 and "crun" in runtimes:
        return "crun"
    if "runc" in runtimes:
        return "runc"
    if "crun" in runtimes and crun_ok:
        return "crun"
    return None


# --- host readers (never raise) -------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""


def _run(args: list[str], timeout: float = TOOL_TIMEOUT) -> tuple[int, str] | None:
    """(exit code, stdout+stderr) of a tool on PATH, or None if absent / hung / broken."""
    if shutil.which(args[0]) is None:
        return None
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, errors="replace", check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.returncode, proc.stdout + proc.stderr


def tool_version(tool: str) -> str | None:
    """Version number from ``tool --version``, None if the tool is missing or fails."""
    out = _run([tool, "--version"])
    if out is None or out[0] != 0:
        return None
    return parse_version(out[1])


def _criu_facts(path: str | None) -> tuple[str | None, bool, str | None]:
    """CRIU's version, whether ``criu check`` passes, and how it locks the network."""
    criu = None if path is None else tool_version(path)
    if path is None or criu is None:
        return criu, False, None
    check = _run([path, "check"], timeout=CRIU_CHECK_TIMEOUT)
    if check is None or check[0] != 0:
        return criu, False, None
    return criu, True, network_lock(path)


def _loaded_modules() -> set[str]:
    """Kernel modules from /sys/module (built-ins too) and /proc/modules."""
    names: set[str] = set()
    with contextlib.suppress(OSError):
        names.update(p.name for p in Path("/sys/module").iterdir())
    names.update(line.split()[0] for line in _read(Path("/proc/modules")).splitlines() if line)
    return names


def _v1_io_weight(blkio_root: Path) -> tuple[bool, str | None]:
    """blkio weight on v1: a weight file in the root, or BFQ active on some disk.

    ``blkio.weight`` (CFQ, kernels < 5.0) shows in the root. ``blkio.bfq.weight``
    is only created in child cgroups and only acts on devices whose scheduler is
    bfq, so without it in the root we require a block device running bfq.
    """
    if any((blkio_root / f).exists() for f in ("blkio.weight", "blkio.bfq.weight")):
        return True, None
    if _bfq_active():
        return True, None
    return False, (
        "no blkio weight file in the blkio root and no block device uses the bfq "
        "scheduler: io_weight limits are not enforceable"
    )


def _bfq_active() -> bool:
    try:
        queues = list(Path("/sys/block").glob("*/queue/scheduler"))
    except OSError:
        return False
    return any("[bfq]" in _read(q) for q in queues)


def _v2_io_weight(root: Path) -> tuple[bool, str | None]:
    """io weight on v2: the io controller is available and a child shows a weight file.

    ``io.weight``/``io.bfq.weight`` never exist in the root cgroup, so we look at
    its direct children. If none has io enabled yet we trust the io controller
    being listed in the root's cgroup.controllers (the file appears once enabled).
    """
    if "io" not in _read(root / "cgroup.controllers").split():
        return False, "no cgroup v2 io controller: io_weight limits are not enforceable"
    try:
        children = [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        children = []
    files = ("io.weight", "io.bfq.weight")
    if any((c / f).exists() for c in children for f in files):
        return True, None
    return True, "io weight assumed from the io controller: no child cgroup has io enabled yet"


def _crun_hybrid_blocked(mounts: list[Mount]) -> bool:
    """crun refuses hybrid hosts whose unified (cgroup2) mount carries any controller."""
    return any(
        m.fstype == "cgroup2" and _read(Path(m.mountpoint) / "cgroup.controllers").split()
        for m in mounts
    )


# --- the probe ------------------------------------------------------------------------


def probe() -> HostInfo:
    """Measure this host now; see docs/host-info.md for every field."""
    notes: list[str] = []
    uname = os.uname()
    try:
        cpus = len(os.sched_getaffinity(0))
    except OSError:
        cpus = os.cpu_count() or 1
    memory = parse_meminfo_total(_read(Path("/proc/meminfo")))

    # cgroups
    mounts = parse_mountinfo(_read(Path("/proc/self/mountinfo")))
    cg_version, v1_mounts = cgroup_layout(mounts)
    io_note: str | None
    if cg_version == 2:
        controllers = _read(CGROUP_ROOT / "cgroup.controllers").split()
        io_weight, io_note = _v2_io_weight(CGROUP_ROOT)
    elif cg_version == 1:
        controllers = [c for c in V1_CONTROLLERS if c in v1_mounts]
        if "blkio" in v1_mounts:
            io_weight, io_note = _v1_io_weight(Path(v1_mounts["blkio"]))
        else:
            io_weight, io_note = False, "blkio controller not mounted: io limits unavailable"
        missing = [c for c in V1_CONTROLLERS if c not in v1_mounts]
        if missing:
            notes.append(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
    else:
        controllers, io_weight = [], False
        io_note = "no cgroup hierarchy mounted: resource limits unavailable"
    if io_note:
        notes.append(io_note)

    # user namespaces: as root only max_user_namespaces matters (the Debian
    # unprivileged_userns_clone switch gates unprivileged callers only).
    max_userns = _read(Path("/proc/sys/user/max_user_namespaces")).strip()
    clone = _read(Path("/proc/sys/kernel/unprivileged_userns_clone")).strip()
    userns = max_userns.isdigit() and int(max_userns) > 0
    if userns and os.geteuid() != 0 and clone not in ("", "1"):
        userns = False
    if not userns:
        notes.append("user namespaces are disabled: containers run without an idmapped root")

    # KVM
    modules = _loaded_modules()
    flags = parse_cpu_flags(_read(Path("/proc/cpuinfo")))
    kvm, kvm_usable = kvm_mode(flags, modules, Path("/dev/kvm").exists())
    if kvm == "pvm":
        notes.append("KVM is PVM-only: VMs will use TCG emulation")
    elif kvm == "none":
        notes.append("no hardware virtualization: VMs will use TCG emulation")
    elif not kvm_usable:
        notes.append(f"CPU has {kvm} but /dev/kvm or its module is missing: VMs will use TCG")

    # the tools' versions and CRIU's checks: side by side, each one a process to wait for
    tools = ("runc", "crun", "conmon", "qemu-system-x86_64", "swtpm", "nft")
    criu_path = criu_binary()
    with ThreadPoolExecutor(len(tools) + 1) as pool:
        criu_facts = pool.submit(_criu_facts, criu_path)
        version = dict(zip(tools, pool.map(tool_version, tools), strict=True))
        criu, criu_check, criu_lock = criu_facts.result()

    # OCI runtimes
    runtimes = {n: v for n in ("runc", "crun") if (v := version[n]) is not None}
    crun_ok = True
    if "crun" in runtimes and cg_version == 1 and _crun_hybrid_blocked(mounts):
        crun_ok = False
        notes.append(
            "crun is installed but unusable: cgroups in hybrid mode not supported "
            "(the cgroup2 mount carries controllers)"
        )
    default = pick_oci_runtime(runtimes, cg_version, crun_ok)
    if default is None:
        notes.append("no usable OCI runtime (runc or crun): containers unavailable")

    conmon = version["conmon"]
    if conmon is None:
        notes.append("conmon is not installed: containers are supervised by cumulod itself")
    qemu = version["qemu-system-x86_64"]
    if qemu is None:
        notes.append("qemu-system-x86_64 is not installed: virtual machines unavailable")

    criu_probe = HostInfo(criu=criu, criu_check=criu_check, criu_network_lock=criu_lock)
    if (why := criu_unavailable(criu_probe, criu_path)) is not None:
        notes.append(f"checkpoint/restore unavailable: {why}")

    swtpm = version["swtpm"]
    if swtpm is None:
        notes.append("swtpm is not installed: VMs get no TPM")
    nftables = version["nft"]
    if nftables is None:
        notes.append("nft is not installed: network isolation and NAT unavailable")

    return HostInfo(
        kernel=uname.release,
        arch=uname.machine,
        cpus=cpus,
        memory_bytes=memory,
        cgroup_version=cg_version,
        cgroup_controllers=controllers,
        cgroup_io_weight=io_weight,
        userns=userns,
        kvm=kvm,
        kvm_usable=kvm_usable,
        oci_runtimes=runtimes,
        oci_runtime_default=default,
        conmon=conmon,
        qemu=qemu,
        criu=criu,
        criu_check=criu_check,
        criu_network_lock=criu_lock,
        swtpm=swtpm,
        nftables=nftables,
        notes=notes,
    )
