"""UEFI secure boot of a VM booted from its own disk, on TCG: the `debian/12 --vm` disk
(Debian's shim signed by Microsoft, GRUB and kernel signed by Debian) boots with
`--secure-boot` (OVMF's secure-boot build with Microsoft's keys, q35 with SMM); the
guest's firmware says SecureBoot is on, `info` says so, and a checkpoint and restore
keep it. An unsigned bootloader is refused by the firmware: a clear error within a
bounded time, nothing left. Bad input: secure boot with SeaBIOS, on pc, for a
direct-kernel VM. The same guest serves `exec -t` in a VM booted from its disk: a
real pty in the guest (its own device, its size, ^C, the exit code), through the CLI.

One Debian boot for the module (minutes on TCG); the unsigned disk is a tiny GPT disk
with GRUB made here, which the firmware refuses at once.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import BIN, Daemon, netns_daemon
from tests.system.test_vm_boot_disk import _debian_vm_disk, _qemus
from tests.system.test_vm_console import Pty
from tests.system.test_vm_measured_boot import _wait_agent as _wait_up

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow,
              pytest.mark.timeout(1800)]
VM = "sb1"
MIB = 2**20


@pytest.fixture(scope="module")
def sb_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    disk = _debian_vm_disk()
    with netns_daemon(tmp_path_factory.mktemp("sboot"), "sbt") as d:
        d.cli("network", "create", "lan", "--subnet", "10.98.0.0/24")
        d.cli("image", "import", str(disk), "--alias", "debian-vm", timeout=600)
        yield d


@pytest.fixture(scope="module")
def sb_vm(sb_daemon: Daemon) -> str:
    """The secure-boot guest, up (launched once for the module)."""
    sb_daemon.cli("launch", "debian-vm", VM, "--type", "vm", "--secure-boot", "--network",
                  "lan", "--memory", "512MiB", timeout=600)
    _wait_up(sb_daemon, VM)
    return VM


def _unsigned_disk(path: Path) -> Path:
    """A GPT disk whose EFI system partition holds GRUB made here (signed by no one)."""
    with open(path, "wb") as f:
        f.truncate(40 * MIB)
    subprocess.run(["sfdisk", "--quiet", str(path)], check=True, text=True,
                   input="label: gpt\nstart=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n")
    subprocess.run(["mkfs.vfat", "-F", "32", "--offset", "2048", str(path),
                    str((40 * MIB - 2 * MIB) // 1024)], check=True, capture_output=True)
    efi = path.with_name("BOOTX64.EFI")
    subprocess.run(["grub-mkimage", "-O", "x86_64-efi", "-o", str(efi), "-p", "/boot/grub",
                    "normal", "echo"], check=True)
    img = f"-i{path}@@1M"
    subprocess.run(["mmd", img, "::/EFI", "::/EFI/BOOT"], check=True)
    subprocess.run(["mcopy", img, str(efi), "::/EFI/BOOT/BOOTX64.EFI"], check=True)
    return path


def test_a_signed_debian_disk_boots_with_secure_boot(sb_daemon: Daemon, sb_vm: str) -> None:
    d = sb_daemon
    qemu = _qemus(d, VM)[0]   # OVMF's secure-boot build, its flash writable from SMM only
    assert "q35,smm=on" in qemu and "property=secure,value=on" in qemu
    assert "OVMF_CODE_4M.secboot.fd" in qemu
    info = d.cli("info", VM).stdout
    assert "uefi, secure boot on" in info and "security.secureboot=true" in info, info
    # the guest's view: the firmware's SecureBoot variable, and its kernel locked down
    assert d.cli("exec", VM, "--", "mokutil", "--sb-state").stdout.strip() \
        == "SecureBoot enabled"
    logs = d.cli("logs", VM).stdout
    assert "EFI stub: UEFI Secure Boot is enabled" in logs
    assert "secureboot: Secure boot enabled" in logs


def test_exec_with_a_terminal_in_a_vm_booted_from_its_disk(sb_daemon: Daemon,
                                                            sb_vm: str) -> None:
    d = sb_daemon
    t = Pty([str(BIN / "cumulo"), "exec", "-t", VM, "--", "sh"], d.env)
    try:
        t.expect(b"# ", 120)                      # dash's prompt: it sees a terminal
        t.send(b"tty; stty size; echo sum=$((6*7))\r")
        seen = t.expect(b"sum=42")
        assert b"/dev/pts/" in seen and b"not a tty" not in seen, seen
        # ^C reaches the foreground job through the guest's pty; the job itself says it
        # runs (dash made it the foreground group before that), so ^C cannot come early
        t.send(b"sh -c 'echo sleeping-$((2+3)); exec sleep 300'\r")
        t.expect(b"sleeping-5", 60)
        t.send(b"\x03")
        t.send(b"echo back=$((1+1))\r")
        t.expect(b"back=2", 60)
        t.send(b"exit 7\r")
        assert t.proc.wait(60) == 7
    finally:
        t.close()
    # the session is gone from the guest; exec without -t still works beside it
    left = d.cli("exec", VM, "--", "sh", "-c", "ls /run/cumulo-tty;"
                 " grep -lx sleep /proc/[0-9]*/comm || true").stdout
    assert left.strip() == "", left


def test_a_checkpoint_keeps_secure_boot(sb_daemon: Daemon, sb_vm: str) -> None:
    d = sb_daemon
    # a checkpoint and restore bring back the same machine: firmware, keys, SMM
    d.cli("exec", VM, "--", "sh", "-c", "echo kept > /run/marker")
    d.cli("checkpoint", VM, timeout=600)
    assert not _qemus(d, VM)
    d.cli("restore", VM, timeout=600)
    assert "q35,smm=on" in _qemus(d, VM)[0]
    assert d.cli("exec", VM, "--", "cat", "/run/marker").stdout == "kept\n"
    assert d.cli("exec", VM, "--", "mokutil", "--sb-state").stdout.strip() \
        == "SecureBoot enabled"
    # a kernel upgrade in the guest runs update-grub (grub-common came with the signed
    # GRUB): the grub.cfg it writes keeps the serial console the boot check reads
    d.cli("exec", VM, "--", "update-grub", timeout=300)
    cfg = d.cli("exec", VM, "--", "cat", "/boot/grub/grub.cfg").stdout
    assert "console=ttyS0,115200n8" in cfg and "serial --unit=0 --speed=115200" in cfg
    d.cli("stop", VM, "--force")
    d.cli("delete", VM)
    assert not _qemus(d, VM)


def test_an_unsigned_bootloader_is_refused_with_a_clear_error(sb_daemon: Daemon,
                                                              tmp_path: Path) -> None:
    d = sb_daemon
    d.cli("image", "import", str(_unsigned_disk(tmp_path / "unsigned.raw")),
          "--alias", "unsigned")
    t0 = time.monotonic()
    r = d.cli("launch", "unsigned", "u1", "--type", "vm", "--secure-boot", check=False,
              timeout=400)
    assert r.returncode != 0, r.stdout
    assert "secure boot refused the VM's boot chain (Access Denied)" in r.stderr, r.stderr
    assert "BdsDxe: failed to load" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert time.monotonic() - t0 < 300          # bounded (SB_BOOT_CHECK), not a hang
    assert not _qemus(d, "u1") and "u1" not in d.cli("list").stdout
    # the same disk without secure boot: the firmware runs its GRUB
    d.cli("launch", "unsigned", "u2", "--type", "vm", "--firmware", "uefi", timeout=400)
    assert "Welcome to GRUB" in d.cli("logs", "u2").stdout
    d.cli("stop", "u2", "--force")
    d.cli("delete", "u2")


def test_secure_boot_bad_input_is_one_line(sb_daemon: Daemon) -> None:
    d = sb_daemon
    for args, said in (
            (("--firmware", "bios"), "secure boot is a UEFI feature"),
            (("--machine", "pc"), "secure boot needs --machine q35")):
        r = d.cli("launch", "debian-vm", "bad", "--type", "vm", "--secure-boot", *args,
                  check=False)
        assert r.returncode != 0 and said in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert not _qemus(d, "bad") and "bad" not in d.cli("list").stdout
    d.cli("image", "build", "busybox")
    for type_, said in (("vm", "--secure-boot applies to VMs booted from a disk image"),
                        ("container", "option 'security.secureboot' does not apply")):
        r = d.cli("launch", "busybox", "bad", "--type", type_, "--secure-boot", check=False)
        assert r.returncode != 0 and said in r.stderr, r.stderr
        assert "bad" not in d.cli("list").stdout
