"""App-VM footprint against a full VM and a container running the same program.

The same program (busybox-static ``sleep 600``) as PID 1 of: an app VM (microvm, the
program is the whole initramfs), a full VM (pc, our busybox initramfs with the agent
and modules), and a container (busybox image). All three go through ``cumulo launch`` on
a throwaway daemon, and the figures come from ``cumulo info`` (QEMU's PSS, RSS and
threads for the VMs; the cgroup's memory for the container), measured side by side in
one run after the guests settle, and printed as ratios. TCG where KVM is unusable.

    flock /tmp/cumulo-heavy.lock .venv/bin/python -m bench.appvm_footprint [--settle 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.daemon import bench_daemon
from cumulo.client import Client

BUSYBOX = Path("/bin/busybox")
MIB = 1024 * 1024


def wait_running(c: Client, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while c.instance(name)["state"] != "running":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} is not running")
        time.sleep(0.2)


def launch_all(c: Client) -> dict[str, str]:
    """name -> what it is; every instance runs ``sleep 600`` in 128 MiB."""
    c.build_image("busybox")
    app = c.import_app("busybox", BUSYBOX.read_bytes())
    limits = {"memory": "128MiB"}
    c.create("app", app["fingerprint"], type="appvm", limits=limits,
             command=["busybox", "sleep", "600"], start=True)
    c.create("vm", "busybox", type="vm", limits=limits, command=["sleep", "600"], start=True,
             options={"machine": "pc"})
    c.create("ct", "busybox", limits=limits, command=["sleep", "600"], start=True)
    return {"app": "appvm (microvm, app as PID 1)", "vm": "full VM (pc, busybox initramfs)",
            "ct": "container (busybox image)"}


def row(c: Client, name: str) -> dict[str, Any]:
    inst = c.instance(name)
    d, u = inst.get("details") or {}, inst.get("usage") or {}
    if d:
        return {"image": d.get("initramfs_bytes", 0), "memory": d.get("qemu_pss_bytes", 0),
                "rss": d.get("qemu_rss_bytes", 0), "threads": d.get("qemu_threads", 0)}
    image = c.image(inst["image"])["size"]
    return {"image": image, "memory": u.get("memory_bytes") or 0,
            "rss": u.get("memory_bytes") or 0, "threads": u.get("pids") or 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settle", type=float, default=20.0, help="seconds before measuring")
    args = ap.parse_args()
    with bench_daemon() as (c, _state, _parent):
        names = launch_all(c)
        for n in names:
            wait_running(c, n)
        time.sleep(args.settle)
        rows = {n: row(c, n) for n in names}
    vm = rows["vm"]
    print(f"{'instance':34} {'boot image':>11} {'memory (PSS)':>13} {'RSS':>9} {'threads':>8}"
          f" {'mem/VM':>7}")
    for n, what in names.items():
        r = rows[n]
        print(f"{what:34} {r['image'] / MIB:9.2f}Mi {r['memory'] / MIB:11.1f}Mi"
              f" {r['rss'] / MIB:7.1f}Mi {r['threads']:8d} {r['memory'] / vm['memory']:7.3f}")
    print(f"appvm/full VM: memory {rows['app']['memory'] / vm['memory']:.2f}x,"
          f" boot image {rows['app']['image'] / vm['image']:.2f}x;"
          f" full VM/container memory {vm['memory'] / max(1, rows['ct']['memory']):.0f}x")


if __name__ == "__main__":
    main()
