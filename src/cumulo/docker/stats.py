"""``docker stats`` and ``docker top`` from Cumulo's usage figures and /proc."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import psutil
from starlette.responses import Response, StreamingResponse

from cumulo import errors as e
from cumulo.docker.common import call
from cumulo.docker.shapes import now_iso
from cumulo.domain.lifecycle import State
from cumulo.domain.models import Instance

if TYPE_CHECKING:
    from cumulo.docker.containers import Containers

INTERVAL = 1.0     # between two samples of a stream, as Docker
CLK = os.sysconf("SC_CLK_TCK")


def _system_ns() -> int:
    """Host CPU time since boot in ns (``/proc/stat``'s first line), as Docker reports it."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:8]
    return sum(int(x) for x in fields) * 1_000_000_000 // CLK


def sample(c: Containers, inst: Instance) -> dict[str, Any]:
    """One sample in Docker's stats shape (the fields ``docker stats`` computes from)."""
    inst = c.svc.instances.refresh(inst)
    usage = c.svc.instances.usage(inst)
    nets = {}
    for i, (_host, n) in enumerate(c.svc.networks.counters(inst).items()):
        nets[f"eth{i}"] = {"rx_bytes": n.rx_bytes, "rx_packets": n.rx_packets,
                           "rx_errors": 0, "rx_dropped": n.rx_dropped,
                           "tx_bytes": n.tx_bytes, "tx_packets": n.tx_packets,
                           "tx_errors": 0, "tx_dropped": n.tx_dropped}
    limit = inst.limits.memory or c.svc.host.memory_bytes
    cpus = c.svc.host.cpus
    running = inst.state in (State.RUNNING, State.PAUSED)
    return {
        "read": now_iso(), "preread": "0001-01-01T00:00:00Z", "name": f"/{inst.name}",
        "id": c.meta.container(inst)["Id"],
        "pids_stats": {"current": usage.pids or 0,
                       **({"limit": inst.limits.pids} if inst.limits.pids else {})},
        "blkio_stats": {"io_service_bytes_recursive": [
            {"major": 0, "minor": 0, "op": "read", "value": usage.io_read_bytes or 0},
            {"major": 0, "minor": 0, "op": "write", "value": usage.io_write_bytes or 0}]
            if running else None},
        "num_procs": 0, "storage_stats": {},
        "cpu_stats": {"cpu_usage": {"total_usage": usage.cpu_time_ns or 0,
                                    "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                      "system_cpu_usage": _system_ns(), "online_cpus": cpus,
                      "throttling_data": {"periods": 0, "throttled_periods": 0,
                                          "throttled_time": 0}},
        "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "memory_stats": {"usage": usage.memory_bytes or 0,
                         "max_usage": usage.memory_peak_bytes or 0,
                         "stats": {}, "limit": limit} if running else {},
        "networks": nets,
    }


async def respond(c: Containers, inst: Instance, stream: bool, one_shot: bool) -> Response:
    async def gen() -> AsyncIterator[bytes]:
        prev: dict[str, Any] | None = None
        if not stream and not one_shot:   # a CPU figure needs a sample before this one
            prev = await call(sample, c, inst)
            await asyncio.sleep(0.2)
        while True:
            try:
                now = await call(sample, c, inst)
            except e.NotFoundError:
                return
            if prev is not None:
                now["precpu_stats"] = prev["cpu_stats"]
                now["preread"] = prev["read"]
            yield (json.dumps(now) + "\n").encode()
            if not stream:
                return
            prev = now
            await asyncio.sleep(INTERVAL)

    return StreamingResponse(gen(), media_type="application/json")


def top(pid: int | None, _ps_args: str) -> dict[str, Any]:
    """PID 1 and its descendants, in ``ps -ef``'s columns."""
    titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    rows: list[list[str]] = []
    if pid is None:
        return {"Titles": titles, "Processes": rows}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {"Titles": titles, "Processes": rows}
    for p in procs:
        try:
            with p.oneshot():
                t = p.cpu_times()
                secs = int(t.user + t.system)
                rows.append([str(p.uids().real), str(p.pid), str(p.ppid()), "0",
                             "", "?", f"{secs // 3600:02}:{secs // 60 % 60:02}:{secs % 60:02}",
                             " ".join(p.cmdline()) or p.name()])
        except psutil.Error:
            continue
    return {"Titles": titles, "Processes": rows}
