"""Live migration: `cumulo migrate` between two daemons against a raw QEMU migrate of the
same guest (the same qemu-system-x86_64 command line, driven over QMP by hand), in one run.

Two cumulod run in two network namespaces made for the run, joined by a veth
(10.78.0.1 and 10.78.0.2). For each guest size and workload the guest is launched on
the first and migrated to the second with `cumulo migrate --live`; then the raw pair is
started from the command line cumulod gave QEMU (paths changed), with a second QEMU
waiting on ``-incoming`` in the other namespace, and migrated with QMP ``migrate``
(auto-converge on, no bandwidth cap, as Cumulo sets it). QEMU reports total time and
downtime on both sides; the ratios compare them. With ``--postcopy`` each guest then
comes back to the first daemon with `cumulo migrate --postcopy` (post-copy after the first
pass), so pre-copy and post-copy of the same guest and workload sit side by side. On a
host without usable KVM the guests run on TCG, and so are these figures.

    .venv/bin/python -m bench.migration [--sizes 128,256,512] [--repeat 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from bench.daemon import bench_daemon
from cumulo.drivers.vm import qmp

WORKLOADS = {
    "idle": "while :; do sleep 1; done",
    # rewrites 16 MiB of guest RAM (tmpfs) with fresh random bytes over and over
    "dirty": "while :; do dd if=/dev/urandom of=/tmp/blob bs=1M count=16 2>/dev/null; done",
}


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=60)


def qemu_argv(pid: int) -> list[str]:
    return psutil.Process(pid).cmdline()


def root_backing(argv: list[str]) -> tuple[str, str] | None:
    """(root disk, its backing file) of a Cumulo QEMU command line, if it has a root disk."""
    for a in argv:
        if m := re.search(r"file\.filename=([^,]+/root\.qcow2)", a):
            info = json.loads(subprocess.run(
                ["qemu-img", "info", "-U", "--output=json", m.group(1)], check=True,
                capture_output=True, text=True, timeout=60).stdout)
            return m.group(1), str(info["full-backing-filename"])
    return None


def raw_pair(argv: list[str], ns_src: str, ns_dst: str, work: Path,
             root: tuple[str, str] | None) -> dict[str, Any]:
    """Run ``argv`` (paths moved to ``work``) as source and as -incoming destination, migrate.

    The instance's root disk is gone by now: both QEMUs get a fresh overlay of the same base
    disk in ``work``, shared by the pair (the raw run moves RAM only; Cumulo also mirrors
    the disk over NBD first, outside QEMU's RAM figures compared here)."""
    if root is not None:
        disk = work / "root.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", root[1],
                        str(disk)], check=True, capture_output=True, timeout=60)
        argv = [a.replace(root[0], str(disk)) for a in argv]

    def moved(role: str, incoming: str | None) -> tuple[list[str], Path]:
        out, sock = [], work / f"{role}.qmp"
        skip = False
        for i, a in enumerate(argv):
            if skip:
                skip = False
                continue
            if a in ("-qmp", "-pidfile", "-serial", "-name", "-chardev"):  # ours: own paths
                skip = True
                continue
            if a == "-device" and "virtserialport" in argv[i + 1]:
                skip = True
                continue
            out.append(a)
        out += ["-qmp", f"unix:{sock},server=on,wait=off", "-serial", "file:/dev/null",
                "-pidfile", str(work / f"{role}.pid")]
        if incoming:
            out[-2:-2] = ["-incoming", incoming]
        return out, sock

    src_argv, src = moved("src", None)
    dst_argv, dst = moved("dst", "tcp:10.78.0.2:4444")
    pids: list[int] = []
    try:
        for ns, cmd in ((ns_src, src_argv), (ns_dst, dst_argv)):
            r = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True,
                               text=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"raw QEMU failed: {r.stderr.strip()}")
        for role in ("src", "dst"):
            pids.append(int((work / f"{role}.pid").read_text()))
        deadline = time.monotonic() + 60
        while not (qmp.reachable(src) and qmp.reachable(dst)):
            assert time.monotonic() < deadline, "raw QEMU did not answer"
            time.sleep(0.1)
        time.sleep(8)  # the guest boots and starts its workload, as on the cumulo side
        qmp.migrate_set_capabilities(src, {"auto-converge": True})
        qmp.migrate_set_parameters(src, {"max-bandwidth": 100 << 30})
        qmp.migrate(src, "tcp:10.78.0.2:4444")
        while (st := qmp.query_migrate(src)).get("status") not in ("completed", "failed"):
            assert time.monotonic() < deadline + 600, st
            time.sleep(0.1)
        if st["status"] != "completed":
            raise RuntimeError(f"raw migration failed: {st}")
        return {"total_time_ms": st.get("total-time"), "downtime_ms": st.get("downtime")}
    finally:
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128,256,512", help="guest memory, MiB")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--postcopy", action="store_true",
                    help="also bring each guest back with --postcopy")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    tag = uuid.uuid4().hex[:6]
    ns = [f"cu-bench-ma{tag}", f"cu-bench-mb{tag}"]
    rows: list[dict[str, Any]] = []
    for n in ns:
        sh("ip", "netns", "add", n)
    try:
        sh("ip", "-n", ns[0], "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
           "netns", ns[1])
        for i, n in enumerate(ns, start=1):
            sh("ip", "-n", n, "addr", "add", f"10.78.0.{i}/24", "dev", "eth0")
            sh("ip", "-n", n, "link", "set", "eth0", "up")
            sh("ip", "-n", n, "link", "set", "lo", "up")
        with bench_daemon(["nsenter", f"--net=/run/netns/{ns[0]}"],
                          ["--listen", "10.78.0.1:8443"]) as (a, _s1, _p1), \
                bench_daemon(["nsenter", f"--net=/run/netns/{ns[1]}"],
                             ["--listen", "10.78.0.2:8443"]) as (b, _s2, _p2):
            for c in (a, b):
                c.build_image("busybox")
            token = b.issue_token("bench")["token"]
            a.add_remote("b", "https://10.78.0.2:8443", token)
            b.add_remote("a", "https://10.78.0.1:8443", a.issue_token("bench")["token"])
            for size in sizes:
                for workload, script in WORKLOADS.items():
                    for r in range(args.repeat):
                        name = f"m{size}{workload[0]}{r}"
                        a.create(name, "busybox", type="vm", start=True,
                                 limits={"memory": f"{size}MiB"},
                                 command=["sh", "-c", script], options={"machine": "pc"})
                        argv = qemu_argv(a.instance(name)["pid"])
                        root = root_backing(argv)
                        time.sleep(8)  # booted, workload running
                        op = a.migrate(name, "b")
                        ours = op["resources"]
                        post: dict[str, Any] = {}
                        if args.postcopy:
                            post = b.migrate(name, "a", postcopy=True)["resources"]
                            a.delete(name, force=True)
                        else:
                            b.delete(name, force=True)
                        with tempfile.TemporaryDirectory(prefix="cumulo-bench-raw-") as work:
                            raw = raw_pair(argv, ns[0], ns[1], Path(work), root)
                        rows.append({"size_mib": size, "workload": workload,
                                     "cumulo": {k: ours.get(k) for k in
                                                ("total_time_ms", "downtime_ms",
                                                 "transferred", "passes")},
                                     "raw": raw,
                                     "postcopy": {k: post.get(k) for k in
                                                  ("total_time_ms", "downtime_ms",
                                                   "transferred", "passes", "postcopy",
                                                   "postcopy_requests")} if post else None})
                        pc = ""
                        if post:
                            how = "post-copy" if post.get("postcopy") else "not switched"
                            pc = (f" | back ({how}) total {post.get('total_time_ms')} ms"
                                  f" downtime {post.get('downtime_ms')} ms")
                        print(f"{size:4d} MiB {workload:5s}: cumulo total"
                              f" {ours.get('total_time_ms')} ms downtime"
                              f" {ours.get('downtime_ms')} ms | raw total"
                              f" {raw['total_time_ms']} ms downtime {raw['downtime_ms']} ms"
                              f"{pc}", flush=True)
    finally:
        for n in ns:
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=30)
    print("\nmedian ratios cumulo/raw of QEMU's own total time and downtime (query-migrate);"
          " `cumulo migrate` also creates the instance there and deletes it here, around them:")
    for workload in WORKLOADS:
        for key in ("total_time_ms", "downtime_ms"):
            ratios = [r["cumulo"][key] / r["raw"][key] for r in rows
                      if r["workload"] == workload and r["raw"][key]]
            if ratios:
                print(f"  {workload:5s} {key:13s}: {statistics.median(ratios):.2f}x")
    if args.postcopy:
        for workload in WORKLOADS:
            for key in ("total_time_ms", "downtime_ms"):
                ratios = [r["postcopy"][key] / r["cumulo"][key] for r in rows
                          if r["workload"] == workload and r["postcopy"]
                          and r["postcopy"][key] and r["cumulo"][key]]
                if ratios:
                    print(f"  {workload:5s} {key:13s}: post-copy/pre-copy"
                          f" {statistics.median(ratios):.2f}x")
    out = Path("bench/results/migration.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    print(f"raw samples in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
