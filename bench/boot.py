"""Time to a usable instance (first successful exec) for each kind of instance, side by
side in one run, with its footprint: an application container (busybox), a system
container (systemd as PID 1), a direct-kernel VM (Cumulo's kernel + initramfs), VMs
booting Debian from their own disk through SeaBIOS and through UEFI (OVMF), and an app VM
(one static program as PID 1 on the kernel built for app VMs), on TCG.

Each round launches every kind once, in turn (drift hits all alike), and records the
seconds from the launch request to the first ``true`` that exits 0 (for the app VM, which
has no exec, to its program's first line on the console), the host memory the
instance's cgroup uses then, and the image's size (the app VM's: its program).

    .venv/bin/python -m bench.boot --system-tree debian-systemd.tar \\
        --vm-disk /var/cache/cumulo/test-images/debian-12-vm-*.qcow2 [--repeat 3]

The system tree is a tarball of a root filesystem with systemd (image build debian/12
--packages systemd-sysv, exported); the disk one made by image build debian/12 --vm.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.daemon import bench_daemon
from cumulo.client import Client

KINDS: dict[str, dict[str, Any]] = {
    "app-container": {"image": "busybox", "type": "container", "options": {}},
    "system-container": {"image": "sys", "type": "container", "options": {}},
    "direct-kernel-vm": {"image": "busybox", "type": "vm", "options": {"accel": "tcg"}},
    "bios-vm": {"image": "disk", "type": "vm", "options": {"firmware": "bios"}},
    "uefi-vm": {"image": "disk", "type": "vm", "options": {"firmware": "uefi"}},
    "app-vm": {"image": "app", "type": "appvm", "options": {}},
}
APP = Path("/bin/busybox")      # busybox-static, as bench/appvm_kernel.py
APP_READY = b"app-ready"


def first_line(c: Client, name: str, timeout: float) -> None:
    """Until the app VM's program has printed its marker on the console."""
    deadline = time.monotonic() + timeout
    while APP_READY not in c.console(name)[0]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no output from {name} within {timeout:.0f}s")
        time.sleep(0.05)


def first_exec(c: Client, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if c.exec(name, ["true"], timeout=60)["exit_code"] == 0:
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise RuntimeError(f"no exec in {name} within {timeout:.0f}s")
        time.sleep(0.5)


def one(c: Client, kind: str, name: str, timeout: float) -> dict[str, float]:
    spec = KINDS[kind]
    limits = {"memory": "512MiB"} if spec["type"] == "vm" else {}
    app = spec["type"] == "appvm"
    command = ["busybox", "sh", "-c", f"echo {APP_READY.decode()}; sleep 600"] if app else None
    t0 = time.monotonic()
    c.create(name, spec["image"], type=spec["type"], start=True, limits=limits,
             options=spec["options"], command=command)
    (first_line if app else first_exec)(c, name, timeout)
    took = time.monotonic() - t0
    usage = c.instance(name).get("usage") or {}
    return {"seconds": took, "memory": float(usage.get("memory_bytes") or 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system-tree", required=True)
    ap.add_argument("--vm-disk", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
    sizes: dict[str, int] = {}
    with bench_daemon() as (c, _state, _parent):
        c.build_image("busybox")
        c.build_image("kernel", profile="app")      # a cache hit after the first time
        app = c.import_app("busybox", APP.read_bytes())["fingerprint"]
        c.set_alias("app", app)
        for path, alias in ((args.system_tree, "sys"), (args.vm_disk, "disk")):
            c.wait(c.import_image(path, Path(path).name, alias), timeout=1800)
        for alias in ("busybox", "sys", "disk", "app"):
            sizes[alias] = int(c.image(alias)["size"])
        for i in range(args.repeat):
            for kind in KINDS:
                name = f"{kind}-{i}"
                try:
                    samples[kind].append(one(c, kind, name, args.timeout))
                finally:
                    c.delete(name, force=True)
    base = statistics.median(s["seconds"] for s in samples["app-container"])
    print(f"time to first exec, median of {args.repeat} (TCG for VMs):")
    print(f"  {'kind':18} {'seconds':>8} {'x app':>7} {'memory MiB':>11} {'image MiB':>10}")
    for kind, xs in samples.items():
        sec = statistics.median(s["seconds"] for s in xs)
        mem = statistics.median(s["memory"] for s in xs) / 2**20
        size = sizes[KINDS[kind]["image"]] / 2**20
        print(f"  {kind:18} {sec:8.2f} {sec / base:7.1f} {mem:11.1f} {size:10.1f}")
    out = Path("bench/results/boot.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"samples": samples, "sizes": sizes}, indent=1))


if __name__ == "__main__":
    main()
