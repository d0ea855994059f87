"""VM launch to first exec through the API, on TCG: microvm against pc, with a breakdown.

Per boot (both machines interleaved, so drift hits both alike):
  qemu      POST /instances until the launch operation ends (cgroup, QEMU up, QMP answers)
  firmware  from there until the guest kernel's clock starts: firmware (SeaBIOS and its
            kernel loader on pc, qboot on microvm) and the kernel's decompression, taken
            as the host time of the first exec less the guest's uptime then (so it also
            takes in any lag of the guest's early clock: jiffies until the TSC is chosen)
  kernel    kernel clock start to ``Run /init`` (the guest's own dmesg clock)
  init      /init to ``CUMULO-READY`` on the serial console (modules, agent, acpid)
  agent     from there until the first exec (``cat /proc/uptime``) returned
A boot that fails (an error, or no exec within the timeout) counts against reliability.

    .venv/bin/python -m bench.vm_launch [--repeat 10] [--memory 256]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.daemon import bench_daemon
from cumulo.client import Client

READY = b"CUMULO-READY"
MACHINES = ("microvm", "pc")
PHASES = ("qemu", "firmware", "kernel", "init", "agent", "total")
RUN_INIT = re.compile(r"\[\s*([0-9.]+)\] Run /init as init process")


def watch_ready(log: Path, stop: threading.Event, seen: dict[str, float]) -> None:
    """Note the host time at which ``CUMULO-READY`` shows up in the console log."""
    while not stop.is_set():
        try:
            if READY in log.read_bytes():
                seen["ready"] = time.monotonic()
                return
        except OSError:
            pass
        time.sleep(0.005)


def boot(c: Client, state: Path, machine: str, name: str, memory: str,
         timeout: float) -> dict[str, float]:
    """One launch + first exec; the phases in seconds (raises if it did not boot)."""
    seen: dict[str, float] = {}
    stop = threading.Event()
    log = state / "instances" / f"default_{name}" / "console.log"
    watcher = threading.Thread(target=watch_ready, args=(log, stop, seen), daemon=True)
    t0 = time.monotonic()
    watcher.start()
    try:
        c.create(name, "busybox", type="vm", start=True, limits={"memory": memory},
                 options={"machine": machine, "accel": "tcg"})
        launched = time.monotonic()
        r = c.exec(name, ["cat", "/proc/uptime"], timeout=timeout)
        done = time.monotonic()
        if r["exit_code"] != 0:
            raise RuntimeError(f"first exec failed: {r}")
        uptime = float(r["stdout"].split()[0])
        dmesg = c.exec(name, ["dmesg"], timeout=timeout)["stdout"]
    finally:
        stop.set()
        watcher.join(1)
    m = RUN_INIT.search(dmesg)
    if m is None or "ready" not in seen:
        raise RuntimeError("no 'Run /init' in dmesg or no READY on the console")
    kernel_start = done - uptime
    init_at = kernel_start + float(m.group(1))
    return {"qemu": launched - t0, "firmware": kernel_start - launched,
            "kernel": init_at - kernel_start, "init": seen["ready"] - init_at,
            "agent": done - seen["ready"], "total": done - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--memory", default="256MiB")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds to first exec")
    args = ap.parse_args()
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in MACHINES}
    failures: dict[str, list[str]] = {m: [] for m in MACHINES}
    with bench_daemon() as (c, state, _parent):
        c.build_image("busybox")
        for i in range(args.repeat):
            for machine in MACHINES:
                name = f"{machine}{i}"
                try:
                    samples[machine].append(boot(c, state, machine, name, args.memory,
                                                 args.timeout))
                except Exception as err:  # a failed boot is a result here, not a crash
                    failures[machine].append(f"{name}: {err}")
                finally:
                    try:
                        c.delete(name, force=True)
                    except Exception as err:
                        failures[machine].append(f"{name}: delete: {err}")
    print(f"VM launch + first exec on TCG, median of {args.repeat} boots each "
          f"(seconds; {args.memory} guest):")
    print(f"  {'machine':8} {'booted':>7} " + " ".join(f"{p:>8}" for p in PHASES))
    for machine in MACHINES:
        xs = samples[machine]
        med = {p: statistics.median(s[p] for s in xs) if xs else float("nan") for p in PHASES}
        print(f"  {machine:8} {len(xs):>3}/{args.repeat:<3} "
              + " ".join(f"{med[p]:8.2f}" for p in PHASES))
    if all(samples[m] for m in MACHINES):
        ratio = (statistics.median(s["total"] for s in samples["microvm"])
                 / statistics.median(s["total"] for s in samples["pc"]))
        print(f"  microvm / pc total: {ratio:.2f}x")
    for machine in MACHINES:
        for f in failures[machine]:
            print(f"  FAILED {f}")
    out = Path("bench/results/vm_launch.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"samples": samples, "failures": failures,
                              "repeat": args.repeat, "memory": args.memory}
    out.write_text(json.dumps(result, indent=1))
    print(f"raw samples in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
