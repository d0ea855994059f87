"""A Debian VM booted by UEFI from its own disk with a vTPM, on TCG: measured boot, then
live migration.

Measured boot: OVMF and GRUB measure the chain (PCRs 0-9), `info --tpm` reads the PCRs
and the event log through the QEMU guest agent and the log replays to them; after a
restart with the guest's kernel changed, verify names PCR 9 and the kernel's event and
nothing else (the rest of the chain replays as in the baseline); a checkpoint and
restore, and a stateful snapshot, carry the TPM's state (the PCRs survive). Bad input:
verify without a baseline, measured boot of a VM booted by SeaBIOS.

Live migration between two cumulod on this machine (each in its own network namespace,
joined by a veth: ``two_hosts`` of test_migration_cli). The root disk is mirrored over
NBD, RAM and device state follow; the guest runs on without a new boot (same boot id,
uptime goes on, a file in its tmpfs is still there), ``exec`` works through the guest
agent on the destination, its PCRs are the same (the TPM's state went along), the UEFI
variable store is in the destination's instance dir with the same bytes, and nothing of
the VM stays on the source (QEMU, swtpm, cgroup, files).

One guest for the whole module (a Debian boot on TCG takes minutes), on the first host:
the read-only tests first, then the ones that checkpoint it and change its kernel, the
migration last.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cumulo.drivers.vm import firmware
from tests.system.conftest import Daemon
from tests.system.test_migration_cli import qemus, two_hosts
from tests.system.test_vm_boot_disk import BOOT_WAIT, _debian_vm_disk, _qemus

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow,
              pytest.mark.timeout(1800)]
VM = "mb1"


def _wait_agent(d: Daemon, name: str) -> None:
    """Until systemd in the guest says it is up (the agent answers then)."""
    deadline = time.monotonic() + BOOT_WAIT
    while True:
        r = d.cli("exec", name, "--", "systemctl", "is-system-running", check=False,
                  timeout=300)
        if r.stdout.strip() in ("running", "degraded"):
            return
        assert time.monotonic() < deadline, f"{name} did not come up: {r.stdout} {r.stderr}"
        time.sleep(3)


def _tpm(d: Daemon, name: str = VM) -> dict[str, Any]:
    return json.loads(d.cli("info", name, "--tpm", "--format", "json").stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    """Two hosts; the guest booted on the first, the second with the same image."""
    disk = _debian_vm_disk()
    with two_hosts(tmp_path_factory.mktemp("mboot")) as (a, b):
        a.cli("network", "create", "lan", "--subnet", "10.97.0.0/24")
        a.cli("image", "import", str(disk), "--alias", "debian-vm", timeout=600)
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
        yield a, b


@pytest.fixture
def mb_daemon(pair: tuple[Daemon, Daemon]) -> Daemon:
    return pair[0]


def test_info_tpm_shows_the_measured_chain(mb_daemon: Daemon) -> None:
    d = mb_daemon
    t = _tpm(d)
    assert t["log_mismatched_pcrs"] == []          # the log replays to the TPM's PCRs
    assert all(int(t["pcrs"][str(n)], 16) != 0 for n in range(10))
    by_pcr: dict[int, list[dict[str, Any]]] = {}
    for e in t["events"]:
        by_pcr.setdefault(e["pcr"], []).append(e)
    # OVMF: GRUB's EFI binary into PCR 4, the GPT into 5, secure boot variables into 7
    assert any(e["description"].endswith("BOOTX64.EFI") for e in by_pcr[4])
    assert any(e["type"] == "EV_EFI_GPT_EVENT" for e in by_pcr[5])
    assert {"SecureBoot", "PK", "db"} <= {e["description"] for e in by_pcr[7]}
    # GRUB: the kernel's command line into PCR 8, the kernel file itself into PCR 9,
    # with the digest of the very bytes in the guest's /boot
    assert any(e["description"].startswith("kernel_cmdline: /vmlinuz root=LABEL=cumulo-root")
               for e in by_pcr[8])
    kernel = next(e for e in by_pcr[9] if e["description"] == "/vmlinuz")
    inside = d.cli("exec", VM, "--", "sha256sum", "/vmlinuz").stdout.split()[0]
    assert kernel["sha256"] == inside
    table = d.cli("info", VM, "--tpm").stdout
    assert "replays to the PCRs" in table and "EV_EFI_BOOT_SERVICES_APPLICATION" in table


def test_measured_boot_errors_are_one_clear_line(mb_daemon: Daemon) -> None:
    d = mb_daemon
    r = d.cli("tpm", "verify", VM, check=False)
    assert r.returncode != 0 and "has no measured-boot baseline" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # a vTPM without UEFI: SeaBIOS measures nothing; said before the guest is asked
    d.cli("launch", "debian-vm", "mbios", "--type", "vm", "--firmware", "bios", "--tpm",
          "--network", "lan", "--memory", "256MiB")
    try:
        for args in (("info", "mbios", "--tpm"), ("tpm", "baseline", "mbios")):
            r = d.cli(*args, check=False)
            assert r.returncode != 0 and "measured boot needs UEFI firmware" in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1
    finally:
        d.cli("stop", "mbios", "--force")
        d.cli("delete", "mbios")
    assert not _qemus(d, "mbios")
    r = d.cli("tpm", "baseline", "nope", check=False)
    assert r.returncode != 0 and "not found" in r.stderr


def test_a_checkpoint_carries_the_tpm_state(mb_daemon: Daemon) -> None:
    d = mb_daemon
    before = _tpm(d)["pcrs"]
    d.cli("checkpoint", VM, timeout=600)
    assert not _qemus(d, VM)
    d.cli("restore", VM, timeout=600)
    # the guest ran on (no new boot): its TPM has the same PCRs, swtpm got them back
    # from the checkpoint; the UEFI variables file stayed with the instance
    assert _tpm(d)["pcrs"] == before
    assert "tpm" in d.cli("exec", VM, "--", "ls", "/sys/class/tpm").stdout
    # a stateful snapshot: the guest and its TPM come back at that instant
    d.cli("snapshot", "create", VM, "s1", "--stateful", timeout=600)
    d.cli("exec", VM, "--", "sh", "-c", "echo after > /root/marker; sync")
    d.cli("stop", VM, "--force")
    d.cli("snapshot", "restore", VM, "s1", timeout=600)
    assert _tpm(d)["pcrs"] == before
    r = d.cli("exec", VM, "--", "cat", "/root/marker", check=False)
    assert r.returncode != 0 and "No such file" in r.stderr
    d.cli("snapshot", "delete", VM, "s1")


def test_verify_after_a_restart_finds_the_changed_kernel_and_nothing_else(
        mb_daemon: Daemon, tmp_path: Path) -> None:
    """One restart serves both halves: after it, every event but the changed kernel's
    replays as in the baseline (a restart of the same chain verifies), and the kernel's
    new digest is named."""
    d = mb_daemon
    out = d.cli("tpm", "baseline", VM).stdout
    assert "Recorded the measured-boot baseline" in out
    assert d.cli("tpm", "verify", VM).returncode == 0
    # the guest's kernel changes on its disk (a few bytes appended: it still boots)
    kernel = tmp_path / "vmlinuz"
    d.cli("file", "pull", VM, "/vmlinuz", str(kernel))
    kernel.write_bytes(kernel.read_bytes() + b"not the kernel we measured")
    d.cli("file", "push", VM, str(kernel), "/vmlinuz")
    d.cli("exec", VM, "--", "sync")
    d.cli("restart", VM, "--timeout", "240", timeout=600)
    _wait_agent(d, VM)
    r = d.cli("tpm", "verify", VM, check=False)
    assert r.returncode == 1 and "CHANGED" in r.stdout, r.stdout + r.stderr
    assert "PCR 9 (files GRUB read" in r.stdout and "new: EV_IPL /vmlinuz" in r.stdout
    v = json.loads(d.cli("tpm", "verify", VM, "--format", "json", check=False).stdout)
    # firmware, GRUB, command line, initrd and grub.cfg measured as before the restart:
    # only the kernel's event is new
    assert [(c["pcr"], c["events"]) for c in v["changed"]] == [(9, ["EV_IPL /vmlinuz"])]
    # the new chain becomes the baseline: it verifies again
    d.cli("tpm", "baseline", VM)
    assert d.cli("tpm", "verify", VM).returncode == 0


def _swtpms(state_dir: Path) -> list[int]:
    return [p.pid for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "swtpm" and str(state_dir) in " ".join(p.info["cmdline"]
                                                                        or [])]


def _vars_file(d: Daemon) -> Path:
    [found] = list(d.state_dir.rglob("efivars.fd"))
    return found


def test_the_uefi_disk_vm_with_its_vtpm_migrates_live(pair: tuple[Daemon, Daemon]) -> None:
    a, b = pair
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
