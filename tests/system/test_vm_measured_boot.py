"""Measured boot of a Debian VM booted by UEFI with a vTPM, on TCG: OVMF and GRUB measure
the chain (PCRs 0-9), `info --tpm` reads the PCRs and the event log through the QEMU
guest agent and the log replays to them, a baseline verifies after a restart of the
same chain and fails after the guest's kernel changed (PCR 9 named, with the event); a
checkpoint and restore, and a stateful snapshot, carry the TPM's state (the PCRs
survive). Bad input: verify without a baseline, measured boot of a VM booted by SeaBIOS.

One guest for the whole module (a Debian boot on TCG takes a minute or more): the
read-only tests first, the one that changes its kernel last.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import Daemon, netns_daemon
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
def mb_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    disk = _debian_vm_disk()
    with netns_daemon(tmp_path_factory.mktemp("mboot"), "mbt") as d:
        d.cli("network", "create", "lan", "--subnet", "10.97.0.0/24")
        d.cli("image", "import", str(disk), "--alias", "debian-vm", timeout=600)
        d.cli("launch", "debian-vm", VM, "--type", "vm", "--firmware", "uefi", "--tpm",
              "--network", "lan", "--memory", "512MiB")
        _wait_agent(d, VM)
        yield d


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
    assert not _qemus("mbios")
    r = d.cli("tpm", "baseline", "nope", check=False)
    assert r.returncode != 0 and "not found" in r.stderr


def test_a_checkpoint_carries_the_tpm_state(mb_daemon: Daemon) -> None:
    d = mb_daemon
    before = _tpm(d)["pcrs"]
    d.cli("checkpoint", VM, timeout=600)
    assert not _qemus(VM)
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


def test_verify_passes_after_a_restart_and_fails_after_the_kernel_changed(
        mb_daemon: Daemon, tmp_path: Path) -> None:
    d = mb_daemon
    out = d.cli("tpm", "baseline", VM).stdout
    assert "Recorded the measured-boot baseline" in out
    d.cli("restart", VM, "--timeout", "240", timeout=600)
    _wait_agent(d, VM)
    r = d.cli("tpm", "verify", VM, check=False)
    assert r.returncode == 0 and "matches the baseline" in r.stdout, r.stdout + r.stderr
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
    assert [c["pcr"] for c in v["changed"]] == [9]    # firmware, GRUB, command line: same
    # the new chain becomes the baseline: it verifies again
    d.cli("tpm", "baseline", VM)
    assert d.cli("tpm", "verify", VM).returncode == 0
