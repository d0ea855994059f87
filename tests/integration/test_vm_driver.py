"""The VM driver booting real QEMU guests on TCG: console marker, devices, lifecycle, cleanup.

Each test boots at most one VM (128 MiB, TCG) in its own temp dir, deleted by a
finaliser even on failure; no guest has a network beyond an isolated QEMU hub.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
import pytest

from cumulo.domain.limits import Limits
from cumulo.drivers.base import InstanceSpec, RunStatus
from cumulo.drivers.registry import DriverContext
from cumulo.drivers.vm import qmp
from cumulo.drivers.vm.accel import Accel
from cumulo.drivers.vm.driver import VmDriver
from cumulo.drivers.vm.qemu_cmd import MIB, Io, Machine, VmSpec, build_argv
from cumulo.errors import DriverError, UnsupportedError
from cumulo.host import procs
from cumulo.host.info import HostInfo
from cumulo.host.probe import probe

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

BOOT_TIMEOUT = 60.0
# the host these tests run on: PVM-only KVM, so auto means TCG (see HOST-NOTES.md)
HOST = HostInfo(kvm="pvm", kvm_usable=False, cpus=os.cpu_count() or 1)
SHOW_DEVICES = ("ls /sys/class/block; echo virtio=$(ls /sys/bus/virtio/devices | wc -l);"
                " echo nic=$(basename $(readlink /sys/class/net/eth0/device/driver));"
                " echo host=$(hostname); exit 7")


@dataclass
class Env:
    ctx: DriverContext
    driver: VmDriver
    top: Path

    def spec(self, command: list[str] | None = None, host_id: str = "", **options: str
             ) -> InstanceSpec:
        host_id = host_id or f"vm-{uuid.uuid4().hex[:6]}"
        return InstanceSpec(host_id=host_id, hostname=f"g{host_id[3:]}",
                            instance_dir=self.top / "i" / host_id, rootfs=self.top,
                            command=command or [], limits=Limits(memory=128 * MIB),
                            options={"accel": "auto", **options})

    def console_until(self, host_id: str, marker: bytes, timeout: float = BOOT_TIMEOUT
                      ) -> bytes:
        data, offset = b"", 0
        deadline = time.monotonic() + timeout
        while marker not in data:
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {marker!r} on the console; got {data[-2000:]!r}")
            chunk, offset = self.driver.read_console(host_id, offset)
            data += chunk
            time.sleep(0.05)
        return data


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    top = Path(str(tmp_path_factory.mktemp("vm")))   # short paths: QMP sockets max 107 bytes
    ctx = DriverContext(state_dir=top / "state", runtime_dir=top / "run",
                        cgroup_parent=f"cumulo-test-{uuid.uuid4().hex[:8]}", host=HOST)
    driver = VmDriver(ctx)
    yield Env(ctx, driver, top)
    for host_id in driver.list_host_ids():
        driver.delete(host_id, top / "i" / host_id)
    assert not [p for p in psutil.process_iter(["cmdline"])
                if str(top) in " ".join(p.info["cmdline"] or [])], "QEMU left running"
    shutil.rmtree(top)   # disk images, initramfs cache, records: nothing stays in /tmp


def test_default_machine_is_microvm_and_pc_when_emulated_devices_are_asked(env: Env) -> None:
    """microvm reaches a first exec on TCG in about half the time of pc; --io emulated
    alone (an IDE disk and e1000, which microvm lacks) gets pc instead of an error."""
    plain, emulated = env.spec(), env.spec(io="emulated")
    for spec in (plain, emulated):
        env.driver.create(spec)
    assert env.driver._vmspec(plain.host_id).machine == Machine.MICROVM
    vm = env.driver._vmspec(emulated.host_id)
    assert (vm.machine, vm.kernel.name) == (Machine.PC, "vmlinux")   # PVH, as microvm
    # a pc guest booted from vmlinuz by an older cumulod moves here on the same loader
    # (another option ROM would not match the migration stream)
    mine = env.driver.signature(emulated.host_id)
    assert "/kernel+pvh/" in mine
    older = mine.replace("/kernel+pvh/", "/kernel/")
    env.driver.match_source(emulated.host_id, older)
    assert env.driver._vmspec(emulated.host_id).kernel.name == "vmlinuz"
    assert env.driver.signature(emulated.host_id) == older
    env.driver.match_source(emulated.host_id, mine)
    assert env.driver.signature(emulated.host_id) == mine
    assert "/kernel/" in env.driver.signature(plain.host_id)   # microvm's, as before
    for spec in (plain, emulated):
        env.driver.delete(spec.host_id, spec.instance_dir)


@pytest.mark.parametrize(("machine", "io", "disk", "nic", "virtio"), [
    # disk, NIC, RNG, balloon; and on both families the exec agent's virtio-serial
    ("", "paravirt", "vda", "virtio_net", "5"),   # the default: microvm, on virtio-mmio
    ("pc", "paravirt", "vda", "virtio_net", "5"),
    ("pc", "emulated", "sda", "e1000", "1"),
])
def test_guest_boots_sees_its_device_family_and_returns_the_exit_code(
        env: Env, machine: str, io: str, disk: str, nic: str, virtio: str) -> None:
    image = env.top / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "8M"], check=True)
    spec = env.spec(["sh", "-c", SHOW_DEVICES], io=io, disk=str(image), nic="on",
                    **({"machine": machine} if machine else {}))
    env.driver.create(spec)
    vm = env.driver._vmspec(spec.host_id)
    assert vm.machine == Machine(machine or "microvm")
    if vm.machine == Machine.MICROVM and (vm.kernel.parent / "vmlinux").is_file():
        assert vm.kernel.name == "vmlinux"    # PVH: no firmware, no decompression
    assert env.driver.notice(spec.host_id) and "TCG" in env.driver.notice(spec.host_id)
    started = time.monotonic()
    state = env.driver.start(spec)
    assert state.status == RunStatus.RUNNING and state.pid
    env.console_until(spec.host_id, b"CUMULO-READY")
    print(f"{machine}/{io}: CUMULO-READY after {time.monotonic() - started:.2f}s (TCG)")
    out = env.console_until(spec.host_id, b"CUMULO-EXIT").decode(errors="replace")
    assert re.search(rf"^{disk}\r?$", out, re.M), out
    assert f"virtio={virtio}" in out and f"nic={nic}" in out
    assert f"host={spec.hostname}" in out
    assert procs.wait_dead(state.pid, 30.0)
    final = env.driver.state(spec.host_id)
    assert final.status == RunStatus.STOPPED and final.exit_code == 7


def test_pause_resume_restart_of_the_daemon_and_graceful_stop(env: Env) -> None:
    spec = env.spec(machine="pc")          # no command: /init idles until powered down
    env.driver.create(spec)
    pid = env.driver.start(spec).pid
    assert pid is not None
    env.console_until(spec.host_id, b"CUMULO-READY")
    usage = env.driver.usage(spec.host_id)
    assert usage.memory_bytes and usage.memory_bytes > 10 * MIB and usage.pids and usage.pids > 1
    print(f"idle pc VM (TCG, 128M): QEMU RSS {usage.memory_bytes / MIB:.0f} MiB,"
          f" {usage.pids} threads")
    env.driver.pause(spec.host_id)
    assert env.driver.state(spec.host_id).status == RunStatus.PAUSED
    cpu = env.driver.usage(spec.host_id).cpu_time_ns or 0
    time.sleep(0.5)
    assert (env.driver.usage(spec.host_id).cpu_time_ns or 0) - cpu < 0.2e9  # vCPU stopped
    # a new driver object (as after a daemon restart) finds the VM through its files
    again = VmDriver(env.ctx)
    assert again.state(spec.host_id).status == RunStatus.PAUSED
    assert again.state(spec.host_id).pid == pid
    again.resume(spec.host_id)
    assert again.state(spec.host_id).status == RunStatus.RUNNING
    with pytest.raises(UnsupportedError, match="stop it first"):
        again.update_limits(spec.host_id, Limits(memory=256 * MIB))
    started = time.monotonic()
    state = again.stop(spec.host_id, timeout=30, force=False)
    assert state.status == RunStatus.STOPPED and not procs.alive(pid)
    # the power button reached /init: it stopped the idle loop and reported it
    assert state.exit_code == 143, env.driver.read_console(spec.host_id, 0)[0][-500:]
    assert time.monotonic() - started < 30
    again.update_limits(spec.host_id, Limits(memory=256 * MIB, cpu=2))


def test_forced_stop_and_delete_leave_nothing(env: Env) -> None:
    spec = env.spec(["sh", "-c", "trap '' TERM; while :; do sleep 1; done"], machine="pc")
    env.driver.create(spec)
    pid = env.driver.start(spec).pid
    assert pid is not None
    env.console_until(spec.host_id, b"CUMULO-READY")
    started = time.monotonic()
    state = env.driver.stop(spec.host_id, timeout=30, force=True)
    assert state.status == RunStatus.STOPPED and state.exit_code is None
    assert time.monotonic() - started < 5 and not procs.alive(pid)
    assert env.driver.start(replace(spec)).status == RunStatus.RUNNING
    env.driver.delete(spec.host_id, spec.instance_dir)
    assert env.driver.state(spec.host_id).status == RunStatus.MISSING
    assert not spec.instance_dir.exists()
    assert not (env.ctx.runtime_dir / "vm" / spec.host_id).exists()
    assert env.driver.list_host_ids() == []


def test_a_vm_with_the_longest_name_runs_and_a_too_long_runtime_dir_is_refused(
        env: Env) -> None:
    """Project and instance names of 63 characters each: QEMU's sockets still bind."""
    long_id = f"{'p' * 63}_{'v' * 59}{uuid.uuid4().hex[:4]}"
    spec = env.spec(machine="pc", host_id=long_id)
    env.driver.create(spec)
    state = env.driver.start(spec)
    assert state.status == RunStatus.RUNNING and state.pid is not None
    sockets = list((env.ctx.runtime_dir / "vm").rglob("*.sock"))
    assert sockets and all(len(str(p)) <= 107 for p in sockets), sockets
    env.driver.delete(spec.host_id, spec.instance_dir)
    assert not procs.alive(state.pid) and list((env.ctx.runtime_dir / "vm").iterdir()) == []

    deep = replace(env.ctx, runtime_dir=env.top / ("r" * 90))
    driver = VmDriver(deep)
    spec = env.spec(machine="pc")
    with pytest.raises(UnsupportedError, match="shorter --runtime-dir"):
        driver.create(spec)
    assert driver.list_host_ids() == [] and not spec.instance_dir.exists()


def test_kvm_where_unusable_is_refused_at_create(env: Env) -> None:
    real = probe()
    if real.kvm_usable:
        pytest.skip("this host has usable KVM: --accel kvm is allowed")
    driver = VmDriver(replace(env.ctx, host=real))
    spec = replace(env.spec(), options={"accel": "kvm"})
    started = time.monotonic()
    with pytest.raises(UnsupportedError, match="PVM" if real.kvm == "pvm" else "kvm"):
        driver.create(spec)
    assert time.monotonic() - started < 1
    assert env.driver.list_host_ids() == [] and not spec.instance_dir.exists()



def firmware_vm(env: Env, name: str) -> VmSpec:
    """A KVM pc with no kernel: SeaBIOS runs and finds nothing to boot."""
    run_dir = env.ctx.runtime_dir / name
    return VmSpec(name=name, memory=64 * MIB, vcpus=1, accel=Accel.KVM, machine=Machine.PC,
                  io=Io.PARAVIRT, kernel=env.top / "none", initrd=env.top / "none", append="",
                  serial_log=env.top / f"{name}.log", qmp_socket=run_dir / "qmp.sock",
                  pidfile=run_dir / "qemu.pid", firmware_only=True)


def test_kvm_starts_the_firmware_where_dev_kvm_works(env: Env) -> None:
    """The KVM code path on a host whose KVM runs firmware but no stock kernel (PVM here,
    HOST-NOTES.md): the command line built for KVM, QEMU launched by the driver, which
    checks over QMP that KVM is really enabled; then quit, nothing left. Hosts with
    hardware KVM also boot every other test of this module on it (accel auto)."""
    real = probe()
    if not (real.kvm_usable or real.kvm == "pvm"):
        pytest.skip("no /dev/kvm on this host")
    vm = firmware_vm(env, "kvmfw")
    argv = build_argv(vm, env.driver.qemu)
    assert "-kernel" not in argv and argv[argv.index("-accel") + 1] == "kvm"
    run = env.driver._launch(vm, argv)
    try:
        assert qmp.query_kvm(vm.qmp_socket) == (True, True)
        assert qmp.execute(vm.qmp_socket, "query-status")["status"] == "running"
    finally:
        env.driver._kill(vm)
    assert run.pid is not None and not procs.alive(run.pid)


def test_a_kvm_guest_qemu_started_without_kvm_is_killed(env: Env) -> None:
    """If QEMU ever runs a guest asked on KVM without it (a silent fallback), the driver
    kills it and says so, instead of running it emulated."""
    vm = firmware_vm(env, "nokvm")
    argv = build_argv(vm, env.driver.qemu)
    argv[argv.index("-accel") + 1] = "tcg"       # what the fallback would look like
    with pytest.raises(DriverError, match="without KVM enabled"):
        env.driver._launch(vm, argv)
    assert env.driver._pid(vm) is None
