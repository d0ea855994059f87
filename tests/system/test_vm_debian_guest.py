"""A Debian VM booted by UEFI from its own disk with secure boot, a vTPM and cloud-init,
on TCG: cloud-init, the guest agent, secure boot, measured boot, exec with a terminal,
then live migration, and last a clean ACPI power-off.

The disk is the cached ``image build debian/12 --vm`` disk (test_vm_boot_disk.py)
rewritten by ``qemu-img convert`` with another cluster size, as another tool would hand
it over, and imported with ``cumulo image import``. One guest boots it (a Debian boot on
TCG takes minutes; one guest serves every test here) with ``--ssh-key``,
``--user-data`` and ``--cloud-config``.

Cloud-init and the agent: the guest's own chain (shim, GRUB, Debian's kernel) booted it
with no failed unit, cloud-init ran from the NoCloud seed, the address came by DHCP, ssh
from the host side of the daemon's own namespace logs in with the key, exec (stdin,
stdout, stderr, exit code) and file push/pull go through qemu-guest-agent, which keeps
the contract of our busybox agent. Bad input (user-data that is not YAML or has no
#cloud-config line, a missing key file) fails before anything is made. The same disk
through SeaBIOS: GRUB loads Debian's kernel (the firmware's part; the rest of that boot
is the UEFI guest's). Last, the ACPI power button stops the guest cleanly, and deleting
it removes its seed.

Secure boot: the `debian/12 --vm` disk (Debian's shim signed by Microsoft, GRUB and
kernel signed by Debian) boots with `--secure-boot` (OVMF's secure-boot build with
Microsoft's keys, q35 with SMM); the guest's firmware says SecureBoot is on, `info` says
so, a checkpoint and restore and a live migration keep it. An unsigned bootloader is
refused by the firmware: a clear error within a bounded time, nothing left (a tiny GPT
disk with GRUB made here). Bad input: secure boot with SeaBIOS, on pc, for a
direct-kernel VM. `exec -t`: a real pty in the guest (its own device, its size, ^C, the
exit code), through the CLI.

Measured boot: OVMF and GRUB measure the chain (PCRs 0-9), `info --tpm` reads the PCRs
and the event log through the QEMU guest agent and the log replays to them; after a
restart with the guest's initrd changed, verify names PCR 9 and the initrd's event and
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

One guest for the whole module, on the first host: the read-only tests first, then the
ones that checkpoint it and change its kernel, then the migration, the power-off last.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cumulo.drivers.vm import firmware
from cumulo.errors import CumuloError
from tests.qga_contract import check_agent
from tests.system.cloudinit import SEED, USER_DATA, Guest, cloud_init_done, keygen, ssh
from tests.system.conftest import BIN, Daemon
from tests.system.test_migration_cli import qemus, two_hosts
from tests.system.test_vm_boot_disk import BOOT_WAIT, _debian_vm_disk, _qemus
from tests.system.test_vm_console import Pty

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow,
              pytest.mark.timeout(1800)]
VM = "mb1"
MIB = 2**20


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


def _tpm(d: Daemon, name: str = VM) -> dict[str, Any]:
    return json.loads(d.cli("info", name, "--tpm", "--format", "json").stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    """Two hosts; the guest booted on the first (cloud-init done), the second with the
    same image."""
    tmp = tmp_path_factory.mktemp("mboot")
    # a qcow2 of our own image as another tool would make it: other clusters, other bytes
    disk = tmp / "debian-12.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", "-o", "cluster_size=131072",
                    str(_debian_vm_disk()), str(disk)], check=True, timeout=600)
    key = keygen(tmp / "id_ed25519")
    (tmp / "user-data").write_text(USER_DATA)
    with two_hosts(tmp) as (a, b):
        a.cli("network", "create", "lan", "--subnet", "10.97.0.0/24")
        a.cli("image", "import", str(disk), "--alias", "debian-vm", timeout=600)
        a.cli("launch", "debian-vm", VM, "--type", "vm", "--firmware", "uefi", "--tpm",
              "--secure-boot", "--network", "lan", "--memory", "512MiB",
              "--ssh-key", f"{key}.pub", "--user-data", str(tmp / "user-data"),
              "--cloud-config", "write_files=[{path: /etc/cumulo-note, content: noted}]")
        # b gets the same image while the guest boots (the migration would send it otherwise)
        imported: list[str] = []
        t = threading.Thread(target=lambda: imported.append(
            b.cli("image", "import", str(disk), "--alias", "debian-vm", timeout=600).stdout))
        t.start()
        a.cli("remote", "add", "b", "https://10.77.0.2:8443", "--token",
              b.cli("remote", "token").stdout.strip())
        _wait_agent(a, VM)
        status = cloud_init_done(a, VM)
        assert "status: done" in status, status
        t.join(timeout=600)
        assert imported
        disk.unlink()
        yield a, b


@pytest.fixture
def guest(pair: tuple[Daemon, Daemon], tmp_path: Path) -> Guest:
    a = pair[0]
    ip = json.loads(a.cli("info", VM, "--format", "json").stdout)["nics"][0]["ip"]
    key = a.state_dir.parent.parent / "id_ed25519"   # two_hosts' tmp/h1/state
    return Guest(a, VM, key, ip, a.wrapper[1], tmp_path)


@pytest.fixture
def mb_daemon(pair: tuple[Daemon, Daemon]) -> Daemon:
    return pair[0]


def test_the_same_agent_contract_as_our_busybox_agent(mb_daemon: Daemon) -> None:
    """The host's one QGA client against qemu-guest-agent, asked what tests/integration/
    test_vm_agent.py asks our busybox agent (tests/qga_contract.py)."""
    sockets = list(mb_daemon.state_dir.glob("run/**/qga.sock"))
    assert len(sockets) == 1, sockets
    check_agent(sockets[0].parent, VM)


def test_the_guest_booted_its_own_chain_with_no_failed_unit(mb_daemon: Daemon) -> None:
    d = mb_daemon
    # the guest's own chain: shim, GRUB, then Debian's kernel (no -kernel for QEMU)
    assert "-kernel" not in _qemus(d, VM)[0]
    assert "Linux version" in d.cli("logs", VM).stdout
    r = d.cli("exec", VM, "--", "systemctl", "is-system-running", "--wait", check=False,
              timeout=300)
    failed = d.cli("exec", VM, "--", "systemctl", "--failed", "--no-legend",
                   check=False).stdout
    assert r.stdout.strip() == "running", f"{r.stdout} {r.stderr} failed units: {failed}"


def test_exec_and_files_go_through_the_guest_agent(guest: Guest) -> None:
    d, tmp = guest.d, guest.tmp
    # exec through qemu-guest-agent: stdin, stdout, stderr, exit code
    r = d.cli("exec", VM, "--", "sh", "-c", "cat; echo oops >&2; exit 3", check=False,
              input="hello\n")
    assert (r.returncode, r.stdout, "oops" in r.stderr) == (3, "hello\n", True)
    # file push/pull through the agent's guest-file-* commands
    blob = tmp / "blob"
    blob.write_bytes(bytes(range(256)) * 1000)
    d.cli("file", "push", VM, str(blob), "/root/blob", "--mode", "0600")
    assert d.cli("exec", VM, "--", "stat", "-c", "%a %s", "/root/blob").stdout.split() \
        == ["600", "256000"]
    d.cli("file", "pull", VM, "/root/blob", str(tmp / "back"))
    assert (tmp / "back").read_bytes() == blob.read_bytes()
    r = d.cli("file", "pull", VM, "/nope", str(tmp / "x"), check=False)
    assert r.returncode != 0 and "/nope" in r.stderr and len(r.stderr.splitlines()) == 1


def test_cloud_init_ran_the_seed(mb_daemon: Daemon) -> None:
    d = mb_daemon
    # the NoCloud datasource, from the cidata seed: the hostname, runcmd, write_files
    r = d.cli("exec", VM, "--", "cloud-init", "query", "--format",
              "{{v1.platform}} {{v1.subplatform}} {{v1.local_hostname}}")
    assert r.stdout.split()[0] == "nocloud" and r.stdout.split()[-1] == VM, r.stdout
    assert d.cli("exec", VM, "--", "hostname").stdout.strip() == VM
    assert d.cli("exec", VM, "--", "cat", "/root/runcmd.txt").stdout == "made-by-runcmd\n"
    assert d.cli("exec", VM, "--", "cat", "/etc/cumulo-note").stdout == "noted"


def test_ssh_with_the_given_key_over_the_dhcp_address(guest: Guest) -> None:
    d = guest.d
    assert f"inet {guest.ip}/24" in d.cli("exec", VM, "--", "ip", "-4", "addr", "show",
                                          "eth0").stdout
    r = ssh(guest, "root", "cat", "/root/runcmd.txt")
    assert (r.returncode, r.stdout) == (0, "made-by-runcmd\n"), r.stderr
    # the image's default user got the key too, with sudo
    r = ssh(guest, "debian", "sudo", "-n", "id", "-u")
    assert (r.returncode, r.stdout.strip()) == (0, "0"), r.stderr
    # another key is refused (BatchMode: no password prompt)
    other = keygen(guest.tmp / "other")
    r = ssh(Guest(d, VM, other, guest.ip, guest.netns, guest.tmp), "root", "true")
    assert r.returncode == 255 and "Permission denied" in r.stderr, r.stderr


def test_exec_with_a_terminal_and_no_terminal_on_stdin_runs_on_a_pty(mb_daemon: Daemon) -> None:
    """exec -t with stdin not a tty (interactive use: the next test but two)."""
    r = mb_daemon.cli("exec", "-t", VM, "--", "sh", "-c", "tty; exit 3", check=False,
                      input="", timeout=120)
    assert r.returncode == 3 and "/dev/pts/" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize(("content", "said"), [
    ("this is: not: yaml: [\n", "neither a '#cloud-config' YAML document nor a '#!' script"),
    ("#cloud-config\nruncmd: [unclosed\n", "is not YAML"),
    ("runcmd:\n  - [touch, /x]\n", "no '#cloud-config' first line"),
])
def test_user_data_cloud_init_would_not_read_is_refused(mb_daemon: Daemon, tmp_path: Path,
                                                        content: str, said: str) -> None:
    d = mb_daemon
    bad = tmp_path / "bad-user-data"
    bad.write_text(content)
    r = d.cli("launch", "debian-vm", "bad1", "--type", "vm", "--network", "lan",
              "--user-data", str(bad), check=False)
    assert r.returncode != 0 and said in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # the daemon checks it too (a client other than the CLI)
    with d.client() as c, pytest.raises(CumuloError, match="cloud-init would ignore"):
        c.create("bad1", "debian-vm", type="vm", start=True, user_data="hello world\n")
    assert "bad1" not in d.cli("list").stdout and not _qemus(d, "bad1")


def test_a_missing_key_file_is_refused(mb_daemon: Daemon, tmp_path: Path) -> None:
    d = mb_daemon
    r = d.cli("launch", "debian-vm", "bad2", "--type", "vm", "--ssh-key",
              str(tmp_path / "nope.pub"), check=False)
    assert r.returncode != 0 and "cannot read SSH key file" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "bad2" not in d.cli("list").stdout


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


def test_a_signed_debian_disk_boots_with_secure_boot(mb_daemon: Daemon) -> None:
    d = mb_daemon
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


def test_exec_with_a_terminal_in_a_vm_booted_from_its_disk(mb_daemon: Daemon) -> None:
    d = mb_daemon
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
        # the same disk's chain through SeaBIOS: its GRUB loads Debian's kernel (the rest
        # of a boot is the UEFI guest's, above)
        assert "-kernel" not in _qemus(d, "mbios")[0]
        deadline = time.monotonic() + BOOT_WAIT
        while "Linux version" not in (logs := d.cli("logs", "mbios").stdout):
            assert time.monotonic() < deadline, logs[-2000:]
            time.sleep(2)
        assert "Cumulo: GRUB loads the kernel" in logs
    finally:
        d.cli("stop", "mbios", "--force")
        d.cli("delete", "mbios")
    assert not _qemus(d, "mbios")
    r = d.cli("tpm", "baseline", "nope", check=False)
    assert r.returncode != 0 and "not found" in r.stderr


def test_an_unsigned_bootloader_is_refused_with_a_clear_error(mb_daemon: Daemon,
                                                              tmp_path: Path) -> None:
    d = mb_daemon
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


def test_secure_boot_bad_input_is_one_line(mb_daemon: Daemon) -> None:
    d = mb_daemon
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
    # the same machine came back: firmware, keys, SMM
    assert "q35,smm=on" in _qemus(d, VM)[0]
    assert d.cli("exec", VM, "--", "mokutil", "--sb-state").stdout.strip() \
        == "SecureBoot enabled"
    # a stateful snapshot: the guest and its TPM come back at that instant
    d.cli("snapshot", "create", VM, "s1", "--stateful", timeout=600)
    d.cli("exec", VM, "--", "sh", "-c", "echo after > /root/marker; sync")
    d.cli("stop", VM, "--force")
    d.cli("snapshot", "restore", VM, "s1", timeout=600)
    assert _tpm(d)["pcrs"] == before
    r = d.cli("exec", VM, "--", "cat", "/root/marker", check=False)
    assert r.returncode != 0 and "No such file" in r.stderr
    d.cli("snapshot", "delete", VM, "s1")


def test_verify_after_a_restart_finds_the_changed_initrd_and_nothing_else(
        mb_daemon: Daemon) -> None:
    """One restart serves both halves: after it, every event but the changed initrd's
    replays as in the baseline (a restart of the same chain verifies), and the initrd's
    new digest is named. (The initrd, not the kernel: secure boot refuses a kernel whose
    signature no longer matches, as it should; GRUB measures the initrd without checking
    it, and zeros after its last cpio archive still boot.)"""
    d = mb_daemon
    out = d.cli("tpm", "baseline", VM).stdout
    assert "Recorded the measured-boot baseline" in out
    assert d.cli("tpm", "verify", VM).returncode == 0
    # (cloud-init, checked on the first boot, sits out the second: a minute of TCG less)
    d.cli("exec", VM, "--", "sh", "-c", "head -c 4096 /dev/zero >> /initrd.img;"
          " touch /etc/cloud/cloud-init.disabled; sync")
    d.cli("restart", VM, "--timeout", "240", timeout=600)
    _wait_agent(d, VM)
    r = d.cli("tpm", "verify", VM, check=False)
    assert r.returncode == 1 and "CHANGED" in r.stdout, r.stdout + r.stderr
    assert "PCR 9 (files GRUB read" in r.stdout and "new: EV_IPL /initrd.img" in r.stdout
    v = json.loads(d.cli("tpm", "verify", VM, "--format", "json", check=False).stdout)
    # firmware, GRUB, command line, kernel and grub.cfg measured as before the restart:
    # only the initrd's event is new
    assert [(c["pcr"], c["events"]) for c in v["changed"]] == [(9, ["EV_IPL /initrd.img"])]
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
    # the guest agent answers on b (the first exec after the move was cut once, in 1 of 3
    # CI runs: "lost the connection to cumulod": the agent answered only after 40 s, and
    # the exec websocket, reading nothing meanwhile, was cut by the keepalive; fixed in
    # api/exec_ws.py, an exec now waits for the agent up to 90 s, then says it did not
    # answer. Why the agent can be that slow after a move is still open.)
    _wait_agent(b, VM)
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
    assert b.cli("exec", VM, "--", "mokutil", "--sb-state").stdout.strip() \
        == "SecureBoot enabled"

    # nothing of it on a: no instance, QEMU, swtpm, cgroup, instance dir or VARS file
    assert json.loads(a.cli("list", "--format", "json").stdout) == []
    assert not qemus(a.state_dir) and not _swtpms(a.state_dir)
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{a.cgroup_parent}/*{VM}*"))
    assert not list(a.state_dir.rglob("efivars.fd"))
    assert not [p for p in a.state_dir.rglob(f"*{VM}*")], list(a.state_dir.rglob(f"*{VM}*"))

    # a kernel upgrade in the guest runs update-grub (grub-common came with the signed
    # GRUB): the grub.cfg it writes keeps the serial console the boot check reads
    b.cli("exec", VM, "--", "update-grub", timeout=300)
    cfg = b.cli("exec", VM, "--", "cat", "/boot/grub/grub.cfg").stdout
    assert "console=ttyS0,115200n8" in cfg and "serial --unit=0 --speed=115200" in cfg


def test_acpi_stop_then_the_seed_goes_with_the_instance(pair: tuple[Daemon, Daemon]) -> None:
    d = pair[1]   # where the migration took it
    # stop: the ACPI power button makes systemd power off before the timeout
    t0 = time.monotonic()
    d.cli("stop", VM, "--timeout", "240", timeout=300)
    assert time.monotonic() - t0 < 240
    assert "reboot: Power down" in d.cli("logs", VM).stdout
    assert not _qemus(d, VM)
    seeds = list((d.state_dir / "instances").glob(f"*/{SEED}"))
    assert [s.parent.name for s in seeds] == [f"default_{VM}"]
    d.cli("delete", VM, timeout=300)
    assert not list((d.state_dir / "instances").glob(f"*/{SEED}"))
    assert not _qemus(d, VM)
