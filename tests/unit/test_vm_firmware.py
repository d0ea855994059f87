"""VMs that boot from their own disk, without QEMU: firmware choice, the boot check on
the console, the QEMU arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from cumulo.drivers.base import ExecRequest
from cumulo.drivers.vm import firmware, qga_tty
from cumulo.drivers.vm.accel import Accel
from cumulo.drivers.vm.qemu_cmd import MIB, Io, Machine, VmSpec, build_argv
from cumulo.errors import DriverError, UnsupportedError


def test_uefi_where_ovmf_is_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("CUMULO_OVMF_DIR", str(tmp_path))
    with pytest.raises(UnsupportedError, match="--firmware uefi needs OVMF.*apt-get install"
                                               " ovmf, or use --firmware bios"):
        firmware.choose("uefi")
    assert firmware.choose(None) == "bios"     # the default falls back to SeaBIOS


def test_uefi_is_the_default_where_ovmf_is_installed(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    for name in (firmware.OVMF_CODE, firmware.OVMF_VARS):
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setenv("CUMULO_OVMF_DIR", str(tmp_path))
    assert firmware.choose(None) == "uefi"
    assert firmware.choose("bios") == "bios"
    (tmp_path / "i").mkdir()
    vars_file = firmware.prepare_vars(tmp_path / "i")
    assert vars_file.read_bytes() == b"x"      # this VM's own copy
    args = firmware.qemu_args("uefi", vars_file, tmp_path / "i")
    assert f"file={tmp_path / firmware.OVMF_CODE}" in args[1] and "readonly=on" in args[1]
    assert args[3].endswith(f"file={vars_file}")
    # SeaBIOS reads its console port as a little-endian integer of 1, 2, 4 or 8 bytes
    args = firmware.qemu_args("bios", None, tmp_path / "i")
    sercon = tmp_path / "i" / firmware.SERCON_FILE
    assert f"name=etc/sercon-port,file={sercon}" in args
    assert sercon.read_bytes() == b"\xf8\x03"


def _console(tmp_path: Path, text: bytes) -> Path:
    log = tmp_path / "console.log"
    log.write_bytes(text)
    return log


def test_boot_check_names_what_the_firmware_said(tmp_path: Path) -> None:
    log = _console(tmp_path, b"\x1b[2J\x1b[01;01HBdsDxe: failed to load Boot0001 \"UEFI Misc"
                             b" Device\" from PciRoot(0x0): Not Found\r\n>>Start PXE over IPv4.")
    with pytest.raises(DriverError, match="found nothing to boot on its disk: BdsDxe: failed"
                                          " to load Boot0001"):
        firmware.check_boot(log, 0, lambda: True, timeout=5)


def test_boot_check_passes_once_the_bootloader_runs_and_is_bounded(tmp_path: Path) -> None:
    firmware.check_boot(_console(tmp_path, b"Booting `Debian'\r\n"), 0, lambda: True, 5)
    with pytest.raises(DriverError, match="no bootloader started .* within 0s"):
        firmware.check_boot(_console(tmp_path, b""), 0, lambda: True, timeout=0.3)
    with pytest.raises(DriverError, match="stopped while booting"):
        firmware.check_boot(_console(tmp_path, b"SeaBIOS"), 0, lambda: False, timeout=5)


def test_the_cloud_init_seed_is_a_read_only_disk_beside_the_root(tmp_path: Path) -> None:
    """The NoCloud seed: a read-only virtio-blk (cloud-init finds its ISO by the label)."""
    vm = VmSpec(name="v", memory=512 * MIB, vcpus=1, accel=Accel.TCG, machine=Machine.PC,
                io=Io.PARAVIRT, kernel=Path("/k"), initrd=Path("/i"), append="",
                serial_log=tmp_path / "c.log", qmp_socket=tmp_path / "q.sock",
                pidfile=tmp_path / "p", root_disk=tmp_path / "root.qcow2", firmware="bios",
                seed=tmp_path / "cidata.iso")
    argv = " ".join(build_argv(vm))
    assert f"file={tmp_path}/cidata.iso,if=none,id=seed,format=raw,readonly=on" in argv
    assert argv.index("virtio-blk-pci,drive=root0") < argv.index("virtio-blk-pci,drive=seed")
    assert VmSpec.from_dict(vm.to_dict()) == vm


def _sb_ovmf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, data in ((firmware.OVMF_CODE, b"c"), (firmware.OVMF_VARS, b"v"),
                       (firmware.SB_CODE, b"sc"), (firmware.SB_VARS, b"ms")):
        (tmp_path / name).write_bytes(data)
    monkeypatch.setenv("CUMULO_OVMF_DIR", str(tmp_path))


def test_secure_boot_is_uefi_with_microsofts_keys_on_q35_with_smm(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _sb_ovmf(monkeypatch, tmp_path)
    assert firmware.choose(None, secure_boot=True) == "uefi"
    assert firmware.choose("uefi", secure_boot=True) == "uefi"
    (tmp_path / "i").mkdir()
    vars_file = firmware.prepare_vars(tmp_path / "i", secure_boot=True)
    assert vars_file.read_bytes() == b"ms"     # the store with the keys enrolled
    vm = VmSpec(name="v", memory=512 * MIB, vcpus=1, accel=Accel.TCG, machine=Machine.Q35,
                io=Io.PARAVIRT, kernel=Path("/k"), initrd=Path("/i"), append="",
                serial_log=tmp_path / "c.log", qmp_socket=tmp_path / "q.sock",
                pidfile=tmp_path / "p", root_disk=tmp_path / "root.qcow2", firmware="uefi",
                efi_vars=vars_file, secure_boot=True)
    argv = build_argv(vm)
    assert argv[argv.index("-M") + 1] == "q35,smm=on"
    joined = " ".join(argv)
    assert "driver=cfi.pflash01,property=secure,value=on" in joined
    assert f"readonly=on,file={tmp_path / firmware.SB_CODE}" in joined
    assert VmSpec.from_dict(vm.to_dict()) == vm
    plain = build_argv(VmSpec.from_dict({**vm.to_dict(), "secure_boot": False}))
    assert "q35" in plain and "property=secure" not in " ".join(plain)


def test_secure_boot_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _sb_ovmf(monkeypatch, tmp_path)
    with pytest.raises(UnsupportedError, match="secure boot is a UEFI feature"):
        firmware.choose("bios", secure_boot=True)
    (tmp_path / firmware.SB_VARS).unlink()
    with pytest.raises(UnsupportedError, match="--secure-boot needs OVMF's secure-boot build"):
        firmware.choose(None, secure_boot=True)


def test_the_secure_boot_check_waits_for_the_kernel_and_names_a_refusal(
        tmp_path: Path) -> None:
    ok = b"Welcome to GRUB!\r\nEFI stub: UEFI Secure Boot is enabled.\r\n[ 0.0] Linux version 6.1"
    firmware.check_boot(_console(tmp_path, ok), 0, lambda: True, 5, secure_boot=True)
    # GRUB runs but has not started the kernel: not yet a boot (bounded)
    with pytest.raises(DriverError, match="no bootloader started"):
        firmware.check_boot(_console(tmp_path, b"Welcome to GRUB!\r\n"), 0, lambda: True,
                            0.3, secure_boot=True)
    for said in (b"BdsDxe: failed to load Boot0001 \"UEFI Misc Device\" from PciRoot(0x0):"
                 b" Access Denied\r\nBdsDxe: No bootable option or device was found.",
                 b"Welcome to GRUB!\r\nerror: bad shim signature.\r\nPress any key to"
                 b" continue..."):
        with pytest.raises(DriverError, match=r"secure boot refused the VM's boot chain \("
                                              r"(Access Denied|bad shim signature)\).*"
                                              r"console: (BdsDxe: failed|error: bad shim)"):
            firmware.check_boot(_console(tmp_path, said), 0, lambda: True, 5,
                                secure_boot=True)


def test_a_disk_vm_has_terminal_ports_beside_the_guest_agent(tmp_path: Path) -> None:
    """exec -t: virtio-serial ports of their own, and a relay the guest runs through the
    agent (util-linux's script on the port, the command in its pty)."""
    vm = VmSpec(name="v", memory=512 * MIB, vcpus=1, accel=Accel.TCG, machine=Machine.PC,
                io=Io.PARAVIRT, kernel=Path("/k"), initrd=Path("/i"), append="",
                serial_log=tmp_path / "c.log", qmp_socket=tmp_path / "q.sock",
                pidfile=tmp_path / "p", root_disk=tmp_path / "root.qcow2", firmware="bios",
                qga=True, tty_ports=2)
    argv = " ".join(build_argv(vm))
    for i in range(2):
        assert f"path={tmp_path}/tty{i}.sock,server=on" in argv
        assert f"chardev=tty{i},name=org.cumulo.tty.{i}" in argv
    assert VmSpec.from_dict(vm.to_dict()) == vm
    script = qga_tty.relay_script(ExecRequest(command=["sh"], env={"A": "b c"}, tty=True,
                                              rows=40, cols=100), 1, "abc")
    assert "script -q -e -c " in script and "<>/dev/virtio-ports/org.cumulo.tty.1 >&0" in script
    assert "stty rows 40 cols 100" in script and "export A='\"'\"'b c'\"'\"'" in script
    assert "exec 2>&1" not in script          # the pty carries stderr itself


def test_a_busybox_vm_has_virtio_consoles_for_terminals(tmp_path: Path) -> None:
    """exec -t without ``script`` in the guest: a virtconsole per slot (/dev/hvcN, a tty
    with a line discipline) and busybox setsid -c making it the command's terminal."""
    vm = VmSpec(name="v", memory=128 * MIB, vcpus=1, accel=Accel.TCG, machine=Machine.PC,
                io=Io.PARAVIRT, kernel=Path("/k"), initrd=Path("/i"), append="",
                serial_log=tmp_path / "c.log", qmp_socket=tmp_path / "q.sock",
                pidfile=tmp_path / "p", qga=True, hvc_ports=2)
    argv = " ".join(build_argv(vm))
    for i in range(2):
        assert f"pipe,id=hvc{i},path={tmp_path}/hvc{i} " in argv   # FIFOs: see qga_tty.py
        assert f"virtconsole,bus=agent.0,chardev=hvc{i},name=org.cumulo.hvc.{i}" in argv
    assert "org.cumulo.tty" not in argv
    assert VmSpec.from_dict(vm.to_dict()) == vm
    script = qga_tty.hvc_script(ExecRequest(command=["sh"], tty=True, rows=40, cols=100),
                                1, "abc")
    assert "setsid -c sh -c " in script and "<>/dev/hvc1 >&0 2>&0" in script
    assert "stty sane rows 40 cols 100" in script and "exec 2>&1" not in script
