"""VM root disks on TCG, driver level: boot from the image's disk against the initramfs-only
guest, and what clones of one image cost on the host.

Boot: start to ``CUMULO-READY`` on the console (the root-disk guest prints it after
mounting its disk and switch_root), then to the first exec answered by the guest agent;
median of ``--repeat`` boots of each, side by side in one run. Disk: ``--clones`` VMs
created from one busybox image (template-based, the default), their root files summed
against the image's base disk, both as allocated bytes (du).

    flock /tmp/cumulo-heavy.lock .venv/bin/python -m bench.vm_root_disk [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from cumulo.api.exec_ws import run_collect
from cumulo.domain.limits import Limits
from cumulo.drivers.base import ExecRequest, InstanceSpec
from cumulo.drivers.registry import DriverContext
from cumulo.drivers.vm.driver import VmDriver
from cumulo.drivers.vm.qemu_cmd import MIB
from cumulo.host.probe import probe
from cumulo.images import vmdisk
from cumulo.storage.base import RootSpec
from cumulo.storage.dir import DirPool
from cumulo.storage.tools import disk_usage

READY = b"CUMULO-READY"
APPLETS = ("sh", "cat", "ls", "mount", "echo", "sleep")


def busybox_image(top: Path) -> Path:
    rootfs = top / "img" / ("e" * 64) / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    return rootfs


def boot(driver: VmDriver, spec: InstanceSpec) -> tuple[float, float]:
    driver.create(spec)
    log = spec.instance_dir / "console.log"
    t0 = time.perf_counter()
    driver.start(spec)
    while not (log.exists() and READY in log.read_bytes()):
        if time.perf_counter() - t0 > 180:
            raise TimeoutError(f"no {READY!r} from {spec.host_id}")
        time.sleep(0.01)
    ready = time.perf_counter() - t0
    code, _, _ = run_collect(driver.exec(spec.host_id, ExecRequest(["true"])), b"", timeout=120)
    assert code == 0
    first_exec = time.perf_counter() - t0
    driver.delete(spec.host_id, spec.instance_dir)
    return ready, first_exec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--clones", type=int, default=20)
    args = ap.parse_args()
    top = Path(tempfile.mkdtemp(prefix="bench-vmrd-"))
    driver = VmDriver(DriverContext(state_dir=top / "state", runtime_dir=top / "run",
                                    cgroup_parent="cumulo-bench", host=probe()))
    try:
        rootfs = busybox_image(top)
        pool = DirPool("bench", top / "pool")
        pool.ensure()

        def spec(name: str, disk: bool) -> InstanceSpec:
            return InstanceSpec(
                host_id=name, hostname=name, instance_dir=top / "i" / name, rootfs=rootfs,
                command=[], limits=Limits(memory=128 * MIB),
                options={"accel": "auto", "machine": "pc"},
                root=RootSpec(pool=pool.name, path=pool.path) if disk else None)

        results: dict[str, list[tuple[float, float]]] = {"initramfs": [], "root disk": []}
        for i in range(args.repeat):
            results["initramfs"].append(boot(driver, spec(f"ram{i}", False)))
            results["root disk"].append(boot(driver, spec(f"disk{i}", True)))
        print(f"TCG, pc, 128 MiB, median of {args.repeat}:")
        base_ready = statistics.median(r for r, _ in results["initramfs"])
        base_exec = statistics.median(e for _, e in results["initramfs"])
        for name, runs in results.items():
            ready = statistics.median(r for r, _ in runs)
            first = statistics.median(e for _, e in runs)
            print(f"  {name:10s} ready {ready:5.2f} s ({ready / base_ready:.2f}x)"
                  f"   first exec {first:5.2f} s ({first / base_exec:.2f}x)")

        t0 = time.perf_counter()
        for i in range(args.clones):
            driver.create(spec(f"clone{i}", True))
        made = time.perf_counter() - t0
        base = vmdisk.base_disk(rootfs)
        clones = sum(disk_usage(pool.roots / f"clone{i}") for i in range(args.clones))
        print(f"{args.clones} clones created in {made:.2f} s;"
              f" base disk {disk_usage(base) / MIB:.2f} MiB allocated"
              f" ({vmdisk.default_size(rootfs) // MIB} MiB virtual); the clones together"
              f" {clones / MIB:.2f} MiB ({clones / disk_usage(base):.1%} of the base)")
    finally:
        for hid in driver.list_host_ids():   # also after a failure: no QEMU stays
            driver.delete(hid, top / "i" / hid)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
