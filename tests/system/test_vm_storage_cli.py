"""VM root disks and volumes through the CLI and a real daemon: one TCG boot.

A VM launched from the busybox image boots its own qcow2 clone of the image's base
disk (--disk sets its size); a volume written by a container is hot-plugged into the
running VM, read and written there, hot-unplugged, and read back by the container.
"""

from __future__ import annotations

import json

import pytest

from tests.system.conftest import Daemon

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.qemu,
              pytest.mark.slow]

WAIT_VDB = "n=0; while [ ! -e /sys/block/vdb ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done"


def sh(daemon: Daemon, name: str, script: str) -> str:
    return daemon.cli("exec", name, "--", "sh", "-c", script).stdout


def test_vm_root_disk_and_hotplugged_volume(daemon: Daemon) -> None:
    d = daemon
    d.cli("image", "build", "busybox")
    d.cli("launch", "busybox", "c1")
    d.cli("volume", "create", "data", "--size", "32MiB")
    d.cli("volume", "attach", "data", "c1", "/data")
    d.cli("restart", "c1", "--timeout", "1")
    sh(d, "c1", "echo from-container > /data/f")
    d.cli("stop", "c1", "--timeout", "1")
    d.cli("volume", "detach", "data", "c1")

    d.cli("launch", "busybox", "vm1", "--type", "vm", "--machine", "pc", "--memory", "128MiB",
          "--disk", "256MiB")
    out = sh(d, "vm1", "grep ' / ' /proc/mounts; cat /sys/block/vda/size")
    mount, sectors = out.splitlines()
    assert mount.startswith("/dev/vda / ext4") and int(sectors) * 512 == 256 << 20

    # hot-plug into the running VM: the container's file is there, the VM's goes back
    d.cli("volume", "attach", "data", "vm1")
    out = sh(d, "vm1", f"{WAIT_VDB}; cat /sys/block/vdb/serial; echo; mkdir -p /mnt/v;"
                       " mount /dev/vdb /mnt/v && cat /mnt/v/f && echo from-vm > /mnt/v/g &&"
                       " umount /mnt/v")
    assert out == "vol-data\nfrom-container\n"
    r = d.cli("volume", "attach", "data", "c1", "/data", check=False)
    assert r.returncode == 1 and "attached to running instance 'vm1'" in r.stderr, r.stderr
    d.cli("volume", "detach", "data", "vm1")
    assert sh(d, "vm1", "ls /sys/block") == "vda\n"

    d.cli("volume", "attach", "data", "c1", "/data")
    d.cli("start", "c1")
    assert sh(d, "c1", "cat /data/g") == "from-vm\n"
    info = json.loads(d.cli("info", "vm1", "--format", "json").stdout)
    assert info["root"]["size"] == 256 << 20
    d.cli("delete", "vm1", "--force")
    d.cli("delete", "c1", "--force")
    d.cli("volume", "delete", "data")
    pool = json.loads(d.cli("storage", "info", "default", "--format", "json").stdout)
    assert isinstance(pool, dict) and (pool["roots"], pool["volumes"]) == (0, 0)
