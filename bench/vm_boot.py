"""VM boot on TCG, driver level: boot-to-``CUMULO-READY`` for microvm vs pc, the VM driver
against the identical QEMU command line run by hand, and an idle VM's QEMU footprint.

Not through ``cumulo launch`` yet (the daemon does not offer ``vm`` so far); each figure
is the median of ``--repeat`` boots, measured side by side in one run.

    .venv/bin/python -m bench.vm_boot [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psutil

from cumulo.domain.limits import Limits
from cumulo.drivers.base import InstanceSpec
from cumulo.drivers.registry import DriverContext
from cumulo.drivers.vm.driver import VmDriver
from cumulo.drivers.vm.qemu_cmd import MIB, VmSpec, build_argv
from cumulo.host.probe import probe

READY = b"CUMULO-READY"


def wait_marker(log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and READY in log.read_bytes():
            return
        time.sleep(0.01)
    raise TimeoutError(f"no marker in {log}")


def ours(driver: VmDriver, top: Path, machine: str, i: int) -> tuple[float, int, int, VmSpec]:
    host_id = f"b-{machine}-{i}"
    spec = InstanceSpec(host_id=host_id, hostname=host_id, instance_dir=top / "i" / host_id,
                        rootfs=top, command=[], limits=Limits(memory=128 * MIB),
                        options={"accel": "tcg", "machine": machine})
    driver.create(spec)
    vm = VmSpec.from_dict(json.loads((top / "state" / "vm" / f"{host_id}.json").read_text())["vm"])
    t0 = time.perf_counter()
    driver.start(spec)
    wait_marker(vm.serial_log)
    elapsed = time.perf_counter() - t0
    time.sleep(1.0)   # let the guest settle before measuring the idle footprint
    u = driver.usage(host_id)
    driver.delete(host_id, spec.instance_dir)
    return elapsed, u.memory_bytes or 0, u.pids or 0, vm


def raw(vm: VmSpec, top: Path) -> float:
    """The same command line, run by hand, in a fresh directory."""
    d = top / "raw"
    d.mkdir(exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    vm = replace(vm, serial_log=d / "log", qmp_socket=d / "qmp", pidfile=d / "pid")
    t0 = time.perf_counter()
    subprocess.run(build_argv(vm), check=True, capture_output=True)
    wait_marker(vm.serial_log)
    elapsed = time.perf_counter() - t0
    pid = int(vm.pidfile.read_text())
    with contextlib.suppress(psutil.NoSuchProcess):
        proc = psutil.Process(pid)
        proc.kill()
        proc.wait(10)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cvb") as tmp:
        top = Path(tmp)
        ctx = DriverContext(state_dir=top / "state", runtime_dir=top / "run",
                            cgroup_parent="cumulo-bench", host=probe())
        driver = VmDriver(ctx)
        for machine in ("microvm", "pc"):
            ours_t, raw_t, rss, threads = [], [], [], []
            for i in range(args.repeat):
                t, r, n, vm = ours(driver, top, machine, i)
                ours_t.append(t)
                rss.append(r)
                threads.append(n)
                raw_t.append(raw(vm, top))
            o, w = statistics.median(ours_t), statistics.median(raw_t)
            print(f"{machine:8} TCG boot-to-marker: driver {o:.2f}s, raw qemu {w:.2f}s,"
                  f" ratio {o / w:.2f}x; idle QEMU RSS {statistics.median(rss) / MIB:.0f} MiB,"
                  f" {statistics.median(threads):.0f} threads (128 MiB guest)")


if __name__ == "__main__":
    main()
