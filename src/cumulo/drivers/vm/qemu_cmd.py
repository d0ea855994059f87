"""The qemu-system-x86_64 command line, built from a typed spec; pure, no I/O."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cumulo.drivers.vm import firmware, qga, qga_tty, tpm
from cumulo.drivers.vm.accel import Accel
from cumulo.errors import InvalidInputError, UnsupportedError

QEMU = "qemu-system-x86_64"
MIB = 1024 * 1024
# TCG's translated-code buffer, explicit so QEMU's memory has a known bound (its default is
# min(1GiB, host RAM / 8)); the VM's cgroup allows guest RAM + this + QEMU_OVERHEAD
TCG_TB_MIB = 256
QEMU_OVERHEAD = 192 * MIB    # QEMU's own code, heap, I/O buffers, and the swtpm
# TCG guest RAM is padded so its size is no multiple of 64 pages (256 KiB): QEMU before
# 9.0 syncs such a RAM block's migration dirty bitmap 64 pages at a time and then forgets
# to re-arm TCG's TLB, so stores through it after the first pass are never sent again
# and the guest arrives with stale pages (a kernel panic after a live migration). Any
# other size takes QEMU's page-by-page path, which re-arms it. QEMU fixed it in 9.0
# ("system/physmem: Fix migration dirty bitmap coherency with TCG memory access").
TCG_RAM_PAD = 8 * 1024       # QEMU rounds -m up to 8 KiB
UNIX_PATH_MAX = 107          # bytes of a UNIX socket path (sun_path, less its NUL)
LONGEST_SOCKET = "console.sock"   # qmp.sock, swtpm.sock and agentN.sock are shorter
# microvm without ACPI (one IO-APIC): 8 virtio-mmio transports of 512 bytes from this
# address, on IRQs 5-12; QEMU puts the command line's virtio devices on them from the last
# one down (QEMU's hw/i386/microvm.c)
MMIO_BASE = 0xFEB00000
MMIO_SIZE = 512
MMIO_TRANSPORTS = 8
MMIO_IRQ_BASE = 5


def run_dir(root: Path, host_id: str) -> Path:
    """One VM's dir for its pid file and sockets under ``root``: named after the
    instance while its longest socket path fits a UNIX socket address, else after a
    hash of the name (names may be 127 bytes: project and instance)."""
    short = "h-" + hashlib.sha256(host_id.encode()).hexdigest()[:16]
    for name in (host_id, short):
        if len(str(root / name / LONGEST_SOCKET).encode()) <= UNIX_PATH_MAX:
            return root / name
    raise UnsupportedError(
        f"the runtime dir {root} is too long for QEMU's sockets (a UNIX socket path holds"
        f" at most {UNIX_PATH_MAX} bytes): start cumulod with a shorter --runtime-dir")


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
    # the root disk (a qcow2 in the storage pool) and the volumes, all in drivers/vm/disks.py
    root_disk: Path | None = None
    volumes: tuple[tuple[str, str, bool], ...] = ()   # (device id, file, shared)
    disk: Path | None = None
    disk_format: str = "raw"
    nic: bool = False                # a NIC on an isolated hub: the guest sees it, no traffic
    agent_ports: int = 0             # the old exec agent's ports (kept: a VM's device layout)
    taps: tuple[tuple[str, str], ...] = ()   # (tap name, guest MAC): NICs on our networks
    console_socket: Path | None = None  # interactive serial console (still logged to serial_log)
    tpm_socket: Path | None = None   # swtpm's control socket: a TPM 2.0 in the guest (tpm.py)
    firmware_only: bool = False      # no -kernel: the firmware runs and finds nothing to boot
    # booted from its own disk by this firmware (firmware.py): bios or uefi; "": direct kernel
    firmware: str = ""
    efi_vars: Path | None = None     # UEFI: this VM's variable store
    secure_boot: bool = False        # UEFI secure boot: q35 with SMM (firmware.py)
    qga: bool = False                # a port for qemu-guest-agent in the guest (qga.py)
    tty_ports: int = 0               # virtio-serial ports for exec -t beside it (qga_tty.py)
    # those ports are ISA serial lines (ttyS1...): a real terminal for a guest without
    # ``script`` to make a pty (an image VM: image_guest.py)
    tty_serial: bool = False
    hvc_ports: int = 0               # virtio consoles for exec -t (busybox VMs: qga_tty.py)
    seed: Path | None = None         # cloud-init's NoCloud seed, a read-only disk (seed.py)
    # microvm without ACPI, its virtio-mmio devices named on the kernel command line before
    # the program's "--" (mmio_append): for a kernel without ACPI (an app VM's built one)
    mmio_cmdline: bool = False
    # bytes of RAM beyond ``memory`` (TCG_RAM_PAD on TCG, see there); 0 in records of VMs
    # started before, whose running QEMU and saved states have exactly ``memory``
    ram_pad: int = 0

    def __post_init__(self) -> None:
        if self.machine == Machine.MICROVM and self.io == Io.EMULATED:
            raise InvalidInputError("--io emulated needs --machine pc or q35:"
                                    " microvm has no PCI, IDE or e1000, only virtio-mmio")
        if self.memory < 32 * MIB:
            raise InvalidInputError("a VM needs at least 32MiB of memory")
        if self.vcpus < 1:
            raise InvalidInputError("a VM needs at least one vCPU")

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
            root_disk=Path(d["root_disk"]) if d.get("root_disk") else None,
            volumes=tuple((str(v[0]), str(v[1]), bool(v[2])) for v in d.get("volumes", [])),
            pidfile=Path(d["pidfile"]), disk=None if disk is None else Path(disk),
            disk_format=str(d.get("disk_format", "raw")), nic=bool(d.get("nic", False)),
            agent_ports=int(d.get("agent_ports", 0)),
            taps=tuple((str(t[0]), str(t[1])) for t in d.get("taps", [])),
            console_socket=Path(d["console_socket"]) if d.get("console_socket") else None,
            tpm_socket=Path(d["tpm_socket"]) if d.get("tpm_socket") else None,
            firmware_only=bool(d.get("firmware_only", False)),
            firmware=str(d.get("firmware", "")),
            efi_vars=Path(d["efi_vars"]) if d.get("efi_vars") else None,
            secure_boot=bool(d.get("secure_boot", False)),
            qga=bool(d.get("qga", False)),
            tty_ports=int(d.get("tty_ports", 0)),
            tty_serial=bool(d.get("tty_serial", False)),
            hvc_ports=int(d.get("hvc_ports", 0)),
            seed=Path(d["seed"]) if d.get("seed") else None,
            mmio_cmdline=bool(d.get("mmio_cmdline", False)),
            ram_pad=int(d.get("ram_pad", 0)),
        )


def ram_pad(accel: Accel) -> int:
    """The RAM a VM booted now on ``accel`` gets beyond its memory (TCG_RAM_PAD)."""
    return TCG_RAM_PAD if accel == Accel.TCG else 0


def dirty_tracking_safe(spec: VmSpec) -> bool:
    """Whether a live (pre-copy) migration of this VM keeps its memory intact: not a TCG
    guest whose RAM size is a multiple of 64 pages (see TCG_RAM_PAD)."""
    return spec.accel != Accel.TCG or bool((spec.memory + spec.ram_pad) % (64 * 4096))


def _ram_arg(spec: VmSpec) -> str:
    """``-m``: whole MiB as before, in KiB when padded."""
    if spec.ram_pad:
        return f"{(spec.memory + spec.ram_pad) // 1024}K"
    return f"{max(1, spec.memory // MIB)}M"


def memory_max(spec: VmSpec) -> int:
    """Bytes the VM's cgroup allows QEMU: guest RAM, TCG's code buffer, QEMU's own."""
    tb = TCG_TB_MIB * MIB if spec.accel == Accel.TCG else 0
    return spec.memory + spec.ram_pad + tb + QEMU_OVERHEAD


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
    model = nic_model(spec)
    rom = ",romfile=" if spec.firmware else ""   # no PXE: the firmware boots the disk
    for tap, mac in spec.taps:
        netdev, dev = nic_ids(tap)   # ids, so that drivers/vm/nics.py can unplug it
        args += ["-netdev", f"tap,id={netdev},ifname={tap},script=no,downscript=no",
                 "-device", f"{model},netdev={netdev},mac={mac},id={dev}{rom}"]
    if spec.nic:
        args += ["-netdev", "hubport,id=net0,hubid=0", "-device", f"{model},netdev=net0"]
    elif not spec.taps:
        args += ["-nic", "none"]
    if spec.io == Io.PARAVIRT:
        args += ["-device", f"virtio-rng-{bus}", "-device", f"virtio-balloon-{bus},id=balloon0"]
    return args + _agent(spec, bus)


def nic_model(spec: VmSpec) -> str:
    """The NIC's device: virtio-net on the machine's bus, or an emulated e1000."""
    bus = "device" if spec.machine == Machine.MICROVM else "pci"
    return f"virtio-net-{bus}" if spec.io == Io.PARAVIRT else "e1000"


def nic_ids(tap: str) -> tuple[str, str]:
    """(netdev id, device id) of the NIC behind ``tap`` (a cu-v<hex> name)."""
    return f"nd-{tap}", f"nic-{tap}"


def old_agent_socket(run_dir: Path, index: int) -> Path:
    """The host end of port ``index`` of the line-protocol exec agent that busybox VMs had
    before they spoke QEMU's guest agent protocol: VMs created then keep their devices
    (a checkpoint needs the same machine), with no exec."""
    return run_dir / f"agent{index}.sock"


def _agent(spec: VmSpec, bus: str) -> list[str]:
    """virtio-serial ports for the exec agent, on every I/O family: the agent's own channel."""
    if not spec.agent_ports and not spec.qga:
        return []
    args = ["-device", f"virtio-serial-{bus},id=agent"]
    if spec.qga:
        sock = qga.socket_path(spec.qmp_socket.parent)
        args += ["-chardev", f"socket,id=qga0,path={sock},server=on,wait=off",
                 "-device", f"virtserialport,bus=agent.0,chardev=qga0,name={qga.PORT_NAME}"]
    run = spec.qmp_socket.parent
    for i in range(spec.tty_ports):
        args += ["-chardev", qga_tty.chardev(run, i, qga_tty.PTY), "-device",
                 f"isa-serial,chardev=tty{i},index={i + 1}" if spec.tty_serial
                 else f"virtserialport,bus=agent.0,chardev=tty{i},"
                      f"name={qga_tty.PORT_NAME.format(i)}"]
    for i in range(spec.hvc_ports):    # a virtconsole: a tty in the guest (/dev/hvcN)
        args += ["-chardev", qga_tty.chardev(run, i, qga_tty.HVC),
                 "-device", f"virtconsole,bus=agent.0,chardev=hvc{i},"
                            f"name={qga_tty.HVC_NAME.format(i)}"]
    for i in range(spec.agent_ports):
        sock = old_agent_socket(spec.qmp_socket.parent, i)
        args += ["-chardev", f"socket,id=agent{i},path={sock},server=on,wait=off",
                 "-device", f"virtserialport,bus=agent.0,chardev=agent{i},"
                            f"name=org.cumulo.agent.{i}"]
    return args


# --- block devices: the root disk and volumes (hot-plugged ones through disks.py) ---------
ROOT_ID = "root0"
HOTPLUG_PORTS = 4          # q35: PCIe root ports kept free for hot-plugged volumes, NICs
SERIAL_MAX = 20            # virtio-blk serial length (VIRTIO_BLK_ID_BYTES)
_NODE_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]{0,30}$")


def node_name(dev_id: str) -> str:
    """A QEMU node/device id for ``dev_id`` (letter first, at most 31 characters)."""
    if _NODE_RE.match(dev_id):
        return dev_id
    return "d" + hashlib.sha256(dev_id.encode()).hexdigest()[:16]


def _blk_bus(machine: Machine) -> str:
    return "device" if machine == Machine.MICROVM else "pci"


def volume_device(machine: Machine, dev_id: str, shared: bool) -> dict[str, Any]:
    """The virtio-blk device of a volume (QMP device_add arguments)."""
    node = node_name(dev_id)
    dev: dict[str, Any] = {"driver": f"virtio-blk-{_blk_bus(machine)}", "id": node,
                           "drive": node, "serial": dev_id[:SERIAL_MAX]}
    if shared:
        dev["share-rw"] = True
    return dev


def volume_node(dev_id: str, path: str, shared: bool) -> dict[str, Any]:
    """The raw block node of a volume file (QMP blockdev-add arguments)."""
    file: dict[str, Any] = {"driver": "file", "filename": path}
    if shared:
        file["locking"] = "off"   # several VMs write it: the user said they coordinate
    return {"driver": "raw", "node-name": node_name(dev_id), "file": file}


def _kv(d: dict[str, Any], prefix: str = "") -> str:
    """QMP arguments as a -blockdev/-device option string (nested dicts dotted)."""
    parts = []
    for k, v in d.items():
        if isinstance(v, dict):
            parts.append(_kv(v, f"{prefix}{k}."))
            continue
        value = ("on" if v else "off") if isinstance(v, bool) else str(v).replace(",", ",,")
        parts.append(f"{prefix}{k}={value}")
    return ",".join(parts)


def _block_devices(spec: VmSpec) -> list[str]:
    """The root disk (virtio-blk, or IDE/AHCI with --io emulated), volumes (virtio-blk)
    and, on q35, root ports for hot-plug (its root bus takes none)."""
    args: list[str] = []
    if spec.root_disk is not None:
        node = {"driver": "qcow2", "node-name": ROOT_ID,
                "file": {"driver": "file", "filename": str(spec.root_disk)}}
        args += ["-blockdev", _kv(node)]
        if spec.io == Io.PARAVIRT:
            args += ["-device", f"virtio-blk-{_blk_bus(spec.machine)},drive={ROOT_ID},"
                                f"id={ROOT_ID}" + (",bootindex=0" if spec.firmware else "")]
        else:
            args += ["-device", f"ide-hd,drive={ROOT_ID},id={ROOT_ID},bus=ide.1"]
    if spec.seed is not None:   # read-only virtio-blk (an IDE CD-ROM was not found by
        # Debian's kernel after OVMF on pc): cloud-init finds the ISO by its label
        args += ["-drive", f"file={spec.seed},if=none,id=seed,format=raw,readonly=on",
                 "-device", f"virtio-blk-{_blk_bus(spec.machine)},drive=seed,id=cidata"]
    q35 = spec.machine == Machine.Q35
    if q35:   # one port per volume (so it can be unplugged), and free ones
        for i in range(len(spec.volumes) + HOTPLUG_PORTS):
            args += ["-device", f"pcie-root-port,id=hp{i},chassis={i + 1},bus=pcie.0"]
    for i, (dev_id, path, shared) in enumerate(spec.volumes):
        dev = volume_device(spec.machine, dev_id, shared)
        args += ["-blockdev", _kv(volume_node(dev_id, path, shared)),
                 "-device", _kv({**dev, "bus": f"hp{i}"} if q35 else dev)]
    return args


def _serial(spec: VmSpec) -> list[str]:
    """ttyS0: a file, or a unix socket server (``cumulo console``) that also logs to the file."""
    if spec.console_socket is None:
        return ["-serial", f"file:{spec.serial_log}"]
    return ["-chardev", f"socket,id=console,path={spec.console_socket},server=on,wait=off,"
                        f"logfile={spec.serial_log}",
            "-serial", "chardev:console"]


def mmio_append(spec: VmSpec) -> str:
    """The kernel command line, with ``virtio_mmio.device=SIZE@ADDR:IRQ`` for each virtio
    device when the spec asks (``mmio_cmdline``). A kernel without ACPI finds microvm's
    virtio-mmio devices only there. QEMU would append them itself with ACPI off, but after
    the app's ``--``, where the kernel hands them to the program as arguments: so QEMU's
    own (auto-kernel-cmdline) is off and they go before it. With ACPI on (the default),
    QEMU makes 24 transports on a second IO-APIC and names none."""
    if not (spec.mmio_cmdline and spec.machine == Machine.MICROVM):
        return spec.append
    args = _devices(spec) + _block_devices(spec)
    drivers = [args[i + 1].split(",")[0].removeprefix("driver=")
               for i, a in enumerate(args[:-1]) if a == "-device"]
    virtio = [d for d in drivers if d.startswith("virtio-") and d.endswith("-device")]
    if len(virtio) > MMIO_TRANSPORTS:
        raise InvalidInputError(f"microvm without ACPI has {MMIO_TRANSPORTS} virtio-mmio"
                                f" transports: this VM would need {len(virtio)}")
    index = range(MMIO_TRANSPORTS - 1, MMIO_TRANSPORTS - 1 - len(virtio), -1)
    params = [f"virtio_mmio.device={MMIO_SIZE}@{MMIO_BASE + i * MMIO_SIZE:#x}"
              f":{MMIO_IRQ_BASE + i}" for i in index]
    kernel, init = split_append(spec.append)
    return " ".join([*kernel, *params, *init])


def split_append(append: str) -> tuple[list[str], list[str]]:
    """A kernel command line's words: the kernel's, and from the ``--`` on what it hands
    to init (an app's arguments)."""
    words = append.split(" ")
    at = words.index("--") if "--" in words else len(words)
    return words[:at], words[at:]


def _kernel(spec: VmSpec) -> list[str]:
    """Direct kernel boot; none for a firmware-only start (a KVM check on hosts whose KVM
    runs firmware but no stock kernel, see HOST-NOTES.md)."""
    if spec.firmware_only or spec.firmware:
        if spec.machine == Machine.MICROVM:
            raise InvalidInputError("microvm has no firmware: it needs a kernel")
        return firmware.qemu_args(spec.firmware, spec.efi_vars, spec.serial_log.parent,
                                  spec.secure_boot) \
            if spec.firmware else []
    return ["-kernel", str(spec.kernel), "-initrd", str(spec.initrd),
            "-append", mmio_append(spec)]


def build_argv(spec: VmSpec, qemu: str = QEMU) -> list[str]:
    """argv for a daemonized QEMU that outlives the daemon; console to a file, QMP on a socket."""
    machine = spec.machine.value
    if spec.machine == Machine.MICROVM:
        machine += ",x-option-roms=off,rtc=on"
        if spec.mmio_cmdline:
            machine += ",acpi=off,auto-kernel-cmdline=off"
    if spec.secure_boot:
        machine += ",smm=on"
    return [
        qemu,
        "-name", f"guest={spec.name},debug-threads=on",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-accel", f"tcg,tb-size={TCG_TB_MIB}" if spec.accel == Accel.TCG else spec.accel.value,
        "-M", machine,
        "-m", _ram_arg(spec),
        "-smp", str(spec.vcpus),
        *_kernel(spec),
        *_serial(spec),
        "-qmp", f"unix:{spec.qmp_socket},server=on,wait=off",
        *_devices(spec),
        *_block_devices(spec),
        *(tpm.qemu_args(spec.tpm_socket) if spec.tpm_socket is not None else []),
        "-daemonize", "-pidfile", str(spec.pidfile),
    ]
