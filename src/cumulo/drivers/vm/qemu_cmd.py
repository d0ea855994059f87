"""The qemu-system-x86_64 command line, built from a typed spec; pure, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cumulo.drivers.vm import agent, tpm
from cumulo.drivers.vm.accel import Accel
from cumulo.errors import InvalidInputError

QEMU = "qemu-system-x86_64"
MIB = 1024 * 1024


class Machine(StrEnum):
    PC = "pc"              # i440FX + PIIX: firmware, PCI, IDE
    Q35 = "q35"            # ICH9: firmware, PCIe, AHCI
    MICROVM = "microvm"    # no firmware, no PCI: virtio-mmio only, fastest boot


class Io(StrEnum):
    PARAVIRT = "paravirt"  # virtio: the guest knows it is virtual
    EMULATED = "emulated"  # IDE disk, e1000 NIC: real hardware, emulated


@dataclass(frozen=True)
class VmSpec:
    """Everything QEMU is told about one VM."""

    name: str
    memory: int                      # bytes
    vcpus: int
    accel: Accel
    machine: Machine
    io: Io
    kernel: Path
    initrd: Path
    append: str
    serial_log: Path
    qmp_socket: Path
    pidfile: Path
    disk: Path | None = None
    disk_format: str = "raw"
    nic: bool = False                # a NIC on an isolated hub: the guest sees it, no traffic
    agent_ports: int = 0             # virtio-serial ports for the exec agent (see agent.py)
    console_socket: Path | None = None  # interactive serial console (still logged to serial_log)
    tpm_socket: Path | None = None   # swtpm's control socket: a TPM 2.0 in the guest (tpm.py)

    def __post_init__(self) -> None:
        if self.machine == Machine.MICROVM and self.io == Io.EMULATED:
            raise InvalidInputError("--io emulated needs --machine pc or q35:"
                                    " microvm has no PCI, IDE or e1000, only virtio-mmio")
        if self.memory < 32 * MIB:
            raise InvalidInputError("a VM needs at least 32MiB of memory")
        if self.vcpus < 1:
            raise InvalidInputError("a VM needs at least one vCPU")
        if self.tpm_socket is not None and self.machine == Machine.MICROVM:
            raise InvalidInputError("--tpm needs --machine pc or q35: microvm has no ACPI"
                                    " table for a TPM")

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VmSpec:
        disk = d.get("disk")
        return cls(
            name=str(d["name"]), memory=int(d["memory"]), vcpus=int(d["vcpus"]),
            accel=Accel(d["accel"]), machine=Machine(d["machine"]), io=Io(d["io"]),
            kernel=Path(d["kernel"]), initrd=Path(d["initrd"]), append=str(d["append"]),
            serial_log=Path(d["serial_log"]), qmp_socket=Path(d["qmp_socket"]),
            pidfile=Path(d["pidfile"]), disk=None if disk is None else Path(disk),
            disk_format=str(d.get("disk_format", "raw")), nic=bool(d.get("nic", False)),
            agent_ports=int(d.get("agent_ports", 0)),
            console_socket=Path(d["console_socket"]) if d.get("console_socket") else None,
            tpm_socket=Path(d["tpm_socket"]) if d.get("tpm_socket") else None,
        )


def _devices(spec: VmSpec) -> list[str]:
    """Disk, NIC, RNG and balloon in the family and bus the machine has."""
    mmio = spec.machine == Machine.MICROVM
    bus = "device" if mmio else "pci"
    args: list[str] = []
    if spec.disk is not None:
        args += ["-drive", f"file={spec.disk},if=none,id=disk0,format={spec.disk_format}"]
        if spec.io == Io.PARAVIRT:
            args += ["-device", f"virtio-blk-{bus},drive=disk0"]
        else:
            args += ["-device", "ide-hd,drive=disk0,bus=ide.0"]
    if spec.nic:
        model = f"virtio-net-{bus}" if spec.io == Io.PARAVIRT else "e1000"
        args += ["-netdev", "hubport,id=net0,hubid=0", "-device", f"{model},netdev=net0"]
    else:
        args += ["-nic", "none"]
    if spec.io == Io.PARAVIRT:
        args += ["-device", f"virtio-rng-{bus}", "-device", f"virtio-balloon-{bus},id=balloon0"]
    return args + _agent(spec, bus)


def _agent(spec: VmSpec, bus: str) -> list[str]:
    """virtio-serial ports for the exec agent, on every I/O family: the agent's own channel."""
    if not spec.agent_ports:
        return []
    args = ["-device", f"virtio-serial-{bus},id=agent"]
    for i in range(spec.agent_ports):
        sock = agent.port_socket(spec.qmp_socket.parent, i)
        args += ["-chardev", f"socket,id=agent{i},path={sock},server=on,wait=off",
                 "-device", f"virtserialport,bus=agent.0,chardev=agent{i},"
                            f"name={agent.PORT_NAME.format(i)}"]
    return args


def _serial(spec: VmSpec) -> list[str]:
    """ttyS0: a file, or a unix socket server (``cumulo console``) that also logs to the file."""
    if spec.console_socket is None:
        return ["-serial", f"file:{spec.serial_log}"]
    return ["-chardev", f"socket,id=console,path={spec.console_socket},server=on,wait=off,"
                        f"logfile={spec.serial_log}",
            "-serial", "chardev:console"]


def build_argv(spec: VmSpec, qemu: str = QEMU) -> list[str]:
    """argv for a daemonized QEMU that outlives the daemon; console to a file, QMP on a socket."""
    machine = spec.machine.value
    if spec.machine == Machine.MICROVM:
        machine += ",x-option-roms=off,rtc=off"
    return [
        qemu,
        "-name", f"guest={spec.name},debug-threads=on",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-accel", spec.accel.value,
        "-M", machine,
        "-m", f"{max(1, spec.memory // MIB)}M",
        "-smp", str(spec.vcpus),
        "-kernel", str(spec.kernel),
        "-initrd", str(spec.initrd),
        "-append", spec.append,
        *_serial(spec),
        "-qmp", f"unix:{spec.qmp_socket},server=on,wait=off",
        *_devices(spec),
        *(tpm.qemu_args(spec.tpm_socket) if spec.tpm_socket is not None else []),
        "-daemonize", "-pidfile", str(spec.pidfile),
    ]
