"""Twenty clones of one realistic template cost less than 5% of it on disk.

The template is built here, offline: busybox-static plus 96 MiB of incompressible data
(a stand-in for the libraries and programs of a real distribution), imported as a
rootfs tarball. Twenty containers run from it, twenty VM root disks are cloned from
its base disk (made, not booted); what they add to the pool is measured with ``du``
(allocated blocks, not apparent sizes). Writes in one clone reach neither the others
nor the template.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from bench.storage import make_template

from tests.system.conftest import Daemon

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.qemu,
              pytest.mark.slow]

CLONES = 20
PAYLOAD = 96 << 20
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]


def du(*paths: Path) -> int:
    """Bytes allocated under ``paths`` (each inode once, this filesystem only)."""
    out = subprocess.run(["du", "-s", "-x", "-c", "-B1", *map(str, paths)], check=True,
                         capture_output=True, text=True).stdout
    return int(out.splitlines()[-1].split()[0])


def test_twenty_clones_add_less_than_five_percent(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    tar = make_template(tmp_path, PAYLOAD)
    d.cli("image", "import", str(tar), "--alias", "big")
    tar.unlink()
    img = json.loads(d.cli("image", "info", "big", "--format", "json").stdout)
    rootfs = d.state_dir / "images" / img["fingerprint"] / "rootfs"
    template = du(rootfs)
    assert template > PAYLOAD, template
    roots = d.state_dir / "storage" / "default" / "roots"
    empty = du(roots)

    names = [f"c{i}" for i in range(CLONES)]
    vms = [f"v{i}" for i in range(CLONES)]
    with d.client() as c:   # the API straight away: forty CLI start-ups would be most of it
        for op in [c.create(n, "big", command=SLEEP, start=True, wait=False) for n in names]:
            c.wait(op)
    containers = du(roots) - empty
    assert containers < template * 0.05, (containers, template)

    with d.client() as c:
        for op in [c.create(n, "big", type="vm", wait=False) for n in vms]:
            c.wait(op)
    base = list((d.state_dir / "images" / img["fingerprint"] / "vm").glob("base-*.qcow2"))
    assert len(base) == 1
    base_disk = du(base[0])
    assert base_disk > PAYLOAD, base_disk
    vm_disks = du(roots) - empty - containers
    assert vm_disks < base_disk * 0.05, (vm_disks, base_disk)
    print(f"\ntemplate {template >> 20} MiB: {CLONES} containers add {containers >> 10} KiB"
          f" ({100 * containers / template:.2f}%); base disk {base_disk >> 20} MiB:"
          f" {CLONES} VM disks add {vm_disks >> 10} KiB ({100 * vm_disks / base_disk:.2f}%)")

    # writes in one clone: invisible in the others and in the template
    before = subprocess.run(["sha256sum", str(rootfs / "usr/share/payload/data.bin")],
                            check=True, capture_output=True, text=True).stdout.split()[0]
    d.cli("exec", "c0", "--", "sh", "-c",
          "echo only-c0 > /etc/mark; dd if=/dev/zero of=/usr/share/payload/data.bin bs=1M"
          " count=1 conv=notrunc 2>/dev/null")
    r = d.cli("exec", "c1", "--", "sh", "-c", "cat /etc/mark 2>/dev/null || echo none")
    assert r.stdout == "none\n"
    assert not (rootfs / "etc/mark").exists()
    after = subprocess.run(["sha256sum", str(rootfs / "usr/share/payload/data.bin")],
                           check=True, capture_output=True, text=True).stdout.split()[0]
    assert after == before
    r = d.cli("exec", "c1", "--", "sh", "-c",
              "dd if=/usr/share/payload/data.bin bs=1M count=1 2>/dev/null | busybox sha256sum")
    r0 = d.cli("exec", "c0", "--", "sh", "-c",
               "dd if=/usr/share/payload/data.bin bs=1M count=1 2>/dev/null | busybox sha256sum")
    assert r.stdout.split()[0] != r0.stdout.split()[0]

    with d.client() as c:
        for op in [c.delete(n, force=True, wait=False) for n in names + vms]:
            c.wait(op)
    assert du(roots) == empty
