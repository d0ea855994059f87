"""Virtual machines on QEMU: a daemonized ``qemu-system-x86_64`` per instance, driven by QMP.

Nothing is kept in memory: a record per instance under ``<state_dir>/vm/`` holds the
QEMU spec; the pid file and QMP socket live under ``<runtime_dir>/vm/<host_id>/`` (a
hash of it for long names, ``qemu_cmd.run_dir``);
the serial console log lives in the instance dir. QEMU outlives the daemon, and a
new driver object finds it again through the pid file and the socket.

The guest boots Debian's kernel with our busybox initramfs (see ``initramfs``):
PID 1 prints ``CUMULO-READY``, runs the instance command and prints
``CUMULO-EXIT <code>`` before powering off, which is how the exit code gets out.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from cumulo import faults
from cumulo.domain.limits import Limits
from cumulo.drivers.base import (
    DiskStats,
    ExecRequest,
    ExecSession,
    GuestStats,
    InstanceSpec,
    RunState,
    RunStatus,
    Usage,
    require,
)
from cumulo.drivers.migratable import Progress
from cumulo.drivers.records import Records
from cumulo.drivers.registry import DriverContext
from cumulo.drivers.vm import (
    disks,
    firmware,
    initramfs,
    measured,
    migration,
    nics,
    qga,
    qga_tty,
    qmp,
    seed,
    tpm,
)
from cumulo.drivers.vm.accel import TSC_RELIABLE, Accel, choose_accel, host_tsc_khz
from cumulo.drivers.vm.qemu_cmd import (
    MIB,
    QEMU,
    ROOT_ID,
    Io,
    Machine,
    VmSpec,
    build_argv,
    dirty_tracking_safe,
    memory_max,
    old_agent_socket,
    ram_pad,
    run_dir,
)
from cumulo.errors import (
    ConflictError,
    CumuloError,
    DriverError,
    InvalidInputError,
    NotFoundError,
    RuntimeToolError,
    UnsupportedError,
)
from cumulo.host import cgroup_limits, cgroups, procs
from cumulo.host.tools import not_installed
from cumulo.storage.base import RootSpec
from cumulo.storage.pools import pool_of

DEFAULT_MEMORY = 256 * MIB
QGA_STOP_WAIT = 5.0       # seconds for the guest agent to answer before stop goes on
DISK_BOOT_MEMORY = 512 * MIB     # a whole Debian with systemd (direct-kernel VMs run one program)
START_TIMEOUT = 30.0
KILL_WAIT = 5.0
POLL = 0.05
CONSOLE_CONNECT_TIMEOUT = 5.0
BALLOON_MIN = 64 * MIB      # below this the Debian kernel and our agent get OOM-killed
CMDLINE_MAX = 2000          # x86 COMMAND_LINE_SIZE is 2048
# disk: an existing raw or .qcow2 file to attach; nic: "on" adds a NIC on an isolated hub
# machine: microvm by default (on TCG it reaches a first exec in 0.8x the time of pc, whose
# firmware it lacks; both boot vmlinux through PVH, see bench/vm_launch.py); pc when --io
# emulated asks for an IDE disk and e1000 (microvm has only virtio-mmio). microvm has no
# hot-plug: volumes go on while it is stopped. On TCG microvm needs tsc_early_khz (no
# HPET/PM timer to calibrate)
OPTIONS = {"accel": "auto", "machine": "microvm", "io": "paravirt", "disk": "", "nic": "off"}
OPTIONS["tpm"] = "off"      # on: an swtpm per VM, a TPM 2.0 in the guest (tpm.py)
OPTIONS["firmware"] = ""    # bios or uefi: a VM booted from its image's disk (firmware.py)
SECURE_BOOT = "security.secureboot"   # true: UEFI secure boot (Incus's name for it)
OPTIONS[SECURE_BOOT] = "false"
log = logging.getLogger(__name__)
EXIT_RE = re.compile(rb"CUMULO-EXIT (\d+)")
VCPU_THREAD = re.compile(r"CPU (\d+)/")   # QEMU's vCPU threads: "CPU 0/TCG", "CPU 1/KVM"
STATS_TIMEOUT = 1.0         # a metrics scrape skips a VM whose QMP is slower than this
DEFAULT_PIDS = 512          # QEMU's threads (vCPUs, I/O pool up to 64) and swtpm, with room
CGROUP_RELEASE_WAIT = 5.0   # swtpm --terminate exits just after QEMU
EXIT_GRACE = 5.0            # seconds QEMU may take to go once its guest said it ended
LOG_TAIL = 64 * 1024        # where on the console the end of a guest's program is told


def kernel_append(spec: InstanceSpec) -> str:
    """The guest kernel command line: console, hostname and the command for our /init."""
    script = "".join(f"export {k}={shlex.quote(v)}; " for k, v in spec.env.items())
    script += "exec " + shlex.join(spec.command) if spec.command else ""
    parts = ["console=ttyS0", "quiet", "panic=-1", f"cumulo.hostname={spec.hostname}"]
    if spec.ssh_keys:   # /init writes them to /root/.ssh/authorized_keys
        keys = "\n".join(spec.ssh_keys) + "\n"
        parts.append("cumulo.ssh=" + base64.b64encode(keys.encode()).decode())
    if script:
        parts.append("cumulo.cmd=" + base64.b64encode(script.encode()).decode())
    append = " ".join(parts)
    if len(append) > CMDLINE_MAX:
        raise InvalidInputError(f"the command, environment and SSH keys are too long for"
                                f" a VM ({len(append)} bytes on the kernel command line,"
                                f" at most {CMDLINE_MAX})")
    return append


def _boot_kind(vm: VmSpec) -> str:
    """How a direct-kernel VM boots, for its signature: pc and q35 through PVH or not
    (microvm always where it can, as before pc and q35 could)."""
    pvh = vm.machine != Machine.MICROVM and vm.kernel.name == "vmlinux"
    return "kernel+pvh" if pvh else "kernel"


def console_tail(path: Path) -> bytes:
    """The last ``LOG_TAIL`` bytes of a console log (empty if there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - LOG_TAIL))
            return f.read()
    except OSError:
        return b""


class VmDriver:
    """``InstanceDriver`` for QEMU virtual machines (KVM or TCG)."""

    kind = "vm"
    takes_ssh_keys = True      # via the kernel command line (kernel_append) or cloud-init

    # "disk" and "nic" stay internal: a host path must never come from an API user
    option_choices: dict[str, tuple[str, ...]] = {
        "accel": ("auto", "kvm", "tcg"),
        "machine": ("pc", "q35", "microvm"),
        "io": ("paravirt", "emulated"),
        "tpm": ("on", "off"),
        "firmware": firmware.CHOICES,
        SECURE_BOOT: ("true", "false"),
    }

    def __init__(self, ctx: DriverContext) -> None:
        self.ctx = ctx
        self._records = Records(ctx.state_dir / "vm")
        self._run = ctx.runtime_dir / "vm"
        self.qemu = shutil.which(QEMU) or QEMU
        self.swtpm = tpm.SWTPM

    # --- where things are -------------------------------------------------
    def _vmspec(self, host_id: str) -> VmSpec:
        rec = self._records.get(host_id)
        if rec is None:
            raise NotFoundError("instance", host_id)
        return VmSpec.from_dict(rec["vm"])

    def _pid(self, vm: VmSpec) -> int | None:
        """QEMU's pid if it is alive and really the QEMU of this VM (pid files can go stale)."""
        try:
            pid = int(vm.pidfile.read_text().strip())
            if not procs.alive(pid) or str(vm.pidfile) not in psutil.Process(pid).cmdline():
                return None
        except (OSError, ValueError, psutil.Error):
            return None
        return pid

    def _wait_dying(self, vm: VmSpec) -> None:
        """Wait (bounded) for a QEMU of this pid file that is already exiting.

        An exiting process has an empty cmdline (its memory is gone), so ``_pid``
        no longer claims it; callers that promise "QEMU is gone" must still wait
        for it. A zombie is already gone (see ``cumulo.host.procs``).
        """
        try:
            proc = psutil.Process(int(vm.pidfile.read_text().strip()))
            if not proc.name().startswith("qemu-system"):
                return   # the pid was reused
            if proc.cmdline() and procs.alive(proc.pid):
                return   # a live QEMU that is not this VM's
        except (OSError, ValueError, psutil.Error):
            return
        procs.wait_dead(proc.pid, KILL_WAIT)   # at once for a zombie

    # --- lifecycle --------------------------------------------------------
    def create(self, spec: InstanceSpec) -> None:
        self._check_new(spec, OPTIONS, "VM")
        opts = {**OPTIONS, **spec.options}
        if spec.boot_disk is not None:   # the image's own bootloader and kernel
            opts["machine"] = spec.options.get("machine", Machine.PC.value)
            if opts[SECURE_BOOT] == "true" and "machine" not in spec.options:
                opts["machine"] = Machine.Q35.value   # SMM guards the keys
        elif opts["firmware"] or opts[SECURE_BOOT] == "true":
            raise InvalidInputError(f"--{'firmware' if opts['firmware'] else 'secure-boot'}"
                                    " applies to VMs booted from a disk image"
                                    " (a vm-disk image, e.g. image build debian/12 --vm):"
                                    " this image boots Cumulo's kernel directly")
        if "machine" not in spec.options and opts["io"] == Io.EMULATED.value:
            opts["machine"] = Machine.PC.value   # the default that has the emulated devices
        choice = choose_accel(opts["accel"], self.ctx.host)
        try:
            machine, io = Machine(opts["machine"]), Io(opts["io"])
        except ValueError as err:
            raise InvalidInputError(f"{err}: machine is pc, q35 or microvm;"
                                    " io is paravirt or emulated") from None
        if machine == Machine.MICROVM and spec.boot_disk is not None:
            raise InvalidInputError("microvm has no firmware: a VM booting its own disk"
                                    " needs --machine pc or q35")
        if spec.boot_disk is not None:
            self._create_firmware_boot(spec, opts, choice, machine, io)
            return
        kernel = initramfs.find_kernel()
        append = kernel_append(spec)
        if machine == Machine.MICROVM and choice.accel == Accel.TCG and (khz := host_tsc_khz()):
            append += f" tsc_early_khz={khz} {TSC_RELIABLE}"   # see accel.host_tsc_khz
        if machine == Machine.MICROVM and opts["tpm"] == "on":
            append += " " + tpm.MICROVM_APPEND
        run = run_dir(self._run, spec.host_id)
        try:
            spec.instance_dir.mkdir(parents=True, exist_ok=True)
            # the root disk from the storage pool (none: the initramfs is the whole guest)
            root_disk = disks.prepare_root(spec)
            if root_disk is not None:
                append += " " + disks.root_append()
            initrd = initramfs.ensure(kernel, self._records.root / "initramfs")
            vm = VmSpec(
                name=spec.host_id, memory=spec.limits.memory or DEFAULT_MEMORY,
                vcpus=max(1, math.ceil(spec.limits.cpu or 1)), accel=choice.accel,
                machine=machine, io=io,
                kernel=kernel.for_machine(machine == Machine.MICROVM, opts["tpm"] == "on"),
                initrd=initrd, append=append,
                serial_log=spec.instance_dir / "console.log", qmp_socket=run / "qmp.sock",
                pidfile=run / "qemu.pid", disk=Path(opts["disk"]) if opts["disk"] else None,
                disk_format="qcow2" if opts["disk"].endswith(".qcow2") else "raw",
                nic=opts["nic"] == "on", qga=True, hvc_ports=qga_tty.PORTS, taps=spec.nics,
                console_socket=run / "console.sock",
                tpm_socket=tpm.ctrl_socket(run) if opts["tpm"] == "on" else None,
                ram_pad=ram_pad(choice.accel),
            )
            vm = replace(vm, root_disk=root_disk)
            self._records.put(spec.host_id, {"instance_dir": str(spec.instance_dir),
                                              "vm": vm.to_dict(), "notice": choice.notice,
                                              "root": spec.root.to_dict() if spec.root else None})
        except BaseException as err:
            with contextlib.suppress(CumuloError):
                self.delete(spec.host_id, spec.instance_dir)
            if spec.root is not None:
                with contextlib.suppress(CumuloError):
                    pool_of(spec.root).delete_root(spec.host_id)
            if isinstance(err, OSError):
                raise DriverError(f"cannot create VM {spec.host_id!r}: {err}") from err
            raise

    def _create_firmware_boot(self, spec: InstanceSpec, opts: dict[str, str],
                              choice: Any, machine: Machine, io: Io) -> None:
        """A VM whose firmware boots its root disk, a clone of the image's disk."""
        assert spec.boot_disk is not None
        secure = opts[SECURE_BOOT] == "true"
        fw = firmware.choose(opts["firmware"] or None, secure)
        if secure and machine != Machine.Q35:
            raise InvalidInputError(f"secure boot needs --machine q35 (its SMM guards the"
                                    f" UEFI variables that hold the keys), not {machine}")
        if spec.root is None:
            raise UnsupportedError("a VM booting its own disk needs a storage pool")
        run = run_dir(self._run, spec.host_id)
        try:
            spec.instance_dir.mkdir(parents=True, exist_ok=True)
            root_disk = pool_of(spec.root).vm_disk(spec.host_id, spec.boot_disk,
                                                   spec.root.copy, spec.root.size)
            vars_file = firmware.prepare_vars(spec.instance_dir, secure) \
                if fw == firmware.UEFI else None
            cidata = seed.make(spec.instance_dir, spec.host_id, spec.hostname,
                               [mac for _tap, mac in spec.nics], spec.user_data,
                               spec.cloud_config, spec.ssh_keys)
            vm = VmSpec(
                name=spec.host_id, memory=spec.limits.memory or DISK_BOOT_MEMORY,
                vcpus=max(1, math.ceil(spec.limits.cpu or 1)), accel=choice.accel,
                machine=machine, io=io, kernel=Path("/nonexistent"),
                initrd=Path("/nonexistent"), append="",
                serial_log=spec.instance_dir / "console.log", qmp_socket=run / "qmp.sock",
                pidfile=run / "qemu.pid", taps=spec.nics, qga=True, tty_ports=qga_tty.PORTS,
                console_socket=run / "console.sock",
                tpm_socket=tpm.ctrl_socket(run) if opts["tpm"] == "on" else None,
                root_disk=root_disk, firmware=fw, efi_vars=vars_file, seed=cidata,
                secure_boot=secure, ram_pad=ram_pad(choice.accel),
            )
            self._records.put(spec.host_id, {"instance_dir": str(spec.instance_dir),
                                              "vm": vm.to_dict(), "notice": choice.notice,
                                              "root": spec.root.to_dict()})
        except BaseException as err:
            with contextlib.suppress(CumuloError):
                self.delete(spec.host_id, spec.instance_dir)
            with contextlib.suppress(CumuloError):
                pool_of(spec.root).delete_root(spec.host_id)
            if isinstance(err, OSError):
                raise DriverError(f"cannot create VM {spec.host_id!r}: {err}") from err
            raise

    def notice(self, host_id: str) -> str | None:
        """What the user should know about this VM (e.g. TCG because KVM is unusable)."""
        rec = self._records.get(host_id)
        return None if rec is None else rec.get("notice")

    # --- disks: the root disk and hot-plugged volumes -------------------------
    def _with_disks(self, vm: VmSpec, spec: InstanceSpec) -> VmSpec:
        """``vm`` with the volumes attached now, recorded (a migration takes the same
        devices); a damaged root disk raises before any QEMU starts."""
        if vm.root_disk is not None:
            disks.check(vm.root_disk)
        return self._set_volumes(vm, tuple((i, str(p), s) for i, p, s in spec.disks))

    def _set_volumes(self, vm: VmSpec, volumes: tuple[tuple[str, str, bool], ...]) -> VmSpec:
        return self._put_vm(replace(vm, volumes=volumes))

    def _put_vm(self, vm: VmSpec) -> VmSpec:
        """Record ``vm`` as the VM's devices are now (a start or a migration takes them)."""
        rec = self._records.get(vm.name)
        if rec is None:
            raise NotFoundError("instance", vm.name)
        try:
            self._records.put(vm.name, {**rec, "vm": vm.to_dict()})
        except OSError as err:
            raise DriverError(f"cannot rewrite the record of {vm.name!r}: {err}") from err
        return vm

    def attach_disk(self, host_id: str, dev_id: str, path: Path, shared: bool) -> None:
        """Hot-plug a volume file as a virtio-blk disk (``DiskHotplug``)."""
        require(self.state(host_id), host_id, "attach a disk to", RunStatus.RUNNING,
                RunStatus.PAUSED)
        vm = self._vmspec(host_id)
        disks.attach(vm.qmp_socket, vm.machine, dev_id, path, shared)
        self._set_volumes(vm, (*[v for v in vm.volumes if v[0] != dev_id],
                               (dev_id, str(path), shared)))

    def detach_disk(self, host_id: str, dev_id: str) -> None:
        """Hot-unplug it: waits until the guest released it (it must be running)."""
        require(self.state(host_id), host_id, "detach a disk from", RunStatus.RUNNING)
        vm = self._vmspec(host_id)
        disks.detach(vm.qmp_socket, dev_id)
        self._set_volumes(vm, tuple(v for v in vm.volumes if v[0] != dev_id))

    # --- NICs hot-plugged into a running VM (the taps are the service's) --------
    def attach_nic(self, host_id: str, tap: str, mac: str) -> None:
        """Plug a NIC whose tap is on its bridge into the running VM (``NicHotplug``)."""
        require(self.state(host_id), host_id, "attach a NIC to", RunStatus.RUNNING,
                RunStatus.PAUSED)
        vm = self._vmspec(host_id)
        nics.attach(vm, tap, mac)
        self._set_taps(vm, (*[t for t in vm.taps if t[0] != tap], (tap, mac)))

    def detach_nic(self, host_id: str, tap: str) -> None:
        """Unplug it: waits until the guest released it (it must be running)."""
        require(self.state(host_id), host_id, "detach a NIC from", RunStatus.RUNNING)
        vm = self._vmspec(host_id)
        nics.detach(vm.qmp_socket, tap)
        self._set_taps(vm, tuple(t for t in vm.taps if t[0] != tap))

    def _set_taps(self, vm: VmSpec, taps: tuple[tuple[str, str], ...]) -> VmSpec:
        return self._put_vm(replace(vm, taps=taps))

    def start(self, spec: InstanceSpec) -> RunState:
        host_id = spec.host_id
        require(self.state(host_id), host_id, "start", RunStatus.STOPPED)
        # root disk checked; the volumes and NICs attached now (also while it was stopped);
        # a cold boot takes today's RAM padding (a VM recorded before it gets it now)
        vm = self._vmspec(host_id)
        vm = self._with_disks(replace(vm, taps=spec.nics, ram_pad=ram_pad(vm.accel)), spec)
        if spec.before_start is not None:
            spec.before_start()  # the NICs' taps on their bridges
        with self._in_cgroup(vm, spec) as prefix, self._with_tpm(vm, spec, prefix):
            state = self._launch(vm, prefix + build_argv(vm, self.qemu))
            faults.point("vm.start.after_qemu")
            if vm.firmware:   # its own bootloader: a disk without one is an error
                firmware.check_boot(vm.serial_log, 0, lambda: self._pid(vm) is not None,
                                    firmware.SB_BOOT_CHECK if vm.secure_boot
                                    else firmware.BOOT_CHECK, secure_boot=vm.secure_boot)
            return state

    @contextlib.contextmanager
    def _with_tpm(self, vm: VmSpec, spec: InstanceSpec, prefix: list[str]) -> Iterator[None]:
        """The vTPM first (QEMU connects at once); no QEMU without it, nor swtpm without
        QEMU: the block failing kills both. An incoming QEMU (restore, migration) gets the
        TPM's state in the migration stream and hands it to this swtpm."""
        if vm.tpm_socket is not None:
            tpm.start(spec.instance_dir / "tpm", vm.tpm_socket.parent,
                      spec.instance_dir / "swtpm.log", self.swtpm, prefix)
        faults.point("vm.start.after_swtpm")   # (its taps made too; no QEMU yet)
        try:
            yield
        except BaseException:
            with contextlib.suppress(CumuloError):
                self._kill(vm)
            if vm.tpm_socket is not None:
                with contextlib.suppress(CumuloError):
                    tpm.stop(vm.tpm_socket.parent)
            raise

    # --- the cgroup around QEMU and its swtpm (host/cgroup_limits.py) --------
    def _cgroup_path(self, host_id: str) -> str:
        rec = self._records.get(host_id) or {}
        return str(rec.get("cgroup") or f"/{self.ctx.cgroup_parent}/{host_id}")

    def cgroup_limits(self, vm: VmSpec, limits: Limits) -> cgroup_limits.CgroupLimits:
        """Guest RAM plus QEMU's own memory, the ``--cpu`` quota, a bound on threads."""
        return cgroup_limits.CgroupLimits(memory_max=memory_max(vm), cpu_max=limits.cpu,
                                          pids_max=limits.pids or DEFAULT_PIDS)

    @contextlib.contextmanager
    def _in_cgroup(self, vm: VmSpec, spec: InstanceSpec) -> Iterator[list[str]]:
        """Create the VM's cgroup; yields the argv prefix that spawns into it, and
        removes it again if the block fails (QEMU and swtpm already gone then)."""
        path = self._cgroup_path(vm.name)
        wanted = self.cgroup_limits(vm, spec.limits)
        procs = cgroup_limits.create(path, wanted)
        rec = self._records.get(vm.name)
        if rec is not None and rec.get("cgroup") != path:
            with contextlib.suppress(OSError):
                self._records.put(vm.name, {**rec, "cgroup": path})
        try:
            yield cgroup_limits.spawn_prefix(procs)
        except BaseException:
            with contextlib.suppress(CumuloError):
                self._release_cgroup(vm.name)
            raise

    def _release_cgroup(self, host_id: str) -> None:
        """Remove the VM's cgroup once nothing runs in it (swtpm may take a moment)."""
        path = self._cgroup_path(host_id)
        if left := cgroups.remove(path, self.ctx.cgroup_parent, wait=CGROUP_RELEASE_WAIT):
            raise DriverError(f"the cgroup of {host_id!r} still holds processes:"
                              f" {', '.join(left)}")

    def _launch(self, vm: VmSpec, argv: list[str]) -> RunState:
        """Run QEMU daemonized with ``argv`` and wait for its QMP socket."""
        host_id = vm.name
        for path in () if vm.firmware_only or vm.firmware else (vm.kernel, vm.initrd):
            if not path.is_file():
                raise NotFoundError("VM boot file", str(path))
        vm.qmp_socket.parent.mkdir(parents=True, exist_ok=True)
        qga_tty.make_fifos(vm.qmp_socket.parent, vm.hvc_ports)
        vm.pidfile.unlink(missing_ok=True)
        vm.qmp_socket.unlink(missing_ok=True)
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT,
                                 stdin=subprocess.DEVNULL)
        except FileNotFoundError as err:
            self._kill(vm)
            raise not_installed(str(err.filename or QEMU), "run virtual machines") from None
        except (OSError, subprocess.TimeoutExpired) as err:
            self._kill(vm)
            raise DriverError(f"cannot start QEMU for {host_id!r}: {err}") from err
        if res.returncode != 0:
            own = argv[argv.index(self.qemu) + 1:] if self.qemu in argv else argv[1:]
            raise RuntimeToolError(QEMU, own, res.returncode, res.stderr)
        pid = self._pid(vm)
        if pid is None:
            raise DriverError(f"QEMU of {host_id!r} exited at once; see its console log")
        deadline = time.monotonic() + START_TIMEOUT
        while not qmp.reachable(vm.qmp_socket):
            if time.monotonic() >= deadline or self._pid(vm) is None:
                self._kill(vm)
                raise DriverError(f"QMP socket of {host_id!r} never answered")
            time.sleep(POLL)
        if vm.accel == Accel.KVM and not qmp.query_kvm(vm.qmp_socket)[1]:
            self._kill(vm)   # never let a guest asked on KVM run emulated without a word
            raise DriverError(f"QEMU of {host_id!r} started without KVM enabled")
        return RunState(RunStatus.RUNNING, pid=pid)

    def _exit_code(self, vm: VmSpec) -> int | None:
        """The guest command's exit code, if /init reported one on the console."""
        found = EXIT_RE.findall(console_tail(vm.serial_log))
        return int(found[-1]) if found else None

    def state(self, host_id: str) -> RunState:
        if self._records.get(host_id) is None:
            return RunState(RunStatus.MISSING)
        vm = self._vmspec(host_id)
        pid = self._pid(vm)
        if pid is None:
            return RunState(RunStatus.STOPPED, exit_code=self._exit_code(vm))
        code = self._exit_code(vm)
        if code is not None:   # the guest's program ended: QEMU is on its way out
            return self._ending(vm, pid, code)
        try:
            status = qmp.query_status(vm.qmp_socket)
        except DriverError:
            status = "running"   # alive but busy or starting: QEMU is still the VM
        if status in ("paused", "suspended", "postmigrate"):   # postmigrate: sent away
            return RunState(RunStatus.PAUSED, pid=pid)
        return RunState(RunStatus.RUNNING, pid=pid)

    def _ending(self, vm: VmSpec, pid: int, code: int) -> RunState:
        """QEMU after its guest's program ended: running for a moment (no QMP call: one
        that connects while QEMU 7.2 exits can hang it for good in monitor_cleanup),
        then, if it has not gone within ``EXIT_GRACE`` of the console's last line,
        killed, and the VM stopped with the program's exit code."""
        try:
            quiet = time.time() - vm.serial_log.stat().st_mtime
        except OSError:
            quiet = EXIT_GRACE
        if quiet < EXIT_GRACE:
            return RunState(RunStatus.RUNNING, pid=pid)
        log.warning("QEMU pid %d of %s still runs %.0f s after its guest's program ended"
                    " (exit code %d): killing it", pid, vm.name, quiet, code)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        if not procs.wait_dead(pid, KILL_WAIT):
            raise DriverError(f"QEMU pid {pid} of {vm.name!r} did not die after SIGKILL")
        return RunState(RunStatus.STOPPED, exit_code=code)

    def _kill(self, vm: VmSpec) -> None:
        """QMP quit, then SIGKILL; returns once QEMU is gone."""
        pid = self._pid(vm)
        if pid is None:
            self._wait_dying(vm)
            return
        with contextlib.suppress(DriverError):
            qmp.quit(vm.qmp_socket)
        if procs.wait_dead(pid, 2.0):
            return
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        if not procs.wait_dead(pid, KILL_WAIT):
            raise DriverError(f"QEMU pid {pid} of {vm.name!r} did not die after SIGKILL")

    def stop(self, host_id: str, timeout: float, force: bool) -> RunState:
        """ACPI power button, wait ``timeout``, then quit and SIGKILL (at once with ``force``)."""
        current = require(self.state(host_id), host_id, "stop")
        vm = self._vmspec(host_id)
        pid = current.pid
        if pid is not None and not force:
            with contextlib.suppress(DriverError):
                if current.status == RunStatus.PAUSED:
                    qmp.cont(vm.qmp_socket)   # a paused guest cannot see the button
                qmp.system_powerdown(vm.qmp_socket)
                if vm.qga:   # a guest without acpid or logind ignores the button
                    with qga.connect(vm.qmp_socket.parent, host_id,
                                     min(QGA_STOP_WAIT, timeout)) as guest:
                        guest.shutdown()
                procs.wait_dead(pid, timeout)
        self._kill(vm)
        vm.qmp_socket.unlink(missing_ok=True)
        for i in range(vm.agent_ports):
            old_agent_socket(vm.qmp_socket.parent, i).unlink(missing_ok=True)
        if vm.console_socket is not None:
            vm.console_socket.unlink(missing_ok=True)
        if vm.tpm_socket is not None:
            tpm.stop(vm.tpm_socket.parent)
        self._release_cgroup(host_id)
        return RunState(RunStatus.STOPPED, exit_code=self._exit_code(vm))

    def lost_helpers(self, host_id: str) -> list[str]:
        """swtpm, if it died while QEMU runs on (``Supervised``)."""
        rec = self._records.get(host_id)
        if rec is None:
            return []
        vm = VmSpec.from_dict(rec["vm"])
        if vm.tpm_socket is None or self._pid(vm) is None:
            return []
        return ["swtpm"] if tpm.pid(vm.tpm_socket.parent) is None else []

    def pause(self, host_id: str) -> None:
        require(self.state(host_id), host_id, "pause", RunStatus.RUNNING)
        qmp.stop(self._vmspec(host_id).qmp_socket)

    def resume(self, host_id: str) -> None:
        require(self.state(host_id), host_id, "resume", RunStatus.PAUSED)
        qmp.cont(self._vmspec(host_id).qmp_socket)

    def delete(self, host_id: str, instance_dir: Path) -> None:
        rec = self._records.get(host_id)
        dirs = {instance_dir} | ({Path(rec["instance_dir"])} if rec else set())
        vm = VmSpec.from_dict(rec["vm"]) if rec is not None else None
        if vm is not None:
            pid = self._pid(vm)
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)   # delete is not graceful
                if not procs.wait_dead(pid, KILL_WAIT):
                    raise DriverError(f"QEMU pid {pid} of {host_id!r} did not die")
            else:
                self._wait_dying(vm)
            if vm.tpm_socket is not None:
                tpm.stop(vm.tpm_socket.parent)
            self._release_cgroup(host_id)
        try:
            if rec is not None and rec.get("root"):
                pool_of(RootSpec.from_dict(rec["root"])).delete_root(host_id)
            for d in dirs:
                if d.exists():
                    shutil.rmtree(d)
            with contextlib.suppress(UnsupportedError):
                run = vm.qmp_socket.parent if vm is not None else run_dir(self._run, host_id)
                shutil.rmtree(run, ignore_errors=True)
            self._records.remove(host_id)
        except OSError as err:
            raise DriverError(f"cannot remove VM {host_id!r}: {err}") from err

    # --- limits and usage ---------------------------------------------------
    def update_limits(self, host_id: str, limits: Limits) -> None:
        current = require(self.state(host_id), host_id, "update_limits")
        rec = self._records.get(host_id)
        assert rec is not None
        vm = VmSpec.from_dict(rec["vm"])
        memory = limits.memory or DEFAULT_MEMORY
        vcpus = max(1, math.ceil(limits.cpu or 1))
        if (memory, vcpus) == (vm.memory, vm.vcpus):
            return
        if current.status != RunStatus.STOPPED and vcpus == vm.vcpus:
            self._balloon(host_id, vm, memory)   # and the next boot gets ``memory`` too
            current = RunState(RunStatus.STOPPED)
        if current.status != RunStatus.STOPPED:
            raise UnsupportedError("changing the vCPUs or memory of a running VM is not supported"
                                   " yet: stop it first")
        rec["vm"] = {**rec["vm"], "memory": memory, "vcpus": vcpus}
        VmSpec.from_dict(rec["vm"])   # validate before writing
        try:
            self._records.put(host_id, rec)
        except OSError as err:
            raise DriverError(f"cannot rewrite the record of {host_id!r}: {err}") from err

    def usage(self, host_id: str) -> Usage:
        """From the VM's cgroup (QEMU and its swtpm together); QEMU's own without one."""
        vm = self._vmspec(host_id)
        pid = self._pid(vm)
        if pid is None:
            return Usage()
        path = self._cgroup_path(host_id)
        if cgroups.holds(pid, path):
            u = cgroups.read_usage(path)
            return Usage(cpu_time_ns=u.cpu_time_ns, memory_bytes=u.memory_bytes,
                         memory_peak_bytes=u.memory_peak_bytes, pids=u.pids,
                         io_read_bytes=u.io_read_bytes, io_write_bytes=u.io_write_bytes)
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                t = proc.cpu_times()
                rss = proc.memory_info().rss
                threads = proc.num_threads()
                io = proc.io_counters()
        except psutil.Error:
            return Usage()
        return Usage(cpu_time_ns=int((t.user + t.system) * 1e9), memory_bytes=rss,
                     pids=threads, io_read_bytes=io.read_bytes, io_write_bytes=io.write_bytes)

    def guest_stats(self, host_id: str) -> GuestStats:
        """Per vCPU: CPU seconds of QEMU's thread "CPU N/TCG" (or /KVM; -name debug-threads);
        per drive: QMP query-blockstats, one round trip with a short timeout."""
        vm = self._vmspec(host_id)
        pid = self._pid(vm)
        if pid is None:
            raise DriverError(f"{host_id!r} is not running")
        vcpus: dict[int, float] = {}
        try:
            for t in psutil.Process(pid).threads():
                with contextlib.suppress(OSError):
                    comm = Path(f"/proc/{pid}/task/{t.id}/comm").read_text()
                    if m := VCPU_THREAD.match(comm):
                        vcpus[int(m[1])] = t.user_time + t.system_time
        except psutil.Error as err:
            raise DriverError(f"cannot read the threads of {host_id!r}: {err}") from err
        disks = {dev: DiskStats(read_bytes=st.get("rd_bytes", 0),
                                write_bytes=st.get("wr_bytes", 0),
                                read_ops=st.get("rd_operations", 0),
                                write_ops=st.get("wr_operations", 0))
                 for dev, st in qmp.blockstats(vm.qmp_socket, STATS_TIMEOUT).items()}
        return GuestStats(vcpus, disks)

    # --- processes and console ----------------------------------------------
    def exec(self, host_id: str, request: ExecRequest) -> ExecSession:
        """Run a command in the guest through its QEMU guest agent (qemu-guest-agent in a
        VM booted from its disk, guest_qga.py in a busybox VM); with -t and a terminal
        port or console, on a terminal of its own (qga_tty.py)."""
        return self._agent_exec(host_id, request, f"VM {host_id!r} was created with an"
                                " older exec agent that is gone")

    def _agent_exec(self, host_id: str, request: ExecRequest, no_agent: str,
                    relay: Callable[[ExecRequest, int, str], str] = qga_tty.relay_script,
                    argv: Callable[[ExecRequest], list[str]] | None = None) -> ExecSession:
        """An exec session through the guest agent, for this driver and its subclasses:
        ``no_agent`` says why a VM without one cannot exec; ``relay`` runs a -t session
        on a terminal port, ``argv`` gives what the guest runs otherwise (default: ``sh
        -c`` of the command), as in qga_tty.TtySession and qga.QgaSession."""
        require(self.state(host_id), host_id, "exec", RunStatus.RUNNING)
        vm = self._vmspec(host_id)
        if not vm.qga:
            raise UnsupportedError(f"{no_agent}: recreate it to exec into it")
        if request.tty and vm.tty_ports:
            return qga_tty.TtySession(vm.qmp_socket.parent, host_id, request, vm.tty_ports,
                                      relay)
        if request.tty and vm.hvc_ports:     # a busybox VM: its virtio consoles
            return qga_tty.TtySession(vm.qmp_socket.parent, host_id, request, vm.hvc_ports,
                                      qga_tty.hvc_script, qga_tty.HVC)
        # -t in a VM created before it had terminals: one stream, no pty
        return qga.QgaSession(vm.qmp_socket.parent, host_id, request,
                              argv(request) if argv else None)

    # --- files through qemu-guest-agent (FileTransfer); others go through exec ------
    def write_file(self, host_id: str, path: str, data: bytes, mode: int) -> bool:
        require(self.state(host_id), host_id, "copy files into", RunStatus.RUNNING)
        vm = self._vmspec(host_id)
        if not vm.qga:
            return False
        with qga.connect(vm.qmp_socket.parent, host_id) as guest:
            guest.write_file(path, data, mode)
        return True

    def read_file(self, host_id: str, path: str, limit: int) -> bytes | None:
        require(self.state(host_id), host_id, "copy files out of", RunStatus.RUNNING)
        vm = self._vmspec(host_id)
        if not vm.qga:
            return None
        with qga.connect(vm.qmp_socket.parent, host_id) as guest:
            return guest.read_file(path, limit)

    # --- measured boot (TpmReader): what the guest's kernel reads from its vTPM ----------
    def tpm_measurements(self, host_id: str) -> tuple[dict[int, str], bytes]:
        """The sha256 PCRs and the firmware's TCG2 event log, through the guest agent."""
        require(self.state(host_id), host_id, "read the TPM of", RunStatus.RUNNING)
        vm = self._vmspec(host_id)
        if vm.tpm_socket is None:
            raise UnsupportedError(f"VM {host_id!r} has no vTPM: launch it with --tpm"
                                   " --firmware uefi for measured boot")
        if vm.firmware != firmware.UEFI:
            how = f"boots through {vm.firmware}" if vm.firmware else "boots a kernel directly"
            raise UnsupportedError(f"measured boot needs UEFI firmware: VM {host_id!r} {how}"
                                   " (launch a disk image with --firmware uefi --tpm)")
        if not vm.qga:
            raise UnsupportedError(f"VM {host_id!r} has no QEMU guest agent to read its TPM")
        with qga.connect(vm.qmp_socket.parent, host_id) as guest:
            return measured.read(guest, host_id)

    def read_console(self, host_id: str, offset: int) -> tuple[bytes, int]:
        vm = self._vmspec(host_id)
        try:
            with open(vm.serial_log, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if offset > size:
                    offset = 0      # a new boot truncated the log
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return b"", offset
        except OSError as err:
            raise DriverError(f"cannot read console log {vm.serial_log}: {err}") from err
        return data, offset + len(data)

    def list_host_ids(self) -> list[str]:
        return self._records.ids()

    # --- checkpoint, restore and live migration (drivers/migratable.py) -----
    # the vTPM's state travels in QEMU's migration stream (its emulator backend fetches
    # swtpm's state blobs); UEFI variables are flash memory, in the stream too
    def checkpoint(self, host_id: str, path: Path) -> dict[str, Any]:
        """Stop the vCPUs, write RAM and device state to ``path``, quit QEMU."""
        current = require(self.state(host_id), host_id, "checkpoint",
                          RunStatus.RUNNING, RunStatus.PAUSED)
        vm = self._vmspec(host_id)
        try:
            stats = migration.save(vm.qmp_socket, path)
        except CumuloError:
            if current.status == RunStatus.RUNNING:
                with contextlib.suppress(DriverError):
                    qmp.cont(vm.qmp_socket)
            raise
        self._kill(vm)
        vm.qmp_socket.unlink(missing_ok=True)
        self._release_cgroup(host_id)
        return stats.to_dict()

    def restore(self, spec: InstanceSpec, path: Path) -> RunState:
        host_id = spec.host_id
        require(self.state(host_id), host_id, "restore", RunStatus.STOPPED)
        if not path.is_file():
            raise NotFoundError("checkpoint", str(path))
        vm = self._with_disks(self._vmspec(host_id), spec)
        if spec.before_start is not None:
            spec.before_start()
        with self._in_cgroup(vm, spec) as prefix, self._with_tpm(vm, spec, prefix):
            run = self._launch(vm, prefix + migration.incoming_argv(vm, self.qemu))
            migration.load(vm.qmp_socket, path)
        return run

    def signature(self, host_id: str) -> str:
        vm = self._vmspec(host_id)
        return (f"{vm.machine.value}/{vm.io.value}/{vm.accel.value}/{vm.kernel.parent.name}/"
                f"{vm.initrd.name}/{vm.memory}/{vm.vcpus}/{vm.nic}/"
                f"{'disk' if vm.root_disk else 'nodisk'}/{vm.firmware or _boot_kind(vm)}/"
                f"{'tpm' if vm.tpm_socket else 'notpm'}{'/secureboot' if vm.secure_boot else ''}"
                f"/tty{vm.tty_ports}{f'/hvc{vm.hvc_ports}' if vm.hvc_ports else ''}"
                f"{'/oldagent' if vm.agent_ports else ''}"
                f"{f'/ram+{vm.ram_pad}' if vm.ram_pad else ''}")

    def match_source(self, host_id: str, theirs: str) -> None:
        """An incoming VM takes the source's RAM padding (qemu_cmd.TCG_RAM_PAD): one
        booted before the padding (none) can still move here (with its vCPUs stopped,
        see ``send``); its next cold start pads it. Only the two known sizes. A pc or q35
        guest booted from vmlinuz (before PVH boot there) keeps it: the two loaders are
        other option ROMs, which the migration stream must find."""
        vm = self._vmspec(host_id)
        m = re.search(r"/ram\+(\d+)$", theirs)
        pad = int(m.group(1)) if m else 0
        if pad != vm.ram_pad and pad in (0, ram_pad(vm.accel)):
            vm = self._put_vm(replace(vm, ram_pad=pad))
        if vm.firmware or vm.machine == Machine.MICROVM:
            return
        kind = next((k for k in ("/kernel/", "/kernel+pvh/") if k in theirs), None)
        if kind is not None and kind.strip("/") != _boot_kind(vm):
            name = "vmlinux" if kind == "/kernel+pvh/" else "vmlinuz"
            if (vm.kernel.parent / name).is_file():
                self._put_vm(replace(vm, kernel=vm.kernel.parent / name))

    def prepare_incoming(self, spec: InstanceSpec, address: str) -> str:
        host_id = spec.host_id
        require(self.state(host_id), host_id, "receive", RunStatus.STOPPED)
        vm = self._with_disks(self._vmspec(host_id), spec)
        if spec.before_start is not None:
            spec.before_start()
        postcopy = self._take_postcopy(host_id)   # the guest runs here before the end
        with self._in_cgroup(vm, spec) as prefix, self._with_tpm(vm, spec, prefix):
            self._launch(vm, prefix + migration.incoming_argv(vm, self.qemu,
                                                              autostart=postcopy))
            if postcopy:
                migration.allow_postcopy(vm.qmp_socket)
            uri = migration.listen(vm.qmp_socket, address)
            if vm.root_disk is not None:  # not shared: the source mirrors it here first
                uri += " " + migration.serve_disk(vm.qmp_socket, address, ROOT_ID)
            return uri

    def finish_incoming(self, host_id: str, resume: bool) -> RunState:
        vm = self._vmspec(host_id)
        if self._pid(vm) is None:
            raise DriverError(f"the incoming QEMU of {host_id!r} is gone")
        if vm.root_disk is not None:
            migration.stop_serving(vm.qmp_socket)
        migration.wait_incoming(vm.qmp_socket, resume)
        return self.state(host_id)

    def send(self, host_id: str, uri: str, *, live: bool, bandwidth: int | None,
             progress: Progress, cancelled: Callable[[], bool]) -> dict[str, Any]:
        current = require(self.state(host_id), host_id, "migrate",
                          RunStatus.RUNNING, RunStatus.PAUSED)
        vm = self._vmspec(host_id)

        def report(st: migration.MigrationStats) -> None:
            phase = "post-copy" if st.postcopy else f"pass {max(1, st.passes)}"
            progress(st.fraction, f"{phase}: {st.transferred // MIB} MiB sent,"
                                  f" {st.remaining // MIB} MiB left")

        ram, _, disk = uri.partition(" ")
        postcopy = self._take_postcopy(host_id)
        if vm.root_disk is not None and not disk.startswith("nbd:"):
            raise ConflictError("the destination offers no disk to mirror the root disk into")
        if live and not dirty_tracking_safe(vm):
            # QEMU < 9.0 on TCG would lose the guest's later stores (qemu_cmd.TCG_RAM_PAD):
            # this VM, booted before its RAM was padded, moves with its vCPUs stopped
            log.warning("VM %s moves with its vCPUs stopped: live migration of a TCG guest"
                        " of %d MiB would damage its memory (stop and start it once to"
                        " get a RAM size that migrates live)", host_id, vm.memory // MIB)
            live = False
        kw: dict[str, Any] = {"live": live and current.status == RunStatus.RUNNING,
                              "bandwidth": bandwidth, "on_progress": report,
                              "postcopy": postcopy}
        if vm.root_disk is not None:
            stats = migration.send_with_disk(vm.qmp_socket, ROOT_ID, ram, disk, progress,
                                             cancelled, **kw)
        else:
            stats = migration.send(vm.qmp_socket, ram, cancelled=cancelled, **kw)
        return stats.to_dict()

    # --- post-copy, asked for before the next migration (drivers/migratable.Postcopy) --
    def allow_postcopy(self, host_id: str) -> None:
        """The next ``prepare_incoming`` or ``send`` of this VM may switch to post-copy."""
        rec = self._records.get(host_id)
        if rec is None:
            raise NotFoundError("instance", host_id)
        self._records.put(host_id, {**rec, "postcopy": True})

    def _take_postcopy(self, host_id: str) -> bool:
        """Whether post-copy was allowed for this migration (asked once, then forgotten)."""
        rec = self._records.get(host_id)
        if rec is None or not rec.get("postcopy"):
            return False
        self._records.put(host_id, {k: v for k, v in rec.items() if k != "postcopy"})
        return True

    def end_outgoing(self, host_id: str) -> str:
        """How this VM's outgoing migration ended (cancelled first if it still ran and no
        one watches it): QEMU's status, or "gone" when its QEMU is."""
        vm = self._vmspec(host_id)
        if self._pid(vm) is None:
            return "gone"
        status = migration.settle(vm.qmp_socket)
        if status == "completed" and qmp.query_status(vm.qmp_socket) != "postmigrate":
            status = "none"   # an old answer (the migration that brought it here)
        if vm.root_disk is not None:
            with contextlib.suppress(DriverError):
                migration.end_mirror(vm.qmp_socket, force=status != "completed")
        return status

    def resume_after_failed_send(self, host_id: str, was_running: bool) -> None:
        vm = self._vmspec(host_id)
        if self._pid(vm) is None:
            raise DriverError(f"QEMU of {host_id!r} is gone after the failed migration")
        if was_running and qmp.query_status(vm.qmp_socket) != "running":
            qmp.cont(vm.qmp_socket)

    # --- stateful snapshots (drivers/live_snapshot.py) -----------------------
    def save_state(self, host_id: str, path: Path, then: Callable[[], None]) -> dict[str, Any]:
        """Stop the vCPUs, stream the state to ``path``, run ``then``, resume as it was.

        Once the migration stream completed, QEMU has flushed and released its disk
        images, so ``then`` copies a consistent root disk of that same instant; ``cont``
        takes the images back and runs the guest on.
        """
        require(self.state(host_id), host_id, "snapshot the state of", RunStatus.RUNNING)
        vm = self._vmspec(host_id)
        try:
            stats = migration.save(vm.qmp_socket, path)
            then()
        except BaseException:
            with contextlib.suppress(DriverError):
                qmp.cont(vm.qmp_socket)
            raise
        qmp.cont(vm.qmp_socket)
        return stats.to_dict()

    # --- interactive serial console (cumulo console) ------------------------
    def open_console(self, host_id: str) -> socket.socket:
        """A connected stream to the guest's ttyS0: bytes written are typed on it."""
        require(self.state(host_id), host_id, "attach to the console of", RunStatus.RUNNING,
                RunStatus.PAUSED)
        vm = self._vmspec(host_id)
        if vm.console_socket is None:
            raise UnsupportedError(f"VM {host_id!r} was created without an interactive console:"
                                   " recreate it to attach to it")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONSOLE_CONNECT_TIMEOUT)
        try:
            sock.connect(str(vm.console_socket))
        except OSError as err:
            sock.close()
            raise DriverError(f"cannot attach to the console of {host_id!r}: {err}") from err
        sock.settimeout(None)
        return sock

    # --- footprint and balloon (cumulo info) ----------------------------------
    def details(self, host_id: str) -> dict[str, Any]:
        """What this VM costs the host (QEMU's RSS, PSS, threads; the initramfs) and,
        with a balloon, the memory the guest really has."""
        vm = self._vmspec(host_id)
        out: dict[str, Any] = {"machine": vm.machine.value, "accel": vm.accel.value,
                               "io": vm.io.value, "memory_bytes": vm.memory}
        if vm.firmware:   # booted from its own disk
            out |= {"firmware": vm.firmware, "secure_boot": vm.secure_boot}
        with contextlib.suppress(OSError):
            out["initramfs_bytes"] = vm.initrd.stat().st_size
        pid = self._pid(vm)
        if pid is None:
            return out
        path = self._cgroup_path(host_id)
        if cgroups.holds(pid, path):
            out["cgroup"] = path
            out["cgroup_limits"] = cgroup_limits.read_limits(path)
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                mem = proc.memory_full_info()
                out |= {"qemu_rss_bytes": mem.rss, "qemu_pss_bytes": mem.pss,
                        "qemu_threads": proc.num_threads()}
        except psutil.Error:
            pass
        if vm.io == Io.PARAVIRT:
            with contextlib.suppress(DriverError):
                # the padding (qemu_cmd.TCG_RAM_PAD) is not memory the user gave it
                out["balloon_actual_bytes"] = qmp.query_balloon(vm.qmp_socket) - vm.ram_pad
        return out

    def _balloon(self, host_id: str, vm: VmSpec, memory: int) -> None:
        """Shrink or grow a running guest through virtio-balloon (up to its boot memory)."""
        if vm.io != Io.PARAVIRT:
            raise UnsupportedError(f"VM {host_id!r} has no memory balloon (--io emulated):"
                                   " stop it to change its memory")
        boot = qmp.memory_size(vm.qmp_socket)
        if memory > boot:
            raise UnsupportedError(   # that would be memory hotplug, not a balloon
                f"a running VM can get back at most the memory it booted with"
                f" ({boot // MIB}MiB): stop it first to give it {memory // MIB}MiB")
        if memory < BALLOON_MIN:
            raise InvalidInputError(f"a running VM keeps at least {BALLOON_MIN // MIB}MiB")
        qmp.balloon(vm.qmp_socket, min(boot, memory + vm.ram_pad))

    # --- shared by the VM kinds (vm, appvm) ----------------------------------
    def _check_new(self, spec: InstanceSpec, options: dict[str, str], what: str) -> None:
        """Refuse a create that cannot work: a taken host id, no QEMU, unknown options."""
        if self._records.get(spec.host_id) is not None:
            raise ConflictError(f"instance {spec.host_id!r} already exists on this host")
        if not Path(self.qemu).is_file():
            raise UnsupportedError(
                "qemu-system-x86_64 is not installed: run scripts/install.sh"
                " (apt-get install qemu-system-x86)")
        unknown = set(spec.options) - set(options)
        if unknown:
            raise InvalidInputError(f"unknown {what} option(s): {', '.join(sorted(unknown))}")
