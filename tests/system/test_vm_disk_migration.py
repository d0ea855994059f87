"""Live migration of a Debian VM booted by UEFI from its own disk, with a vTPM, between
two cumulod on this machine (each in its own network namespace, joined by a veth: the
``hosts`` fixture of test_migration_cli). The root disk is mirrored over NBD, RAM and
device state follow; the guest runs on without a new boot (same boot id, uptime goes
on, a file in its tmpfs is still there), ``exec`` works through the guest agent on the
destination, its PCRs are the same (the TPM's state went along), the UEFI variable
store is in the destination's instance dir with the same bytes, and nothing of the VM
stays on the source (QEMU, swtpm, cgroup, files).

One VM, one migration: a Debian boot on TCG takes a minute or more.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path

import psutil
import pytest

from cumulo.drivers.vm import firmware
from tests.system.conftest import Daemon
from tests.system.test_migration_cli import hosts, qemus  # noqa: F401 (the fixture)
from tests.system.test_vm_boot_disk import _debian_vm_disk
from tests.system.test_vm_measured_boot import _tpm, _wait_agent

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow,
              pytest.mark.timeout(1800)]
VM = "dm1"


def _swtpms(state_dir: Path) -> list[int]:
    return [p.pid for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "swtpm" and str(state_dir) in " ".join(p.info["cmdline"]
                                                                        or [])]


def _vars_file(d: Daemon) -> Path:
    [found] = list(d.state_dir.rglob("efivars.fd"))
    return found


def test_a_uefi_disk_vm_with_a_vtpm_migrates_live(hosts: tuple[Daemon, Daemon]  # noqa: F811
                                                  ) -> None:
    a, b = hosts
    disk = _debian_vm_disk()
    a.cli("image", "import", str(disk), "--alias", "debian-vm", timeout=600)
    a.cli("network", "create", "lan", "--subnet", "10.96.0.0/24")
    a.cli("launch", "debian-vm", VM, "--type", "vm", "--firmware", "uefi", "--tpm",
          "--network", "lan", "--memory", "512MiB")
    # b gets the same image while the guest boots (the migration would send it otherwise)
    imported: list[str] = []
    t = threading.Thread(target=lambda: imported.append(
        b.cli("image", "import", str(disk), "--alias", "debian-vm", timeout=600).stdout))
    t.start()
    a.cli("remote", "add", "b", "https://10.77.0.2:8443", "--token",
          b.cli("remote", "token").stdout.strip())
    _wait_agent(a, VM)
    t.join(timeout=600)
    assert imported

    boot_id = a.cli("exec", VM, "--", "cat", "/proc/sys/kernel/random/boot_id").stdout
    up_before = float(a.cli("exec", VM, "--", "cat", "/proc/uptime").stdout.split()[0])
    a.cli("exec", VM, "--", "sh", "-c", "echo in-ram > /run/marker;"
          " echo on-disk > /root/moved; sync")
    pcrs = _tpm(a, VM)["pcrs"]
    vars_digest = hashlib.sha256(_vars_file(a).read_bytes()).hexdigest()
    # OVMF wrote its boot entries there: a fresh copy of the template would not pass below
    blank = firmware.ovmf_dir() / firmware.OVMF_VARS
    assert hashlib.sha256(blank.read_bytes()).hexdigest() != vars_digest
    assert _swtpms(a.state_dir) and qemus(a.state_dir, emulators_only=True)

    r = a.cli("migrate", VM, "--to", "b", timeout=900)
    m = re.search(r"total (\d+) ms, downtime (\d+) ms", r.stderr)
    assert m, r.stderr
    print(f"UEFI disk VM with vTPM, live on TCG: {r.stderr.strip()}")

    # it runs on b, the same boot: boot id, uptime on, RAM (its tmpfs) and disk came along
    assert json.loads(b.cli("info", VM, "--format", "json").stdout)["state"] == "running"
    assert b.cli("exec", VM, "--", "cat", "/proc/sys/kernel/random/boot_id").stdout == boot_id
    assert float(b.cli("exec", VM, "--", "cat", "/proc/uptime").stdout.split()[0]) > up_before
    assert b.cli("exec", VM, "--", "cat", "/run/marker").stdout == "in-ram\n"
    b.cli("exec", VM, "--", "sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches")
    assert b.cli("exec", VM, "--", "cat", "/root/moved").stdout == "on-disk\n"
    # the vTPM's state went along (same PCRs, read through b's swtpm), and so did the
    # UEFI variable store: b's file has the source's bytes
    assert _tpm(b, VM)["pcrs"] == pcrs
    assert _swtpms(b.state_dir)
    assert hashlib.sha256(_vars_file(b).read_bytes()).hexdigest() == vars_digest

    # nothing of it on a: no instance, QEMU, swtpm, cgroup, instance dir or VARS file
    assert json.loads(a.cli("list", "--format", "json").stdout) == []
    assert not qemus(a.state_dir) and not _swtpms(a.state_dir)
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{a.cgroup_parent}/*{VM}*"))
    assert not list(a.state_dir.rglob("efivars.fd"))
    assert not [p for p in a.state_dir.rglob(f"*{VM}*")], list(a.state_dir.rglob(f"*{VM}*"))
