"""Host probe: parse helpers on sample text, and the probe's consistency on this host."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cumulo.host import probe as probe_mod
from cumulo.host.probe import (
    cgroup_layout,
    kvm_mode,
    parse_cpu_flags,
    parse_meminfo_total,
    parse_mountinfo,
    parse_version,
    pick_oci_runtime,
    probe,
)

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 22 0:40 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
"""

V2_MOUNTINFO = """\
25 23 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""

CPUINFO_VMX = """\
processor\t: 0
flags\t\t: fpu vme de pse vmx sse2
processor\t: 1
flags\t\t: fpu vme de pse vmx sse2 avx
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\n", "1.1.5"),
        ("crun version 1.8.1\ncommit: f8a096be\n", "1.8.1"),
        ("conmon version 2.1.6\ncommit: unknown\n", "2.1.6"),
        ("Version: 3.17.1\n", "3.17.1"),
        ("nftables v1.0.6 (Lester Gooch #5)\n", "1.0.6"),
        ("QEMU emulator version 7.2.0 (Debian 1:7.2+dfsg-7)\nCopyright\n", "7.2.0"),
        ("TPM emulator version 0.7.1, Copyright (c) 2014-2021 IBM Corp.\n", "0.7.1"),
        ("\nno number here\n1.2.3 on line two\n", None),
        ("", None),
    ],
)
def test_parse_version(text: str, expected: str | None) -> None:
    assert parse_version(text) == expected


def test_parse_cpu_flags_union_of_all_cpus() -> None:
    flags = parse_cpu_flags(CPUINFO_VMX)
    assert {"vmx", "sse2", "avx"} <= flags
    assert "svm" not in flags


def test_parse_meminfo_total_in_bytes() -> None:
    text = "MemFree:  100 kB\nMemTotal:       24731708 kB\n"
    assert parse_meminfo_total(text) == 24731708 * 1024
    assert parse_meminfo_total("") == 0


def test_parse_mountinfo_fields_and_escapes() -> None:
    mounts = {m.mountpoint: m for m in parse_mountinfo(HYBRID_MOUNTINFO)}
    assert mounts["/sys/fs/cgroup"].fstype == "tmpfs"
    assert mounts["/sys/fs/cgroup/cpu,cpuacct"].options >= {"cpu", "cpuacct"}
    assert mounts["/sys/fs/cgroup/unified"].fstype == "cgroup2"
    assert "/mnt/with space" in mounts   # \040 decoded; optional "shared:9" skipped


def test_cgroup_layout_hybrid_counts_as_v1() -> None:
    version, ctl = cgroup_layout(parse_mountinfo(HYBRID_MOUNTINFO))
    assert version == 1
    assert ctl["cpu"] == ctl["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert set(ctl) == {"cpu", "cpuacct", "cpuset", "memory", "blkio"}


def test_cgroup_layout_unified() -> None:
    assert cgroup_layout(parse_mountinfo(V2_MOUNTINFO)) == (2, {})


def test_cgroup_layout_none_when_only_named_or_cgroup2_elsewhere() -> None:
    text = (
        "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    )
    assert cgroup_layout(parse_mountinfo(text))[0] == 0


@pytest.mark.parametrize(
    ("flags", "modules", "dev", "expected"),
    [
        ({"vmx"}, {"kvm", "kvm_intel"}, True, ("vmx", True)),
        ({"svm"}, {"kvm", "kvm_amd"}, True, ("svm", True)),
        ({"vmx"}, {"kvm"}, True, ("vmx", False)),            # module not loaded
        ({"svm"}, {"kvm_amd"}, False, ("svm", False)),        # no /dev/kvm
        (set(), {"kvm", "kvm_pvm"}, True, ("pvm", False)),    # PVM: never a stock guest
        (set(), {"kvm_pvm"}, False, ("none", False)),
        (set(), set(), False, ("none", False)),
    ],
)
def test_kvm_mode(
    flags: set[str], modules: set[str], dev: bool, expected: tuple[str, bool]
) -> None:
    assert kvm_mode(flags, modules, dev) == expected


@pytest.mark.parametrize(
    ("runtimes", "version", "crun_ok", "expected"),
    [
        ({"runc": "1.1.5", "crun": "1.8.1"}, 2, True, "crun"),
        ({"runc": "1.1.5", "crun": "1.8.1"}, 1, False, "runc"),
        ({"runc": "1.1.5", "crun": "1.8.1"}, 1, True, "runc"),
        ({"crun": "1.8.1"}, 1, True, "crun"),
        ({"crun": "1.8.1"}, 1, False, None),   # hybrid host: crun refuses to start
        ({}, 2, True, None),
    ],
)
def test_pick_oci_runtime(
    runtimes: dict[str, str], version: int, crun_ok: bool, expected: str | None
) -> None:
    assert pick_oci_runtime(runtimes, version, crun_ok) == expected


def test_missing_or_hanging_tool_is_none() -> None:
    assert probe_mod.tool_version("cumulo-no-such-tool") is None
    assert probe_mod._run(["sleep", "5"], timeout=0.05) is None   # a tool that hangs


def _modules() -> set[str]:
    return {p.name for p in Path("/sys/module").iterdir()}


@pytest.mark.root
def test_probe_matches_this_host() -> None:
    """Internal consistency with the real /proc, /sys and PATH (holds on any host)."""
    info = probe()
    data = info.to_dict()
    assert data["kernel"] == os.uname().release and info.cpus >= 1 and info.memory_bytes > 0

    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    root_is_v2 = any(m.mountpoint == "/sys/fs/cgroup" and m.fstype == "cgroup2" for m in mounts)
    if root_is_v2:
        assert info.cgroup_version == 2
    elif any(m.fstype == "cgroup" and "memory" in m.options for m in mounts):
        assert info.cgroup_version == 1 and "memory" in info.cgroup_controllers

    flags = parse_cpu_flags(Path("/proc/cpuinfo").read_text())
    hw = bool(flags & {"vmx", "svm"})
    pvm = "kvm_pvm" in _modules() and Path("/dev/kvm").exists()
    assert (info.kvm == "pvm") == (pvm and not hw)
    assert (info.kvm in ("vmx", "svm")) == hw
    if info.kvm == "pvm":
        assert not info.kvm_usable
        assert "KVM is PVM-only: VMs will use TCG emulation" in info.notes

    for tool, key in (("runc", None), ("crun", None), ("qemu-system-x86_64", "qemu"),
                      ("swtpm", "swtpm"), ("conmon", "conmon"), ("criu", "criu")):
        present = shutil.which(tool) is not None
        value = info.oci_runtimes.get(tool) if key is None else data[key]
        assert (value is not None) == present, tool
    if info.oci_runtime_default is not None:
        assert info.oci_runtime_default in info.oci_runtimes
    if info.criu is None:
        assert not info.criu_check
    assert all(isinstance(n, str) and n for n in info.notes)
