"""Soak: many cycles of launch, exec, stop and delete, watching for anything that grows.

A throwaway daemon (in its own network namespace) runs N cycles on busybox containers
(``--nic``: each on a network, so a veth, a DHCP lease and nft set entries per cycle).
Every ``--every`` cycles it prints the daemon's memory (RSS), threads and open files and
the host's count of the kernel objects a daemon makes (``bench.host_objects``): cgroups
under its parent, mounts and files under its state dir, conmon, QEMU, swtpm and dnsmasq
processes, network namespaces other than its own, links in its namespace (taps among
them), qdiscs other than a link's default, the rules, sets (and maps) and set elements
of its nftables tables, loop devices. At the end it reports the growth from the first row to the
last (after a warm-up row) and what is left once every instance is gone: all zero is
the goal.

    .venv/bin/python -m bench.soak --cycles 1000 [--every 100] [--nic] [--type vm] [--json]
        [--heap]

``--heap``: the daemon traces its allocations from the first row on (slower) and dumps
its heap at each later row (``cumulo.host.heap_dump``); the end adds the lines of code
whose live memory grew most from the first dump to the last, and the interned strings
alive at the last dump and not at the first, by shape.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench.daemon import bench_daemon
from bench.host_objects import host_objects
from cumulo.client import Client

COLUMNS = ("cycle", "seconds", "rss_mib", "threads", "fds", "cgroups", "mounts", "files",
           "conmon", "qemu", "swtpm", "dnsmasq", "netns", "links", "taps", "qdiscs",
           "nft_rules", "nft_sets", "nft_elems", "loops")


def _daemon(state: Path) -> psutil.Process:
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(a.endswith("cumulod") for a in cmd) and str(state) in cmd:
            return p
    raise RuntimeError(f"no cumulod for {state}")


def sample(c: Client, state: Path, parent: str, ns: str, cycle: int, t0: float
           ) -> dict[str, Any]:
    """One row: the daemon's own figures and the host's objects."""
    d = _daemon(state)
    with d.oneshot():
        rss, threads, fds = d.memory_info().rss, d.num_threads(), d.num_fds()
    links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True,
                           check=True, timeout=30).stdout.count(": cu-")
    o = {k: len(v) for k, v in host_objects(state, parent, ns).items()}
    return {"cycle": cycle, "seconds": round(time.monotonic() - t0, 1),
            "rss_mib": round(rss / 2**20, 1), "threads": threads, "fds": fds,
            "cgroups": o["cgroups"], "mounts": o["mounts"], "files": o["instance dirs"],
            "conmon": o["conmon"], "qemu": o["qemu"], "swtpm": o["swtpm"],
            "dnsmasq": o["dnsmasq"], "netns": o["netns"], "links": links, "taps": o["tap"],
            "qdiscs": o["qdiscs"], "nft_rules": o["nft rules"], "nft_sets": o["nft sets"],
            "nft_elems": o["nft elements"], "loops": o["loop"]}


def heap_dump(state: Path) -> Path:
    """Ask the daemon to start tracing (the first time) or for a heap snapshot; the file
    it wrote (``cumulo.host.heap_dump``)."""
    d = _daemon(state)
    def written() -> set[Path]:
        return {*(state / "heap").glob("*.snap"), *(state / "heap").glob("tracing")}

    before = written()
    d.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = written() - before
        if new:
            return new.pop()
        time.sleep(0.2)
    raise RuntimeError("the daemon wrote no heap snapshot (is it tracing?)")


def heap_growth(first: Path, last: Path, top: int = 15) -> list[str]:
    """The ``top`` lines of code whose live memory grew most between two snapshots."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    old = tracemalloc.Snapshot.load(str(first)).filter_traces(ignore)
    new = tracemalloc.Snapshot.load(str(last)).filter_traces(ignore)
    return [str(s) for s in new.compare_to(old, "lineno")[:top]]


def interned_growth(first: Path, last: Path, top: int = 15) -> list[str] | None:
    """How many interned strings were alive at each snapshot, and the ``top`` shapes
    (digits as #) of those alive at the last and not at the first, most first."""
    old_file, new_file = first.with_suffix(".interned"), last.with_suffix(".interned")
    if not (old_file.exists() and new_file.exists()):
        return None
    old = set(old_file.read_text().splitlines())
    new = set(new_file.read_text().splitlines())
    shapes: dict[str, list[str]] = {}
    for line in sorted(new - old):
        shapes.setdefault(re.sub(r"[0-9a-f]{6,}|\d+", "#", line), []).append(line)
    lines = [f"interned strings alive: {len(old)} -> {len(new)}"
             f" ({len(new - old)} new ones alive, {len(old - new)} gone)"]
    for shape, found in sorted(shapes.items(), key=lambda kv: -len(kv[1]))[:top]:
        lines.append(f"{len(found):6d}  {shape}  e.g. {found[0]}")
    return lines


def cycle(c: Client, name: str, nic: bool, type_: str = "container") -> None:
    c.create(name, "busybox", type=type_, command=["sleep", "600"], start=True,
             networks=[{"network": "soak"}] if nic else [])
    out = c.exec(name, ["echo", "hi"])
    if out.get("exit_code") != 0 or "hi" not in str(out.get("stdout")):
        raise RuntimeError(f"exec in {name}: {out}")
    c.set_state(name, "stop", force=True)
    c.delete(name)


@contextmanager
def netns() -> Iterator[str]:
    ns = f"cu-soak-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=30)
    try:
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=30)


def soak(cycles: int, every: int, nic: bool, type_: str = "container", *,
         report: Callable[[dict[str, Any]], None] = lambda row: None,
         heap: bool = False) -> dict[str, Any]:
    """Run the soak; returns {"rows": [...], "growth": {...}, "left": {...}} (and
    "heap_growth" with ``heap``)."""
    rows: list[dict[str, Any]] = []
    snaps: list[Path] = []
    if heap:
        os.environ["CUMULO_HEAP_DUMPS"] = "1"   # the daemon inherits it
    with netns() as ns, bench_daemon(wrapper=["nsenter", f"--net=/run/netns/{ns}"]) as (
            c, state, parent):
        c.build_image("busybox")
        if nic:
            c.create_network("soak", "10.124.0.0/24")
        t0 = time.monotonic()
        cycle(c, "warm", nic, type_)   # first-use costs (imports, caches) before the first row
        rows.append(sample(c, state, parent, ns, 0, t0))
        report(rows[-1])
        if heap:
            heap_dump(state)   # tracing starts
        for i in range(1, cycles + 1):
            cycle(c, f"s{i}", nic, type_)
            if i % every == 0 or i == cycles:
                rows.append(sample(c, state, parent, ns, i, t0))
                report(rows[-1])
                if heap:
                    snaps.append(heap_dump(state))
        if nic:
            c.delete_network("soak")
        left = sample(c, state, parent, ns, cycles, t0)
        grew = heap_growth(snaps[0], snaps[-1]) if len(snaps) >= 2 else None
        strings = interned_growth(snaps[0], snaps[-1]) if len(snaps) >= 2 else None
    first, last = rows[0], rows[-1]
    growth = {k: round(last[k] - first[k], 1) for k in COLUMNS[2:]}
    result = {"rows": rows, "growth": growth, "left": {k: left[k] for k in COLUMNS[5:]}}
    if grew is not None:   # read before the daemon's state dir went
        result["heap_growth"] = grew
    if strings is not None:
        result["interned_growth"] = strings
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=1000)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--nic", action="store_true", help="each container on a network")
    p.add_argument("--type", default="container", choices=["container", "vm"],
                   help="vm: cheap microvm guests on TCG (about 10 s a cycle)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--heap", action="store_true",
                   help="trace the daemon's allocations: what grew, by line of code")
    a = p.parse_args()
    # a TERM (timeout, kill) unwinds like ^C: the daemon, its instances and netns go
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if not a.json:
        print(" ".join(f"{c:>8}" for c in COLUMNS))
    result = soak(a.cycles, a.every, a.nic, a.type, heap=a.heap, report=(
        (lambda row: None) if a.json else (
            lambda row: print(" ".join(f"{row[c]:>8}" for c in COLUMNS), flush=True))))
    if a.json:
        print(json.dumps(result, indent=1))
        return
    print("growth first -> last row:", result["growth"])
    print("left after the last delete:", result["left"])
    if "heap_growth" in result:
        print("the daemon's live memory that grew most (first row after the warm-up ->"
              " last):")
        for line in result["heap_growth"]:
            print(" ", line)
    for line in result.get("interned_growth", []):
        print(" ", line)


if __name__ == "__main__":
    main()
