"""App VMs on a kernel built for them against Debian's generic kernel, side by side.

Lupine Linux's question on this machine: what does specialising Linux for one program
buy? Both kernels boot the same app (busybox-static) on QEMU's microvm with the exact
command line the app VM driver uses (`qemu_cmd.build_argv`), alternating, and the
figures are printed as specialised/generic ratios:

- kernel image size: the compressed image (bzImage; Debian's vmlinuz), the ELF that
  microvm boots through PVH (vmlinux) and the bytes of it QEMU loads into guest RAM; the
  specialised kernel's vmlinux as app VMs boot it (without its alignment padding) and as
  the build left it ("padded"), booted side by side
- QEMU's PSS at the program's first line (same 128 MiB guest for all)
- time from QEMU's start to the program's first output line (median of ``--runs``)
- guest memory the kernel takes: MemTotal - MemFree as the program starts
- QEMU's PSS and threads for a running app VM (through ``cumulo launch`` on a
  throwaway daemon) at each kernel's smallest memory (64 MiB specialised; Debian's
  kernel does not reach PID 1 in 64 MiB, so 128), and how many such app VMs this host's
  memory holds: ``--density`` more are started (bounded by ``--budget``), and
  MemAvailable before them is divided by what each one really took (`density`)

    flock /tmp/cumulo-heavy.lock .venv/bin/python -m bench.appvm_kernel [--runs 7]

The kernel is built through ``cumulo image build kernel`` (a cache hit after the first
time on a machine, which takes minutes).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.appvm_footprint import wait_running
from bench.daemon import bench_daemon
from cumulo.client import Client
from cumulo.drivers.vm import initramfs
from cumulo.drivers.vm.accel import Accel, host_tsc_khz
from cumulo.drivers.vm.appvm import app_append
from cumulo.drivers.vm.qemu_cmd import MIB, Io, Machine, VmSpec, build_argv
from cumulo.images import kernel_build, kernel_elf

BUSYBOX = Path("/bin/busybox")
# the marker the timer waits for first, then what the kernel left free (from /proc)
PROBE = ["sh", "-c", "echo app-first-line; /busybox mkdir -p /proc;"
         " /busybox mount -t proc proc /proc; /busybox grep -E '^Mem(Total|Free):' /proc/meminfo"]
MEMORY = 128 * MIB       # boots: the same guest RAM for both (Debian's kernel needs 128)


def boot_once(kernel: Path, initrd: Path, work: Path, timeout: float = 120, *,
              mmio_cmdline: bool = False, taps: tuple[tuple[str, str], ...] = (),
              extra: tuple[str, ...] = (), wrap: tuple[str, ...] = ()
              ) -> tuple[float, float, int, str]:
    """Seconds from QEMU's start to the app's marker line, the CPU seconds QEMU used by
    then (less sensitive to a busy host than the wall time), QEMU's PSS then, and the
    console text. ``mmio_cmdline`` as the app VM driver sets it for a built kernel,
    ``taps`` its NICs, ``extra`` kernel parameters, ``wrap`` before QEMU (nsenter)."""
    log = work / "console.log"
    log.unlink(missing_ok=True)
    spec = VmSpec(name="bench", memory=MEMORY, vcpus=1, accel=Accel.TCG,
                  machine=Machine.MICROVM, io=Io.PARAVIRT, kernel=kernel, initrd=initrd,
                  append=app_append("busybox", PROBE, host_tsc_khz(), extra), serial_log=log,
                  qmp_socket=work / "qmp.sock", pidfile=work / "qemu.pid",
                  mmio_cmdline=mmio_cmdline, taps=taps)
    argv = [*wrap, *(a for a in build_argv(spec) if a != "-daemonize")]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - start < timeout:
            if log.exists() and b"app-first-line" in log.read_bytes():
                took = time.monotonic() - start
                qemu = psutil.Process(proc.pid)
                cpu, pss = qemu.cpu_times(), qemu.memory_full_info().pss
                proc.wait(timeout)           # the app ends: the rest of its output
                return took, cpu.user + cpu.system, pss, log.read_text(errors="replace")
            if proc.poll() is not None and b"app-first-line" not in log.read_bytes():
                raise RuntimeError(f"QEMU ended before the app printed: {log.read_text()}")
            time.sleep(0.005)
        raise TimeoutError(f"no output from the app in {timeout}s")
    finally:
        proc.kill()
        proc.wait()


def kernel_used_kib(console: str) -> int:
    mem = {line.split(":")[0]: int(line.split()[1]) for line in console.splitlines()
           if line.startswith(("MemTotal:", "MemFree:"))}
    return mem["MemTotal"] - mem["MemFree"]


def footprint(c: Client, app: str, kernel: str, memory: str) -> dict[str, Any]:
    name = f"fp-{kernel[:8]}"
    c.create(name, app, type="appvm", limits={"memory": memory},
             command=["busybox", "sleep", "600"], start=True, options={"kernel": kernel})
    wait_running(c, name)
    time.sleep(10)                 # the guest settles
    d = c.instance(name).get("details") or {}
    return {"pss": d.get("qemu_pss_bytes", 0), "threads": d.get("qemu_threads", 0)}


def density(c: Client, app: str, kernel: str, memory: str, count: int,
            budget: int) -> dict[str, float]:
    """How many such app VMs this host's memory holds, from VMs really started: ``count``
    idle ones (beside the one ``footprint`` left running), each started only while the
    ones of this run stay under ``budget`` bytes of PSS and MemAvailable stays above
    twice the budget (a shared machine is never driven near its end). The cost of one
    more VM is the growth of the QEMUs' summed PSS (shared pages count once) and of
    MemAvailable's drop, per VM started; the VMs that would fit are MemAvailable at the
    start over the larger of the two."""
    def total_pss() -> int:
        return sum((c.instance(n).get("details") or {}).get("qemu_pss_bytes", 0)
                   for n in names)

    names = [f"fp-{kernel[:8]}"]
    before_avail, before_pss = mem_available(), total_pss()
    started = 0
    for i in range(count):
        if total_pss() + before_pss / len(names) > budget or mem_available() < 2 * budget:
            break
        name = f"dn-{kernel[:8]}-{i}"
        c.create(name, app, type="appvm", limits={"memory": memory},
                 command=["busybox", "sleep", "600"], start=True, options={"kernel": kernel})
        names.append(name)
        wait_running(c, name)
        started += 1
    time.sleep(10)                 # the guests settle
    grown_pss = (total_pss() - before_pss) / max(1, started)
    dropped = (before_avail - mem_available()) / max(1, started)
    cost = max(grown_pss, dropped, 1)
    return {"started": started, "pss_per_vm": grown_pss, "avail_per_vm": dropped,
            "fit": before_avail / cost}


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="boots of each kernel")
    ap.add_argument("--density", type=int, default=4,
                    help="app VMs of each kernel started to measure the cost of one more")
    ap.add_argument("--budget", type=int, default=1024,
                    help="MiB: the most the VMs of one kernel may take (PSS) in that count")
    args = ap.parse_args()
    generic = initramfs.find_kernel()
    with tempfile.TemporaryDirectory(prefix="cumulo-bench-") as tmp, \
            bench_daemon() as (c, state, _parent):
        c.build_image("kernel", profile="app")
        k = c.image("kernel/app")
        result = kernel_build.CACHE / k["properties"]["config_key"] / "result"
        app = c.import_app("busybox", BUSYBOX.read_bytes())["fingerprint"]
        fp = {"specialised": footprint(c, app, k["fingerprint"], "64MiB"),
              "generic": footprint(c, app, "generic", "128MiB")}
        dens = {"specialised": density(c, app, k["fingerprint"], "64MiB", args.density,
                                       args.budget * MIB)}
        for name in [i["name"] for i in c.instances() if i["name"].startswith("dn-")]:
            c.delete(name, force=True)      # not in the generic kernel's count
        dens["generic"] = density(c, app, "generic", "128MiB", args.density,
                                  args.budget * MIB)
        # what app VMs boot: the image's vmlinux (kernel_elf.compact); beside it the
        # build's own, with its 2 MiB alignment padding
        booted = Path(tmp) / "vmlinux"
        shutil.copyfile(state / "images" / k["fingerprint"] / "boot" / "vmlinux", booted)
        kernels = {"specialised": booted, "padded": result / "vmlinux",
                   "generic": generic.boot}
        sizes = {"specialised": ((result / "bzImage").stat().st_size, booted.stat().st_size),
                 "padded": ((result / "bzImage").stat().st_size,
                            (result / "vmlinux").stat().st_size),
                 "generic": (generic.vmlinuz.stat().st_size,
                             kernels["generic"].stat().st_size)}
        times: dict[str, list[float]] = {n: [] for n in kernels}
        cpus: dict[str, list[float]] = {n: [] for n in kernels}
        psss: dict[str, list[int]] = {n: [] for n in kernels}
        used: dict[str, int] = {}
        initrd = Path(tmp) / "app.cpio"
        initrd.write_bytes(initramfs.build_app(BUSYBOX.read_bytes(), "busybox"))
        for _ in range(args.runs):          # alternate: all see the same machine
            for n, path in kernels.items():
                secs, cpu, pss, console = boot_once(path, initrd, Path(tmp),
                                                    mmio_cmdline=n != "generic")
                times[n].append(secs)
                cpus[n].append(cpu)
                psss[n].append(pss)
                used[n] = kernel_used_kib(console)
        loaded = {n: kernel_elf.loaded_bytes(p)[0] for n, p in kernels.items()}
    print(f"{'kernel':12} {'bzImage':>9} {'vmlinux':>9} {'loaded':>9} {'first line':>11}"
          f" {'guest used':>11} {'PSS 128M':>9} {'QEMU PSS':>9} {'threads':>8} {'VMs fit':>10}")
    med = {n: statistics.median(t) for n, t in times.items()}
    cpu_med = {n: statistics.median(t) for n, t in cpus.items()}
    pss_med = {n: statistics.median(t) for n, t in psss.items()}
    for n in kernels:
        f = fp.get(n, {"pss": 0, "threads": 0})
        print(f"{n:12} {sizes[n][0] / MIB:7.2f}Mi {sizes[n][1] / MIB:7.2f}Mi"
              f" {loaded[n] / MIB:7.2f}Mi {med[n]:10.2f}s {used[n] / 1024:9.1f}Mi"
              f" {pss_med[n] / MIB:7.1f}Mi {f['pss'] / MIB:7.1f}Mi {f['threads']:8d}"
              f" {dens[n]['fit'] if n in dens else 0:10.0f}")
    for n, dn in dens.items():
        print(f"{n}: {dn['started']:.0f} more app VMs started: + {dn['pss_per_vm'] / MIB:.1f}"
              f" MiB of QEMU PSS and - {dn['avail_per_vm'] / MIB:.1f} MiB of MemAvailable"
              f" each; VMs fit = MemAvailable before them / the larger")
    print(f"vmlinux without its padding (specialised/padded): file"
          f" {sizes['specialised'][1] / sizes['padded'][1]:.2f}x, loaded"
          f" {loaded['specialised'] / loaded['padded']:.2f}x, QEMU PSS at the first line"
          f" (128 MiB guest) {pss_med['specialised'] / pss_med['padded']:.2f}x, first line"
          f" {med['specialised'] / med['padded']:.2f}x, CPU time to it"
          f" {cpu_med['specialised'] / cpu_med['padded']:.2f}x")
    s, g = "specialised", "generic"
    print(f"specialised/generic: first line {med[s] / med[g]:.2f}x (goal <= 0.25x),"
          f" QEMU CPU time to it {cpu_med[s] / cpu_med[g]:.2f}x"
          f" ({cpu_med[s]:.2f} vs {cpu_med[g]:.2f} s),"
          f" QEMU PSS {fp[s]['pss'] / max(1, fp[g]['pss']):.2f}x (goal <= 0.6x),"
          f" compressed image {sizes[s][0] / sizes[g][0]:.2f}x"
          f" ({sizes[s][0] / MIB:.2f} MiB; goal <= 3 MiB),"
          f" guest memory used {used[s] / used[g]:.2f}x;"
          f" boots: {', '.join(f'{t:.2f}' for t in times[s])} vs"
          f" {', '.join(f'{t:.2f}' for t in times[g])} s")


if __name__ == "__main__":
    main()
