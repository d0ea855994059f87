"""VMs that boot from their own disk, without QEMU: firmware choice, the boot check on
the console, the QEMU arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from cumulo.drivers.vm import firmware
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
