"""What metrics cost: one scrape of GET /1.0/metrics at 1, 50 and 200 instances, and the
daemon's CPU for keeping each instance's usage history.

Each step runs side by side in one run against its no-metrics baseline:
  - scrape: GET /1.0/metrics against GET /1.0/instances (the same instances listed,
    no usage read) and against reading the same cgroup and NIC files directly
    (the floor: what any exporter must read);
  - history: the daemon's own CPU time over a window, restarted on the same
    instances with ``--history-interval`` 0 (none), 10 (the default) and 1.
Containers are busybox (`sleep`) with one NIC each, in a throwaway netns; privileged,
because a host's default kernel.keys.maxkeys (200 per uid) stops unprivileged ones
near 200.

    .venv/bin/python -m bench.metrics [--counts 1,50,200] [--window 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from bench.daemon import BIN, delete_all, finish_cleanup
from cumulo.client import Client
from cumulo.host import cgroups


class Host:
    """A cumulod in its own netns that can be restarted on the same state."""

    def __init__(self, top: Path, ns: str) -> None:
        self.top, self.ns = top, ns
        self.parent = f"cumulo-bench-{uuid.uuid4().hex[:6]}"
        self.sock = top / "cumulo.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, interval: float) -> Client:
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns}", str(BIN / "cumulod"),
             "--state-dir", str(self.top / "state"), "--socket", str(self.sock),
             "--cgroup-parent", self.parent, "--log-level", "warning",
             "--no-default-network", "--history-interval", str(interval)],
            stdout=subprocess.DEVNULL, stderr=open(self.top / "cumulod.log", "ab"))  # noqa: SIM115
        c = Client(socket=str(self.sock), timeout=120)
        for _ in range(2400):   # up to 2 min: reconciling hundreds of instances
            try:
                c.server()
                return c
            except Exception:
                if self.proc.poll() is not None:
                    raise RuntimeError((self.top / "cumulod.log").read_text()) from None
                time.sleep(0.05)
        raise RuntimeError("cumulod did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(300)   # running operations finish first

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        # nsenter execs cumulod: the pid is the daemon's
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def raw_read(parent: str, daemon_pid: int) -> None:
    """The floor: the files an exporter reads for these instances, read directly (the
    instances' cgroups, and the NIC counters of the daemon's netns in one file)."""
    top = Path("/sys/fs/cgroup/cpuacct", parent)
    for d in top.iterdir() if top.is_dir() else []:
        if d.is_dir():
            cgroups.read_usage(f"/{parent}/{d.name}")
    Path(f"/proc/{daemon_pid}/net/dev").read_text()


def scrape_costs(c: Client, host: Host, repeat: int) -> dict[str, Any]:
    """Median times of a scrape, a plain list, and of reading the files directly."""
    pid = host.proc.pid if host.proc else 0
    return {"scrape_ms": median_ms(lambda: c.request("GET", "/metrics"), repeat),
            "list_ms": median_ms(lambda: c.get("/instances"), repeat),
            "raw_ms": median_ms(lambda: raw_read(host.parent, pid), repeat),
            "scrape_bytes": len(c.request("GET", "/metrics").content)}


def grow(c: Client, have: int, want: int) -> None:
    def one(i: int) -> None:
        c2 = Client(socket=c.socket, timeout=300)
        # privileged: each user-namespaced container takes a session key of its mapped
        # uid, and kernel.keys.maxkeys (200 by default) stops the 200th or so
        c2.create(f"c{i}", "busybox", start=True, command=["sleep", "1000000"],
                  networks=[{"network": "bench"}], privileged=True)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(have, want)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", default="1,50,200")
    p.add_argument("--window", type=float, default=20.0, help="seconds of CPU measured")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    counts = [int(x) for x in args.counts.split(",")]
    top = Path(tempfile.mkdtemp(prefix="cumulo-bench-metrics-"))
    ns = f"cu-bm-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    host = Host(top, ns)
    rows: list[dict[str, Any]] = []
    clean = False
    try:
        c = host.start(0)
        c.build_image("busybox", "busybox")
        c.create_network("bench", subnet="10.96.0.0/23")
        have = 0
        for n in counts:
            grow(c, have, n)
            have = n
            host.stop()
            row: dict[str, Any] = {"instances": n}
            for interval in (0.0, 10.0, 1.0):
                c = host.start(interval)
                c.request("GET", "/metrics")   # warm: pools measured, modules loaded
                time.sleep(2)
                cpu0 = host.cpu_seconds()
                time.sleep(args.window)
                row[f"cpu_{interval:g}s"] = host.cpu_seconds() - cpu0
                if interval == 0.0:
                    row.update(scrape_costs(c, host, args.repeat))
                host.stop()
            # CPU of one history round (from the 1 s run) and its share of a CPU at 10 s
            rounds = args.window / 1.0
            row["round_ms"] = max(0.0, row["cpu_1s"] - row["cpu_0s"]) / rounds * 1000
            row["history_cpu_share_10s"] = row["round_ms"] / 1000 / 10.0
            row["history_ratio_10s"] = (row["cpu_10s"] / row["cpu_0s"]
                                        if row["cpu_0s"] > 0 else None)
            rows.append(row)
            c = host.start(0)
            print(f"{n:>4} instances: scrape {row['scrape_ms']:.1f} ms"
                  f" ({row['scrape_bytes'] // 1024} KiB), list {row['list_ms']:.1f} ms,"
                  f" raw files {row['raw_ms']:.1f} ms -> scrape/list"
                  f" {row['scrape_ms'] / row['list_ms']:.2f}x, scrape/raw"
                  f" {row['scrape_ms'] / max(row['raw_ms'], 1e-6):.1f}x;"
                  f" daemon CPU over {args.window:.0f}s: none {row['cpu_0s']:.2f}s,"
                  f" every 10s {row['cpu_10s']:.2f}s, every 1s {row['cpu_1s']:.2f}s ->"
                  f" one round {row['round_ms']:.0f} ms,"
                  f" {row['history_cpu_share_10s'] * 100:.2f}% of a CPU at 10s", flush=True)
    finally:
        failed: list[str] = []
        try:
            if host.proc is None or host.proc.poll() is not None:
                host.start(0)
            with Client(socket=str(host.sock), timeout=300) as c:
                failed = delete_all(c)
                for net in c.networks():
                    c.delete_network(net["name"])
                for img in c.images():
                    c.delete_image(img["fingerprint"])
        finally:
            host.stop()
            subprocess.run(["ip", "netns", "del", ns], check=False)
            clean = finish_cleanup(top, host.parent, failed)
    if args.json:
        print(json.dumps(rows, indent=2))
    if not clean:
        sys.exit(1)


if __name__ == "__main__":
    main()
