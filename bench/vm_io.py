"""Paravirtual (virtio) against emulated (IDE, e1000) I/O inside a TCG guest, side by side.

Two pc VMs boot one after the other, identical but for ``--io``. In each guest:
- disk: busybox ``dd`` with ``O_DIRECT`` writes then reads a raw scratch disk
  (virtio-blk ``/dev/vda`` or IDE ``/dev/sda``); the file lives in the host's page
  cache (QEMU's default writeback), so this measures the device model, not a disk;
  the host's own ``dd`` on the same kind of file is the raw-tool reference;
- network: busybox ``dd | nc`` streams zeros over virtio-net or e1000 through the
  VM's tap to a receiver in a network namespace made by the benchmark (the tap is
  moved into it; 10.250.0.1 there, 10.250.0.2 in the guest; no other address is
  used), which times the bytes from first to last.
Figures are TCG (full emulation): KVM would change them by orders of magnitude.

    .venv/bin/python -m bench.vm_io [--disk-mib 64] [--net-mib 64]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cumulo.api.exec_ws import run_collect
from cumulo.domain.limits import Limits
from cumulo.drivers.base import ExecRequest, InstanceSpec
from cumulo.drivers.registry import DriverContext
from cumulo.drivers.vm.driver import VmDriver
from cumulo.drivers.vm.qemu_cmd import MIB
from cumulo.host.probe import probe

HOST_IP, GUEST_IP, PORT = "10.250.0.1", "10.250.0.2", 5001
DD_RE = re.compile(r"(\d+) bytes .*copied, ([\d.]+) s(?:econds)?,")   # GNU dd (host)
UPTIME_RE = re.compile(r"@T ([\d.]+) [\d.]+ ([\d.]+)")
RECEIVER = """
import socket, sys, time
n = int(sys.argv[1])
s = socket.create_server((sys.argv[2], int(sys.argv[3])))
s.settimeout(120)
print("listening", flush=True)
c, _ = s.accept()
c.settimeout(120)
got, first = 0, None
while got < n:
    b = c.recv(1 << 20)
    if not b:
        break
    first = first or time.perf_counter()
    got += len(b)
print(got, time.perf_counter() - (first or time.perf_counter()), flush=True)
"""


def sh(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True,
                          timeout=120).stdout


def guest(driver: VmDriver, host_id: str, script: str, timeout: float = 600) -> str:
    code, out, err = run_collect(driver.exec(host_id, ExecRequest(["sh", "-c", script])),
                                 b"", timeout)
    if code != 0:
        raise RuntimeError(f"guest command failed ({code}): {script}\n{err.decode()}")
    return out.decode() + err.decode()


def dd_rate(text: str) -> float:
    """MB/s from GNU dd's summary line (the host's)."""
    m = DD_RE.search(text)
    if m is None:
        raise RuntimeError(f"no dd summary in {text!r}")
    return int(m.group(1)) / float(m.group(2)) / 1e6


def guest_dd(driver: VmDriver, host_id: str, args: str, mib: int) -> float:
    """MB/s of a ``dd`` in the guest, timed by the guest's /proc/uptime (10 ms steps):
    Debian's busybox dd prints no rate, and host-side timing would add the agent."""
    out = guest(driver, host_id, "a=$(cat /proc/uptime); dd bs=1M count=" + str(mib)
                + f" {args} 2>/dev/null; b=$(cat /proc/uptime); echo \"@T $a $b\"")
    m = UPTIME_RE.search(out)
    if m is None:
        raise RuntimeError(f"no timing from the guest in {out!r}")
    seconds = float(m.group(2)) - float(m.group(1))
    if seconds <= 0.05:
        raise RuntimeError(f"{mib} MiB took {seconds:.2f} s: too short to time, raise the size")
    return mib * MIB / seconds / 1e6


def wait_ready(driver: VmDriver, host_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while b"CUMULO-READY" not in driver.read_console(host_id, 0)[0]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host_id} did not boot")
        time.sleep(0.2)


def net_rate(driver: VmDriver, host_id: str, ns: str, mib: int) -> float:
    """MB/s of a guest-to-host TCP stream, timed by the receiver in ``ns``."""
    recv = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", RECEIVER,
                             str(mib * MIB), HOST_IP, str(PORT)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None
        recv.stdout.readline()      # listening
        guest(driver, host_id, f"dd if=/dev/zero bs=64k count={mib * 16} 2>/dev/null"
                               f" | nc {HOST_IP} {PORT}")
        got, seconds = recv.stdout.readline().split()
        recv.wait(30)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait(10)
    if int(got) < mib * MIB:
        raise RuntimeError(f"the receiver got {got} of {mib * MIB} bytes")
    return int(got) / float(seconds) / 1e6


def measure(driver: VmDriver, top: Path, io: str, ns: str, disk_mib: int, net_mib: int
            ) -> dict[str, float]:
    host_id = f"io-{io}"
    tap = f"cvio{uuid.uuid4().hex[:6]}"
    disk = top / f"{io}.raw"
    sh("qemu-img", "create", "-q", "-f", "raw", str(disk), f"{disk_mib + 16}M")
    spec = InstanceSpec(host_id=host_id, hostname=host_id, instance_dir=top / "i" / host_id,
                        rootfs=top, command=[], limits=Limits(memory=256 * MIB),
                        options={"accel": "tcg", "machine": "pc", "io": io, "disk": str(disk)},
                        nics=((tap, "52:54:00:be:4c:01"),))
    driver.create(spec)
    try:
        driver.start(spec)
        wait_ready(driver, host_id)
        # QEMU made the tap: move it into the benchmark's namespace, address both ends
        sh("ip", "link", "set", tap, "netns", ns)
        sh("ip", "-n", ns, "addr", "add", f"{HOST_IP}/24", "dev", tap)
        sh("ip", "-n", ns, "link", "set", tap, "up")
        guest(driver, host_id, "killall udhcpc 2>/dev/null; ip addr flush dev eth0;"
                               f" ip addr add {GUEST_IP}/24 dev eth0; ip link set eth0 up")
        dev = guest(driver, host_id, "ls /dev/vda /dev/sda 2>/dev/null | head -1").strip()
        w = guest_dd(driver, host_id, f"if=/dev/zero of={dev} oflag=direct", disk_mib)
        r = guest_dd(driver, host_id, f"if={dev} of=/dev/null iflag=direct", disk_mib)
        n = net_rate(driver, host_id, ns, net_mib)
        return {"disk_write": w, "disk_read": r, "net_tx": n}
    finally:
        driver.delete(host_id, spec.instance_dir)


def host_dd(top: Path, mib: int) -> dict[str, float]:
    """The raw tool: the host's dd, O_DIRECT, on a file like the guests' scratch disk."""
    f = top / "host.raw"
    w = dd_rate(subprocess.run(["dd", "if=/dev/zero", f"of={f}", "bs=1M", f"count={mib}",
                                "oflag=direct"], capture_output=True, text=True,
                               check=True).stderr)
    r = dd_rate(subprocess.run(["dd", f"if={f}", "of=/dev/null", "bs=1M", f"count={mib}",
                                "iflag=direct"], capture_output=True, text=True,
                               check=True).stderr)
    f.unlink()
    return {"disk_write": w, "disk_read": r}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--disk-mib", type=int, default=64)
    ap.add_argument("--net-mib", type=int, default=64)
    args = ap.parse_args()
    ns = f"cu-vmio-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    try:
        with tempfile.TemporaryDirectory(prefix="cvio") as tmp:
            top = Path(tmp)
            ctx = DriverContext(state_dir=top / "state", runtime_dir=top / "run",
                                cgroup_parent=f"cumulo-bench-{ns}", host=probe())
            driver = VmDriver(ctx)
            res = {io: measure(driver, top, io, ns, args.disk_mib, args.net_mib)
                   for io in ("paravirt", "emulated")}
            host = host_dd(top, args.disk_mib)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    pv, em = res["paravirt"], res["emulated"]
    print(f"TCG guest I/O, pc machine, {args.disk_mib} MiB disk, {args.net_mib} MiB stream"
          " (MB/s; ratio = virtio / emulated)")
    labels = {"disk_write": "disk write (dd O_DIRECT)", "disk_read": "disk read (dd O_DIRECT)",
              "net_tx": "net guest->host (dd | nc)"}
    for key, label in labels.items():
        ref = f"; host dd {host[key]:.0f}" if key in host else ""
        print(f"  {label:28} virtio {pv[key]:8.1f}   emulated {em[key]:8.1f}"
              f"   ratio {pv[key] / em[key]:5.2f}x{ref}")


if __name__ == "__main__":
    main()
