"""Single-application VMs (``--type appvm``): one static program as PID 1 on microvm.

The OSv-style deployment: Debian's kernel and an initramfs holding only the program
(as ``/NAME``, run by ``rdinit=``) and ``/dev/console``, booted on QEMU's microvm
machine (no firmware, no
PCI). The program's output is the serial console; its arguments travel on the kernel
command line after ``--``. When it exits the kernel panics ("Attempted to kill init!
exitcode=0x..."), reboots by triple fault (``reboot=t``), and ``-no-reboot`` ends QEMU:
that panic line is how the exit status gets out. Everything else (QMP, pid file,
console socket, usage) is the VM driver's.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import replace
from pathlib import Path

from cumulo.drivers.base import ExecRequest, ExecSession, InstanceSpec, RunState
from cumulo.drivers.vm import initramfs, tpm
from cumulo.drivers.vm.accel import TSC_RELIABLE, Accel, choose_accel, host_tsc_khz
from cumulo.drivers.vm.driver import CMDLINE_MAX, VmDriver, console_tail
from cumulo.drivers.vm.qemu_cmd import (
    MIB,
    Io,
    Machine,
    VmSpec,
    mmio_append,
    run_dir,
    split_append,
)
from cumulo.errors import (
    CumuloError,
    DriverError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
)
from cumulo.images import app as app_image
from cumulo.images import kinds

DEFAULT_MEMORY = 128 * MIB      # Debian's kernel does not get to PID 1 in 64 MiB
SPECIALISED_MEMORY = 64 * MIB   # a kernel built for app VMs (image build kernel) needs less
MAX_ARGS = 30                   # the kernel passes at most 32 argv entries to init
PANIC_RE = re.compile(rb"Attempted to kill init! exitcode=0x([0-9a-fA-F]+)")
# the kernel's report of init's exit starts its line; what follows is the panic's dump
PANIC_LINE_RE = re.compile(rb"(?m)^\[ *\d+\.\d+\] Kernel panic - not syncing: Attempted to kill")
LOOK_BACK = 4096
# kernel feature -> the flag that needs it, what, and the options it must have built in
BUILT_IN = {"net": ("a NIC (--network, or the project's network 'default')",
                    "virtio-net and DHCP", ("CONFIG_VIRTIO_NET=y", "CONFIG_IP_PNP_DHCP=y")),
            "tpm": ("--tpm", "the TPM driver", ("CONFIG_TCG_TIS=y",))}
DHCP = "ip=dhcp"
OPTIONS = {"accel": "auto", "kernel": kinds.GENERIC_KERNEL, "tpm": "off"}
# APIC bus cycles per tick: QEMU's 1 GHz bus over the kernels' HZ=250 (Debian's; the
# specialised kernel keeps the default)
LAPIC_PERIOD = 1_000_000_000 // 250


def app_append(name: str, args: list[str], tsc_khz: int | None = None,
               extra: tuple[str, ...] = ()) -> str:
    """console, quiet, the reboot policy and the program as init, then its arguments
    after ``--``. ``tsc_khz`` (given on TCG): microvm has no HPET or PM timer, and a
    loaded host makes the PIT calibration fail and the boot hang; giving the TSC rate
    skips it. On TCG the local APIC timer's rate is given too (``lapic_timer_period``:
    QEMU's APIC bus runs at 1 GHz), as calibrating it is 100 ms of emulated busy loop per
    boot (KVM's CPUs have a TSC-deadline timer that needs none); ``noapictimer`` did that
    job before but left microvm with no timer that fires: a ``sleep`` in the guest never
    ended. The IO-APIC timer check, which a loaded host can fail, is skipped."""
    if len(args) > MAX_ARGS:
        raise InvalidInputError(f"an app VM takes at most {MAX_ARGS} arguments")
    quoted = []
    for a in args:
        if not a or '"' in a or any(c in a for c in "\n\r\t\0"):
            raise InvalidInputError(
                f"app argument {a!r} cannot go on a kernel command line: no empty argument,"
                " double quote, tab or newline")
        quoted.append(f'"{a}"' if " " in a else a)
    # loglevel=1: only emergencies (the panic line that carries the exit status)
    tsc = ([f"tsc_early_khz={tsc_khz}", TSC_RELIABLE, f"lapic_timer_period={LAPIC_PERIOD}",
            "no_timer_check"] if tsc_khz else [])
    append = " ".join(["console=ttyS0", "quiet", "loglevel=1", "panic=-1", "reboot=t", *tsc,
                       *extra, f"rdinit=/{name.lstrip('/')}", "--", *quoted])
    _check_length(append)
    return append


def _check_length(append: str) -> None:
    if len(append) > CMDLINE_MAX:
        raise InvalidInputError(f"the app's arguments are too long ({len(append)} bytes on"
                                f" the kernel command line, at most {CMDLINE_MAX})")


def _kernel(boot: Path | None, needs: tuple[str, ...] = ()) -> Path:
    """What microvm boots: a built kernel image's vmlinux (PVH), or Debian's. What the VM
    ``needs`` (features: net, tpm) must be built in: an app VM loads no modules."""
    if boot is None:
        for need in needs:
            raise InvalidInputError(_no_driver(need, "Debian's kernel has it as a module,"
                                                     " and an app VM loads none"))
        return initramfs.find_kernel().boot
    if not (boot / "vmlinux").is_file():
        raise NotFoundError("kernel image", str(boot.parent.name[:12]))
    config = set((boot / "config").read_text().splitlines())
    for need in needs:
        if not set(BUILT_IN[need][2]) <= config:
            raise InvalidInputError(_no_driver(need, f"kernel image {boot.parent.name[:12]}"
                                                     " has none"))
    return boot / "vmlinux"


def _with_dhcp(append: str, nic: bool) -> str:
    """The command line with ``ip=dhcp`` before the program's ``--`` if the VM has a NIC
    (the kernel takes its address from the network's dnsmasq, which hands each MAC the
    address IPAM gave it, before the program starts), without it if not."""
    kernel, init = split_append(append)
    return " ".join([*(w for w in kernel if w != DHCP), *([DHCP] if nic else []), *init])


def _no_driver(need: str, why: str) -> str:
    flag, what, _ = BUILT_IN[need]
    return (f"{flag} on an app VM needs a kernel with {what} built in ({why}):"
            f" cumulo image build kernel --with {need}"
            + (", or launch with --network none" if need == "net" else ""))


def exit_status(wait_status: int) -> int:
    """A shell-style exit code from the wait status the kernel printed for init."""
    signal = wait_status & 0x7F
    return 128 + signal if signal else (wait_status >> 8) & 0xFF


class AppVmDriver(VmDriver):
    """``InstanceDriver`` for single-application VMs."""

    kind = "appvm"
    takes_ssh_keys = False     # one program, no shell, no sshd
    agent = False              # a port for a guest agent (an image VM's: image_guest.py)
    tty_lines = 0              # serial lines for exec -t beside it (image_guest.tty_relay)
    # kernel: a kernel image's fingerprint or "generic" (the service resolves it)
    # tpm: a vTPM (swtpm, QEMU's tpm-tis) on a kernel built --with tpm
    option_choices: dict[str, tuple[str, ...]] = {"accel": ("auto", "kvm", "tcg"), "kernel": (),
                                                  "tpm": ("on", "off")}

    def _init(self, spec: InstanceSpec) -> tuple[str, Path]:
        """What the kernel runs as init (``rdinit=``) and where it comes from, checked
        before anything is made."""
        name = Path(spec.command[0]).name if spec.command else "app"
        # app images keep the program at /bin/NAME (images/app_rootfs.py); older ones at /app
        program = next((p for p in (spec.rootfs / "bin" / name,
                                    spec.rootfs / app_image.APP_PATH) if p.is_file()), None)
        if program is None:
            raise InvalidInputError(
                "an app VM needs an app image: cumulo launch --type appvm NAME --app PATH")
        return name, program

    def _args(self, spec: InstanceSpec) -> list[str]:
        """init's arguments, on the kernel command line."""
        return spec.command[1:]

    def _initrd(self, spec: InstanceSpec, init: str, source: Path) -> bytes:
        """The initramfs: the program alone."""
        data = source.read_bytes()
        app_image.check_static(data, init)
        return initramfs.build_app(data, init)

    def create(self, spec: InstanceSpec) -> None:
        self._check_new(spec, OPTIONS, f"{self.kind} VM")
        opts = {**OPTIONS, **spec.options}
        choice = choose_accel(opts["accel"], self.ctx.host)
        name, source = self._init(spec)
        tpm_on = opts["tpm"] == "on"
        append = self._nic_append(spec, app_append(
            name, self._args(spec), host_tsc_khz() if choice.accel == Accel.TCG else None,
            tuple(tpm.MICROVM_APPEND.split()) if tpm_on else ()))
        kernel = _kernel(spec.kernel, ("tpm",) if tpm_on else ())
        run = run_dir(self._run, spec.host_id)
        try:
            spec.instance_dir.mkdir(parents=True, exist_ok=True)
            initrd = spec.instance_dir / "app.cpio"
            initrd.write_bytes(self._initrd(spec, name, source))
            vm = VmSpec(
                name=spec.host_id, vcpus=1, accel=choice.accel, machine=Machine.MICROVM,
                memory=spec.limits.memory or (SPECIALISED_MEMORY if spec.kernel
                                              else DEFAULT_MEMORY),
                io=Io.PARAVIRT, kernel=kernel, initrd=initrd, append=append,
                serial_log=spec.instance_dir / "console.log", qmp_socket=run / "qmp.sock",
                pidfile=run / "qemu.pid", console_socket=run / "console.sock",
                tpm_socket=tpm.ctrl_socket(run) if tpm_on else None, taps=spec.nics,
                qga=self.agent, tty_ports=self.tty_lines, tty_serial=self.tty_lines > 0,
                # a built kernel has no ACPI: its virtio devices go on its command line
                mmio_cmdline=spec.kernel is not None,
            )
            _check_length(mmio_append(vm))
            self._records.put(spec.host_id, {"instance_dir": str(spec.instance_dir),
                                              "vm": vm.to_dict(), "notice": choice.notice})
        except BaseException as err:
            with contextlib.suppress(CumuloError):
                self.delete(spec.host_id, spec.instance_dir)
            if isinstance(err, OSError):
                raise DriverError(f"cannot create app VM {spec.host_id!r}: {err}") from err
            raise

    def _nic_append(self, spec: InstanceSpec, append: str) -> str:
        """The command line for the VM's NICs, checked before anything is made: the
        kernel takes the address of the one NIC an app VM may have by DHCP (``ip=dhcp``),
        so it needs virtio-net and its DHCP client built in."""
        if len(spec.nics) > 1:
            raise InvalidInputError(
                f"an app VM takes one network, not {len(spec.nics)}: its kernel configures one"
                " interface as it boots (ip=dhcp), and the program none")
        if spec.nics:
            _kernel(spec.kernel, ("net",))
        return _with_dhcp(append, bool(spec.nics))

    def start(self, spec: InstanceSpec) -> RunState:
        """As a VM starts, with the NICs it has now (one attached while it was stopped
        needs the kernel's DHCP on the command line)."""
        vm = self._vmspec(spec.host_id)
        append = self._nic_append(spec, vm.append)
        if append != vm.append:
            self._put_vm(replace(vm, append=append))
        return super().start(spec)

    def _exit_code(self, vm: VmSpec) -> int | None:
        found = PANIC_RE.findall(console_tail(vm.serial_log))
        return exit_status(int(found[-1], 16)) if found else None

    def read_console(self, host_id: str, offset: int) -> tuple[bytes, int]:
        """The program's output without the kernel's panic dump that follows its exit
        (the full text stays in the console log file); the exit status is in ``info``."""
        start = max(0, offset - LOOK_BACK)
        data, end = super().read_console(host_id, start)
        if end - len(data) != start:      # a new boot truncated the log: read from 0
            start = offset = 0
        cut = PANIC_LINE_RE.search(data)
        if cut is not None:
            return data[max(0, offset - start):cut.start()] if cut.start() > offset - start \
                else b"", end
        new = data[offset - start:]
        nl = new.rfind(b"\n")
        if new and not new.endswith(b"\n") and new[nl + 1:nl + 2] == b"[":
            new = new[:nl + 1]            # hold back a kernel line still being written
        return new, offset + len(new)

    def stop(self, host_id: str, timeout: float, force: bool) -> RunState:
        """The program has no power button to answer: stopping is quitting QEMU."""
        return super().stop(host_id, timeout, force=True)

    def exec(self, host_id: str, request: ExecRequest) -> ExecSession:
        if self._records.get(host_id) is None:
            raise NotFoundError("instance", host_id)
        raise UnsupportedError("an app VM runs only its program: there is no shell to exec"
                               " into (see its output with cumulo logs or cumulo console)")
