"""What networking costs an app VM: the kernel built ``--with net`` against the ``app``
one, and an app VM with a NIC (its address by the kernel's DHCP) against one without.

All boot the same app (busybox-static, the marker line first) on QEMU's microvm with the
app VM driver's own command line (`qemu_cmd.build_argv`), alternating in one run:

- ``app (ACPI)``: the app kernel as app VMs booted it before they had networks (microvm's
  ACPI on, SeaBIOS; its virtio devices unseen by a kernel without ACPI)
- ``app``: the app kernel as they boot it now (ACPI off, qboot, the virtio-mmio devices
  on the kernel command line)
- ``app-net``: the kernel built ``--with net``, no NIC
- ``app-net + NIC``: that kernel with a NIC on a tap and ``ip=dhcp``: the first line
  comes after the kernel took its address from dnsmasq (a network's DHCP server, as
  Cumulo runs it, here on the tap in a namespace of the bench's own)

It prints the vmlinux sizes (as app VMs boot them, without the alignment padding), the
median time from QEMU's start to the program's first line and QEMU's CPU time to it, as
ratios to ``app``.

    flock /tmp/cumulo-heavy.lock .venv/bin/python -m bench.appvm_net [--runs 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.appvm_kernel import BUSYBOX, boot_once
from bench.daemon import bench_daemon
from cumulo.drivers.vm import initramfs
from cumulo.images import kernel_elf

MIB = 1024 * 1024
SUBNET = "10.199.7"          # inside the bench's own namespace only
MAC = "52:54:00:c0:ff:01"


@contextmanager
def tap_with_dhcp(work: Path) -> Iterator[tuple[str, str]]:
    """A namespace with a tap (the gateway's address on it) and dnsmasq answering DHCP on
    it with one fixed address for ``MAC``: (netns path, tap name). Removed afterwards."""
    ns = f"cu-bench-an{uuid.uuid4().hex[:6]}"
    path, tap = f"/run/netns/{ns}", "cu-btap0"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    dnsmasq = None
    try:
        for cmd in (["tuntap", "add", "dev", tap, "mode", "tap"],
                    ["addr", "add", f"{SUBNET}.1/24", "dev", tap],
                    ["link", "set", tap, "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True, timeout=30)
        dnsmasq = subprocess.Popen(
            ["nsenter", f"--net={path}", "dnsmasq", "--keep-in-foreground",
             "--conf-file=/dev/null", f"--interface={tap}", "--bind-interfaces", "--port=0",
             f"--dhcp-range={SUBNET}.0,static,255.255.255.0,1h",
             f"--dhcp-host={MAC},{SUBNET}.10", f"--dhcp-leasefile={work / 'leases'}",
             f"--pid-file={work / 'dnsmasq.pid'}", "--dhcp-authoritative"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield path, tap
    finally:
        if dnsmasq is not None:
            dnsmasq.terminate()
            dnsmasq.wait(30)
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="boots of each")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cumulo-bench-") as tmp, \
            bench_daemon() as (c, state, _parent):
        work = Path(tmp)
        kernels = {}
        for alias, features in (("app", None), ("app-net", ["net"])):
            c.build_image("kernel", alias=alias, profile="app", features=features)
            kernels[alias] = work / f"{alias}.vmlinux"     # as app VMs boot it
            shutil.copyfile(state / "images" / c.image(alias)["fingerprint"] / "boot"
                            / "vmlinux", kernels[alias])
        initrd = work / "app.cpio"
        initrd.write_bytes(initramfs.build_app(BUSYBOX.read_bytes(), "busybox"))
        with tap_with_dhcp(work) as (netns, tap):
            net = {"taps": ((tap, MAC),), "extra": ("ip=dhcp",),
                   "wrap": ("nsenter", f"--net={netns}")}
            runs: dict[str, tuple[Path, bool, dict[str, Any]]] = {
                "app (ACPI)": (kernels["app"], False, {}),
                "app": (kernels["app"], True, {}),
                "app-net": (kernels["app-net"], True, {}),
                "app-net + NIC": (kernels["app-net"], True, net),
            }
            times: dict[str, list[float]] = {n: [] for n in runs}
            cpus: dict[str, list[float]] = {n: [] for n in runs}
            for _ in range(args.runs):             # alternate: all see the same machine
                for n, (kernel, mmio, kw) in runs.items():
                    secs, cpu_s, _pss, _console = boot_once(kernel, initrd, work,
                                                            mmio_cmdline=mmio, **kw)
                    times[n].append(secs)
                    cpus[n].append(cpu_s)
        size = {a: (p.stat().st_size, kernel_elf.loaded_bytes(p)[0])
                for a, p in kernels.items()}
    med = {n: statistics.median(t) for n, t in times.items()}
    cpu = {n: statistics.median(t) for n, t in cpus.items()}
    print(f"{'app VM':16} {'first line':>11} {'x app':>6} {'QEMU CPU':>9} {'x app':>6}  boots")
    for n in runs:
        print(f"{n:16} {med[n]:10.2f}s {med[n] / med['app']:5.2f}x {cpu[n]:8.2f}s"
              f" {cpu[n] / cpu['app']:5.2f}x  {', '.join(f'{t:.2f}' for t in times[n])}")
    a, n = size["app"], size["app-net"]
    print(f"vmlinux as app VMs boot it: app {a[0] / MIB:.2f} MiB, app-net {n[0] / MIB:.2f}"
          f" MiB ({n[0] / a[0]:.2f}x); loaded into guest RAM {a[1] / MIB:.2f} and"
          f" {n[1] / MIB:.2f} MiB ({n[1] / a[1]:.2f}x)")


if __name__ == "__main__":
    main()
