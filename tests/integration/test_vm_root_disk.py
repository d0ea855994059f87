"""VMs booting their own root disk from a storage pool, and volumes hot-plugged into them.

Real TCG guests (pc, 128 MiB): two clones of one busybox image, one with virtio-blk
(``--io paravirt``, ``--disk 256MiB``), one with IDE (``--io emulated``), one q35 for
hot-plug into PCIe root ports; four boots in all (the first VM is restarted once).
Everything lives in one temp dir the fixture deletes, after checking that no QEMU is left.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from cumulo.api.exec_ws import run_collect
from cumulo.domain.limits import Limits
from cumulo.drivers.base import ExecRequest, InstanceSpec, RunStatus
from cumulo.drivers.registry import DriverContext
from cumulo.drivers.vm import disks
from cumulo.drivers.vm.accel import Accel
from cumulo.drivers.vm.driver import VmDriver
from cumulo.drivers.vm.qemu_cmd import (
    HOTPLUG_PORTS,
    MIB,
    Io,
    Machine,
    VmSpec,
    build_argv,
    node_name,
)
from cumulo.errors import DriverError, UnsupportedError
from cumulo.images import vmdisk
from cumulo.storage.base import RootSpec
from cumulo.storage.dir import DirPool
from cumulo.storage.tools import disk_usage
from tests.helpers import build_busybox_rootfs
from tests.integration.test_vm_driver import HOST

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root]


@dataclass
class Env:
    top: Path
    driver: VmDriver
    pool: DirPool
    rootfs: Path

    def spec(self, name: str, io: str = "paravirt", size: int | None = None,
             rootfs: Path | None = None,
             volumes: tuple[tuple[str, Path, bool], ...] = ()) -> InstanceSpec:
        host_id = f"rd-{name}"
        return InstanceSpec(
            host_id=host_id, hostname=name, instance_dir=self.top / "i" / host_id,
            rootfs=rootfs or self.rootfs, command=[], limits=Limits(memory=128 * MIB),
            options={"accel": "auto", "machine": "pc", "io": io},
            root=RootSpec(pool=self.pool.name, path=self.pool.path, size=size), disks=volumes)

    def sh(self, spec: InstanceSpec, script: str) -> str:
        session = self.driver.exec(spec.host_id, ExecRequest(["sh", "-c", script]))
        code, out, err = run_collect(session, b"", timeout=90)
        assert code == 0, f"{script!r} exited {code}: {err.decode()}"
        return out.decode()

    def wait_sh(self, spec: InstanceSpec, script: str, want: list[str],
                timeout: float = 120) -> list[str]:
        """The sorted words ``script`` prints once they are ``want``, or the last ones
        after ``timeout`` seconds (the guest's devices settle at their own pace)."""
        deadline = time.monotonic() + timeout
        while True:
            session = self.driver.exec(spec.host_id, ExecRequest(["sh", "-c", script]))
            got = sorted(run_collect(session, b"", timeout=90)[1].decode().split())
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.5)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    top = Path(str(tmp_path_factory.mktemp("vmrd")))
    rootfs = build_busybox_rootfs(top / "img" / ("c" * 64))
    pool = DirPool("default", top / "pool")
    pool.ensure()
    driver = VmDriver(DriverContext(state_dir=top / "state", runtime_dir=top / "run",
                                    cgroup_parent=f"cumulo-test-{uuid.uuid4().hex[:8]}", host=HOST))
    try:
        yield Env(top, driver, pool, rootfs)
    finally:
        for hid in driver.list_host_ids():
            driver.delete(hid, top / "i" / hid)
        assert not [p for p in psutil.process_iter(["cmdline"])
                    if str(top) in " ".join(p.info["cmdline"] or [])], "QEMU left running"
        assert not list((top / "pool" / "roots").iterdir()), "root disks left behind"
        shutil.rmtree(top)


@pytest.fixture(scope="module")
def vm_a(env: Env) -> InstanceSpec:
    """virtio-blk, --disk 256MiB; booted once here."""
    spec = env.spec("a", size=256 * MIB)
    env.driver.create(spec)
    started = time.monotonic()
    env.driver.start(spec)
    env.sh(spec, "true")
    print(f"root-disk VM: start to first exec {time.monotonic() - started:.1f}s (TCG)")
    return spec


@pytest.fixture(scope="module")
def vm_b(env: Env, vm_a: InstanceSpec) -> InstanceSpec:
    """IDE, default size, a clone of the same image; booted once here."""
    spec = env.spec("b", io="emulated")
    env.driver.create(spec)
    env.driver.start(spec)
    return spec


def test_paravirt_root_is_virtio_blk_of_the_asked_size(env: Env, vm_a: InstanceSpec) -> None:
    out = env.sh(vm_a, "grep ' / ' /proc/mounts; cat /sys/block/vda/device/vendor;"
                       " cat /sys/block/vda/size; cat /etc/passwd")
    mount, vendor, sectors, passwd = out.split("\n", 3)
    assert mount.startswith("/dev/vda / ext4 rw")
    assert vendor == "0x1af4"                      # virtio's PCI vendor id
    assert int(sectors) * 512 == 256 * MIB
    assert passwd.startswith("root:x:0:0")         # the image's own files
    df = env.sh(vm_a, "df -k / | tail -n 1").split()
    assert 200 * 1024 < int(df[1]) <= 256 * 1024   # the ext4 fills the disk


def test_emulated_root_is_an_ata_disk(env: Env, vm_b: InstanceSpec) -> None:
    out = env.sh(vm_b, "grep ' / ' /proc/mounts; cat /sys/block/sda/device/vendor;"
                       " ls /sys/block")
    assert out.startswith("/dev/sda / ext4 rw")
    assert "ATA" in out.splitlines()[1]
    assert "vda" not in out.splitlines()[2:]
    assert int(env.sh(vm_b, "cat /sys/block/sda/size")) * 512 == vmdisk.DEFAULT_MIN


def test_clones_do_not_see_each_other_and_cost_little(env: Env, vm_a: InstanceSpec,
                                                      vm_b: InstanceSpec) -> None:
    env.sh(vm_a, "echo from-a > /mine; sync")
    env.sh(vm_b, "echo from-b > /mine; sync")
    assert env.sh(vm_a, "cat /mine") == "from-a\n"
    assert env.sh(vm_b, "cat /mine") == "from-b\n"
    a = env.pool.roots / vm_a.host_id / "root.qcow2"
    b = env.pool.roots / vm_b.host_id / "root.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(b)],
                                     capture_output=True, text=True, check=True).stdout)
    base = Path(info["backing-filename"])
    assert base.parent == env.rootfs.parent / "vm"   # a clone of the image's base disk
    for clone in (a, b):
        print(f"clone {clone.parent.name}: {disk_usage(clone.parent) // 1024} KiB on disk,"
              f" base {disk_usage(base) // 1024} KiB")
        assert disk_usage(clone.parent) < 4 * MIB


def test_hotplugged_volume_carries_data_both_ways(env: Env, vm_a: InstanceSpec) -> None:
    key = "p_data"
    env.pool.create_volume(key, 32 * MIB, owner=0)
    mnt = env.pool.mount_volume(key)
    (mnt / "from-host").write_text("hello vm\n")
    env.pool.unmount_volume(key)
    env.driver.attach_disk(vm_a.host_id, "vol-data", env.pool.volume_file(key), False)
    # the guest probes a hot-plugged disk a moment after QEMU added it
    assert env.wait_sh(vm_a, "ls /sys/block", ["vda", "vdb"]) == ["vda", "vdb"]
    out = env.sh(vm_a, "ls /sys/block; cat /sys/block/vdb/serial; echo; mkdir -p /mnt/v;"
                       " mount /dev/vdb /mnt/v && cat /mnt/v/from-host &&"
                       " echo hello host > /mnt/v/from-vm && umount /mnt/v")
    assert out.split() == ["vda", "vdb", "vol-data", "hello", "vm"]
    with pytest.raises(DriverError, match="already has a disk"):
        env.driver.attach_disk(vm_a.host_id, "vol-data", env.pool.volume_file(key), False)
    env.driver.detach_disk(vm_a.host_id, "vol-data")
    assert env.sh(vm_a, "ls /sys/block").split() == ["vda"]
    mnt = env.pool.mount_volume(key)
    assert (mnt / "from-vm").read_text() == "hello host\n"
    env.pool.unmount_volume(key)


def test_restart_keeps_files_and_cold_plugs_volumes(env: Env, vm_a: InstanceSpec) -> None:
    env.sh(vm_a, "echo kept > /kept; sync")
    assert env.driver.stop(vm_a.host_id, 30.0, False).status == RunStatus.STOPPED
    key = "p_cold"
    env.pool.create_volume(key, 16 * MIB, owner=0)
    spec = env.spec("a", size=256 * MIB,
                    volumes=(("vol-cold", env.pool.volume_file(key), False),))
    started = time.monotonic()
    env.driver.start(spec)
    assert env.sh(spec, "cat /kept") == "kept\n"
    print(f"root-disk VM restart to exec {time.monotonic() - started:.1f}s (TCG)")
    assert env.sh(spec, "cat /sys/block/vdb/serial") == "vol-cold"


def test_q35_hotplugs_into_its_root_ports(env: Env) -> None:
    spec = env.spec("q")
    spec = InstanceSpec(**{**spec.__dict__, "options": {**spec.options, "machine": "q35"}})
    env.driver.create(spec)
    env.driver.start(spec)
    key = "p_q35"
    env.pool.create_volume(key, 16 * MIB, owner=0)
    try:
        env.sh(spec, "true")   # booted: its PCIe hot-plug driver is listening
        for name in ("vol-1", "vol-2"):
            env.driver.attach_disk(spec.host_id, name, env.pool.volume_file(key), True)
        # each slot powers on after the guest's own delay (pciehp), one after the other
        serials = "for s in /sys/block/vd[b-z]/serial; do cat $s; echo; done"
        want = ["vol-1", "vol-2"]   # shared: one file twice
        assert env.wait_sh(spec, serials, want) == want
        env.driver.detach_disk(spec.host_id, "vol-1")
        env.driver.detach_disk(spec.host_id, "vol-2")
        assert env.sh(spec, "ls /sys/block").split() == ["vda"]
    finally:
        env.driver.delete(spec.host_id, spec.instance_dir)


def test_damaged_base_disk_is_refused_before_qemu(env: Env) -> None:
    other = build_busybox_rootfs(env.top / "img" / ("d" * 64))
    spec = env.spec("bad", rootfs=other)
    env.driver.create(spec)
    base = vmdisk.base_disk(other)
    base.chmod(0o644)
    with open(base, "r+b") as f:
        f.truncate(base.stat().st_size // 2)
    with pytest.raises(DriverError, match="image's base disk .* is damaged"):
        env.driver.start(spec)
    assert env.driver.state(spec.host_id).status == RunStatus.STOPPED
    assert not [p for p in psutil.process_iter(["cmdline"])
                if spec.host_id in " ".join(p.info["cmdline"] or [])]
    env.driver.delete(spec.host_id, spec.instance_dir)
    assert not (env.pool.roots / spec.host_id).exists()


def vmspec(tmp_path: Path, machine: Machine, io: Io, **kw: object) -> VmSpec:
    return VmSpec(name="x", memory=128 * MIB, vcpus=1, accel=Accel.TCG, machine=machine, io=io,
                  kernel=tmp_path / "k", initrd=tmp_path / "i", append="", serial_log=tmp_path
                  / "log", qmp_socket=tmp_path / "q", pidfile=tmp_path / "p", **kw)  # type: ignore[arg-type]


def after(argv: list[str], opt: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == opt]


def test_argv_per_machine_and_family(tmp_path: Path) -> None:
    root, vol = tmp_path / "r,1.qcow2", str(tmp_path / "v.ext4")
    spec = vmspec(tmp_path, Machine.PC, Io.EMULATED, root_disk=root,
                  volumes=(("vol-x", vol, True),))
    assert VmSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    argv = build_argv(spec)
    assert after(argv, "-blockdev") == [
        f"driver=qcow2,node-name=root0,file.driver=file,file.filename={tmp_path}/r,,1.qcow2",
        f"driver=raw,node-name=vol-x,file.driver=file,file.filename={vol},file.locking=off"]
    devices = after(argv, "-device")
    assert "ide-hd,drive=root0,id=root0,bus=ide.1" in devices
    assert "driver=virtio-blk-pci,id=vol-x,drive=vol-x,serial=vol-x,share-rw=on" in devices
    micro = after(build_argv(vmspec(tmp_path, Machine.MICROVM, Io.PARAVIRT, root_disk=root)),
                  "-device")
    assert "virtio-blk-device,drive=root0,id=root0" in micro
    q35 = after(build_argv(vmspec(tmp_path, Machine.Q35, Io.PARAVIRT,
                                  volumes=(("vol-x", vol, False),))), "-device")
    assert sum(d.startswith("pcie-root-port") for d in q35) == HOTPLUG_PORTS + 1
    assert "driver=virtio-blk-pci,id=vol-x,drive=vol-x,serial=vol-x,bus=hp0" in q35
    assert node_name("vol-" + "x" * 40).startswith("d")
    with pytest.raises(UnsupportedError, match="microvm has no hot-plug"):
        disks.attach(tmp_path / "qmp.sock", Machine.MICROVM, "vol-x", Path(vol), False)


def test_copy_is_a_standalone_disk(env: Env) -> None:
    spec = env.spec("copy")
    spec = InstanceSpec(**{**spec.__dict__, "root": RootSpec(
        pool=env.pool.name, path=env.pool.path, copy=True, size=64 * MIB)})
    env.driver.create(spec)
    disk = env.pool.roots / spec.host_id / "root.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)],
                                     capture_output=True, text=True, check=True).stdout)
    assert "backing-filename" not in info and info["virtual-size"] == 64 * MIB
    env.driver.delete(spec.host_id, spec.instance_dir)
    assert not (env.pool.roots / spec.host_id).exists()
