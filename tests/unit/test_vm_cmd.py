"""VM accelerator choice and the QEMU command line: pure, no QEMU needed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cumulo.drivers.vm.accel import Accel, choose_accel
from cumulo.drivers.vm.qemu_cmd import (
    MIB,
    TCG_RAM_PAD,
    Io,
    Machine,
    VmSpec,
    build_argv,
    dirty_tracking_safe,
    memory_max,
    ram_pad,
    run_dir,
)
from cumulo.errors import InvalidInputError, UnsupportedError
from cumulo.host.info import HostInfo

PVM = HostInfo(kvm="pvm", kvm_usable=False)
VMX = HostInfo(kvm="vmx", kvm_usable=True)
NONE = HostInfo(kvm="none", kvm_usable=False)


def test_auto_uses_kvm_only_when_usable() -> None:
    assert choose_accel("auto", VMX).accel == Accel.KVM
    assert choose_accel("auto", VMX).notice is None
    fallback = choose_accel("auto", PVM)
    assert fallback.accel == Accel.TCG and fallback.notice and "PVM" in fallback.notice
    assert choose_accel("auto", NONE).accel == Accel.TCG


def test_kvm_on_a_pvm_host_fails_at_once_with_the_reason() -> None:
    with pytest.raises(UnsupportedError, match="PVM.*stock guest kernel"):
        choose_accel("kvm", PVM)
    with pytest.raises(UnsupportedError, match="no hardware virtualization"):
        choose_accel("kvm", NONE)
    assert choose_accel("kvm", VMX).accel == Accel.KVM
    assert choose_accel("tcg", VMX).accel == Accel.TCG


def test_unknown_accel_is_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        choose_accel("xen", VMX)


def spec(machine: Machine, io: Io, append: str = "console=ttyS0", **kw: object) -> VmSpec:
    t = Path("/t")
    return VmSpec(name="vm1", memory=128 * MIB, vcpus=2, accel=Accel.TCG, machine=machine,
                  io=io, kernel=t / "vmlinuz", initrd=t / "initrd", append=append,
                  serial_log=t / "console.log", qmp_socket=t / "qmp.sock",
                  pidfile=t / "qemu.pid", **kw)  # type: ignore[arg-type]


def opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_microvm_uses_virtio_mmio_and_no_pci() -> None:
    argv = build_argv(spec(Machine.MICROVM, Io.PARAVIRT, disk=Path("/d.raw"), nic=True))
    assert opt(argv, "-M")[0].startswith("microvm")
    devices = opt(argv, "-device")
    assert devices and all("-pci" not in d for d in devices)
    assert {"virtio-blk-device,drive=disk0", "virtio-net-device,netdev=net0",
            "virtio-rng-device"} <= set(devices)
    assert "virtio-balloon-device,id=balloon0" in devices


def test_microvm_for_a_kernel_without_acpi_names_its_virtio_devices_before_the_app_args(
        ) -> None:
    """ACPI off (one IO-APIC, 8 transports on IRQs 5-12), QEMU's own list off (it would
    come after "--", as the app's arguments), ours before "--", from the last transport
    down in the order of the devices on QEMU's command line."""
    taps = (("cu-v1", "52:54:00:00:00:01"), ("cu-v2", "52:54:00:00:00:02"))
    s = spec(Machine.MICROVM, Io.PARAVIRT, taps=taps, mmio_cmdline=True,
             append="console=ttyS0 rdinit=/app -- a -- \"b c\"")
    argv = build_argv(s)
    assert opt(argv, "-M")[0].endswith(",acpi=off,auto-kernel-cmdline=off")
    devices = [d.split(",")[0] for d in opt(argv, "-device")]
    assert devices == ["virtio-net-device", "virtio-net-device", "virtio-rng-device",
                       "virtio-balloon-device"]
    assert opt(argv, "-append") == [
        "console=ttyS0 rdinit=/app virtio_mmio.device=512@0xfeb00e00:12"
        " virtio_mmio.device=512@0xfeb00c00:11 virtio_mmio.device=512@0xfeb00a00:10"
        " virtio_mmio.device=512@0xfeb00800:9 -- a -- \"b c\""]
    assert VmSpec.from_dict(s.to_dict()) == s
    # no "--": at the end; without the flag (Debian's kernel finds them through ACPI)
    # nothing changes
    assert opt(build_argv(spec(Machine.MICROVM, Io.PARAVIRT, mmio_cmdline=True)),
               "-append")[0].endswith("console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12"
                                      " virtio_mmio.device=512@0xfeb00c00:11")
    plain = build_argv(spec(Machine.MICROVM, Io.PARAVIRT, taps=taps))
    assert opt(plain, "-append") == ["console=ttyS0"] and "acpi" not in opt(plain, "-M")[0]
    many = tuple((f"cu-v{i}", f"52:54:00:00:00:{i:02x}") for i in range(7))
    with pytest.raises(InvalidInputError, match="8 virtio-mmio transports: this VM would"
                                                " need 9"):
        build_argv(spec(Machine.MICROVM, Io.PARAVIRT, taps=many, mmio_cmdline=True))


def test_pc_paravirt_uses_pci_virtio_and_emulated_uses_ide_and_e1000() -> None:
    para = opt(build_argv(spec(Machine.PC, Io.PARAVIRT, disk=Path("/d.raw"), nic=True)),
               "-device")
    assert {"virtio-blk-pci,drive=disk0", "virtio-net-pci,netdev=net0", "virtio-rng-pci",
            "virtio-balloon-pci,id=balloon0"} <= set(para)
    emu = opt(build_argv(spec(Machine.Q35, Io.EMULATED, disk=Path("/d.raw"), nic=True)),
              "-device")
    ports = [d for d in emu if d.startswith("pcie-root-port,")]  # q35: free for hot-plug
    assert len(ports) == 4
    assert [d for d in emu if d not in ports] == ["ide-hd,drive=disk0,bus=ide.0",
                                                  "e1000,netdev=net0"]


def test_common_flags_daemonize_console_qmp_and_no_network() -> None:
    argv = build_argv(spec(Machine.PC, Io.PARAVIRT))
    assert argv[0] == "qemu-system-x86_64"
    for flag in ("-nodefaults", "-no-user-config", "-daemonize", "-no-reboot"):
        assert flag in argv
    assert opt(argv, "-accel") == ["tcg,tb-size=256"] and opt(argv, "-m") == ["128M"]
    assert opt(argv, "-smp") == ["2"] and opt(argv, "-nic") == ["none"]
    assert opt(argv, "-serial") == ["file:/t/console.log"]
    assert opt(argv, "-qmp") == ["unix:/t/qmp.sock,server=on,wait=off"]
    assert opt(argv, "-pidfile") == ["/t/qemu.pid"]
    assert opt(argv, "-display") == ["none"]


def test_nic_is_on_an_isolated_hub_only() -> None:
    argv = build_argv(spec(Machine.PC, Io.EMULATED, nic=True))
    assert opt(argv, "-netdev") == ["hubport,id=net0,hubid=0"]
    assert "-nic" not in argv


def test_bad_specs_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="microvm"):
        spec(Machine.MICROVM, Io.EMULATED)
    with pytest.raises(InvalidInputError, match="memory"):
        VmSpec.from_dict({**spec(Machine.PC, Io.PARAVIRT).to_dict(), "memory": 1024})


def test_spec_round_trips_through_json_form() -> None:
    s = spec(Machine.Q35, Io.EMULATED, disk=Path("/d.qcow2"), disk_format="qcow2", nic=True)
    assert VmSpec.from_dict(s.to_dict()) == s


def test_console_socket_is_a_logged_chardev_on_ttys0() -> None:
    argv = build_argv(spec(Machine.PC, Io.PARAVIRT, console_socket=Path("/t/console.sock")))
    assert opt(argv, "-serial") == ["chardev:console"]
    assert opt(argv, "-chardev")[0] == ("socket,id=console,path=/t/console.sock,server=on,"
                                         "wait=off,logfile=/t/console.log")
    plain = build_argv(spec(Machine.PC, Io.PARAVIRT))
    assert opt(plain, "-serial") == ["file:/t/console.log"]
    s = spec(Machine.PC, Io.PARAVIRT, console_socket=Path("/t/c.sock"))
    assert VmSpec.from_dict(s.to_dict()) == s


def test_firmware_only_has_no_kernel_and_microvm_cannot_do_it() -> None:
    argv = build_argv(spec(Machine.PC, Io.PARAVIRT, firmware_only=True))
    assert not {"-kernel", "-initrd", "-append"} & set(argv)
    assert "-kernel" in build_argv(spec(Machine.PC, Io.PARAVIRT))
    with pytest.raises(InvalidInputError, match="microvm has no firmware"):
        build_argv(spec(Machine.MICROVM, Io.PARAVIRT, firmware_only=True))


def test_run_dir_is_the_name_while_sockets_fit_else_a_hash() -> None:
    root = Path("/run/cumulo/vm")
    assert run_dir(root, "default_web") == root / "default_web"
    long_id = "p" * 63 + "_" + "v" * 63
    hashed = run_dir(root, long_id)
    assert hashed.parent == root and hashed.name.startswith("h-")
    assert hashed == run_dir(root, long_id) != run_dir(root, long_id[:-1] + "w")
    assert len(str(hashed / "console.sock")) <= 107
    with pytest.raises(UnsupportedError, match="shorter --runtime-dir"):
        run_dir(Path("/" + "r" * 100), "default_web")


def test_tcg_ram_is_padded_off_qemus_64_page_dirty_sync_fast_path() -> None:
    """QEMU < 9.0 loses TCG stores during live migration of a RAM block whose size is a
    multiple of 64 pages (tests/system/test_vm_migration_memory.py): a TCG VM gets 8 KiB
    more, its -m in KiB; KVM and VMs recorded before the padding keep their exact size."""
    assert ram_pad(Accel.KVM) == 0 and ram_pad(Accel.TCG) == TCG_RAM_PAD
    padded = spec(Machine.MICROVM, Io.PARAVIRT, ram_pad=ram_pad(Accel.TCG))
    assert opt(build_argv(padded), "-m") == ["131080K"]
    assert (padded.memory + padded.ram_pad) % (64 * 4096) and dirty_tracking_safe(padded)
    assert memory_max(padded) == memory_max(spec(Machine.MICROVM, Io.PARAVIRT)) + TCG_RAM_PAD
    old = VmSpec.from_dict({k: v for k, v in padded.to_dict().items() if k != "ram_pad"})
    assert old.ram_pad == 0 and opt(build_argv(old), "-m") == ["128M"]
    assert not dirty_tracking_safe(old)   # its live migration would damage the guest
    assert VmSpec.from_dict(padded.to_dict()) == padded
    kvm = replace(old, accel=Accel.KVM)
    assert dirty_tracking_safe(kvm) and opt(build_argv(kvm), "-m") == ["128M"]
