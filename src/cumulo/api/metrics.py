"""``GET /1.0/metrics``: the Prometheus text format, read from the host at scrape time.

The one owner of prometheus_client. A custom collector reads every instance when
scraped (services/telemetry.py), so nothing is kept per instance and an instance
that is gone leaves no series behind. API request counts and latencies are the
only state: a middleware records them by route template (``/1.0/instances/{name}``,
never the raw path), so their label sets stay small.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cumulo.domain.models import Instance
from cumulo.drivers.base import GuestStats
from cumulo.services.host import Services
from cumulo.services.telemetry import Sample, sample_all
from cumulo.storage.base import PoolUsage

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
POOL_TTL = 60.0   # seconds a pool's used bytes are reused: measuring walks its files
INSTANCE = ["name", "project", "type"]
# no ``_created`` series: they would double the exposition for nothing
disable_created_metrics()  # type: ignore[no-untyped-call]
NIC = [*INSTANCE, "device"]


class InstanceCollector(Collector):
    """Instances, host and daemon figures, all read when Prometheus asks."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._pools: dict[str, tuple[float, PoolUsage]] = {}
        self._pools_lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []   # not known before reading; registering must not scrape

    def collect(self) -> Iterator[Metric]:
        samples = sample_all(self.svc.instances)
        yield from instance_metrics(samples)
        yield from guest_metrics([(s.instance, self.svc.instances.guest_stats(s.instance))
                                  for s in samples])
        yield from self._host(samples)
        yield from self._daemon()

    def _host(self, samples: list[Sample]) -> Iterator[Metric]:
        host = self.svc.host
        yield GaugeMetricFamily("cumulo_host_cpus", "CPUs of this host", value=host.cpus)
        yield GaugeMetricFamily("cumulo_host_memory_bytes", "Memory of this host",
                                value=host.memory_bytes)
        count = GaugeMetricFamily("cumulo_instances", "Instances by type and state",
                                  labels=["type", "state"])
        by: dict[tuple[str, str], int] = {}
        for s in samples:
            key = (s.instance.type, s.instance.state.value)
            by[key] = by.get(key, 0) + 1
        for (type_, state), n in sorted(by.items()):
            count.add_metric([type_, state], n)
        yield count
        labels = ["pool"]
        size = GaugeMetricFamily("cumulo_storage_pool_size_bytes",
                                 "Size of the filesystem holding the pool", labels=labels)
        free = GaugeMetricFamily("cumulo_storage_pool_free_bytes",
                                 "Free bytes on the filesystem holding the pool", labels=labels)
        used = GaugeMetricFamily("cumulo_storage_pool_used_bytes",
                                 f"Bytes the pool's files take (measured at most every"
                                 f" {POOL_TTL:.0f} s)", labels=labels)
        for name, u in self._pool_usage():
            size.add_metric([name], u.total)
            free.add_metric([name], u.free)
            used.add_metric([name], u.used)
        yield from (size, free, used)

    def _pool_usage(self) -> list[tuple[str, PoolUsage]]:
        now = time.monotonic()
        out = []
        with self._pools_lock:
            for name, pool in sorted(self.svc.storage.pools.items()):
                cached = self._pools.get(name)
                if cached is None or now - cached[0] > POOL_TTL:
                    cached = self._pools[name] = (now, pool.usage())
                out.append((name, cached[1]))
        return out

    def _daemon(self) -> Iterator[Metric]:
        ops = CounterMetricFamily("cumulo_operations", "Finished operations by kind and result",
                                  labels=["kind", "result"])
        for (kind, result), n in sorted(self.svc.ops.finished.items()):
            ops.add_metric([kind, result], n)
        yield ops
        yield GaugeMetricFamily("cumulo_operations_running", "Operations not finished yet",
                                value=self.svc.ops.active())
        yield GaugeMetricFamily("cumulo_event_subscribers", "Open /1.0/events streams",
                                value=self.svc.events.subscribers())


def instance_metrics(samples: list[Sample]) -> Iterator[Metric]:
    """Per-instance families (labels name, project, type; NICs add device)."""
    def gauge(name: str, doc: str, labels: list[str] = INSTANCE) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=labels)

    def counter(name: str, doc: str, labels: list[str] = INSTANCE) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=labels)

    cpu = counter("cumulo_cpu_seconds", "CPU time used (all of its processes or vCPUs)")
    mem = gauge("cumulo_memory_usage_bytes", "Memory in use (its cgroup; a VM: QEMU's)")
    peak = gauge("cumulo_memory_peak_bytes", "Most memory it has used")
    limit = gauge("cumulo_memory_limit_bytes", "Its memory limit (only when it has one)")
    rd = counter("cumulo_disk_read_bytes", "Bytes read from block devices")
    wr = counter("cumulo_disk_written_bytes", "Bytes written to block devices")
    procs = gauge("cumulo_processes", "Processes (a VM: QEMU's threads)")
    state = gauge("cumulo_instance_state", "1 for the state it is in",
                  labels=[*INSTANCE, "state"])
    nic = {key: counter(f"cumulo_network_{key}", f"Network {key.replace('_', ' ')}, as the"
                        " instance sees it", NIC)
           for key in ("receive_bytes", "transmit_bytes", "receive_packets",
                       "transmit_packets", "receive_drop", "transmit_drop")}
    for s in samples:
        inst, u = s.instance, s.usage
        labels = [inst.name, inst.project, inst.type]
        state.add_metric([*labels, inst.state.value], 1)
        if inst.limits.memory is not None:
            limit.add_metric(labels, inst.limits.memory)
        for family, value, scale in ((cpu, u.cpu_time_ns, 1e-9), (mem, u.memory_bytes, 1),
                                     (peak, u.memory_peak_bytes, 1), (procs, u.pids, 1),
                                     (rd, u.io_read_bytes, 1), (wr, u.io_write_bytes, 1)):
            if value is not None:
                family.add_metric(labels, value * scale)
        by_host = {n.host_name: f"eth{n.index}" for n in inst.nics}
        for host_name, c in s.nics.items():
            dev = [*labels, by_host.get(host_name, host_name)]
            for key, value in (("receive_bytes", c.rx_bytes), ("transmit_bytes", c.tx_bytes),
                               ("receive_packets", c.rx_packets),
                               ("transmit_packets", c.tx_packets),
                               ("receive_drop", c.rx_dropped), ("transmit_drop", c.tx_dropped)):
                nic[key].add_metric(dev, value)
    yield from (cpu, mem, peak, limit, rd, wr, procs, state, *nic.values())


def guest_metrics(stats: list[tuple[Instance, GuestStats | None]]) -> Iterator[Metric]:
    """A VM measured from the host: CPU seconds per vCPU thread, I/O per drive."""
    vcpu = CounterMetricFamily("cumulo_instance_vcpu_seconds", "CPU time of each vCPU"
                               " (its QEMU thread)", labels=[*INSTANCE, "vcpu"])
    disk = {key: CounterMetricFamily(f"cumulo_instance_disk_{key}",
                                     f"Guest disk {key.replace('_', ' ')} (QMP blockstats)",
                                     labels=[*INSTANCE, "device"])
            for key in ("read_bytes", "written_bytes", "reads", "writes")}
    for inst, st in stats:
        if st is None:
            continue
        labels = [inst.name, inst.project, inst.type]
        for n, seconds in sorted(st.vcpu_seconds.items()):
            vcpu.add_metric([*labels, str(n)], seconds)
        for dev, d in sorted(st.disks.items()):
            for key, value in (("read_bytes", d.read_bytes), ("written_bytes", d.write_bytes),
                               ("reads", d.read_ops), ("writes", d.write_ops)):
                disk[key].add_metric([*labels, dev], value)
    yield from (vcpu, *disk.values())


class Metrics:
    """The registry of one app: the collector plus the API's request metrics."""

    def __init__(self, svc: Services) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(InstanceCollector(svc))
        self.requests = Counter("cumulo_api_requests", "API requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("cumulo_api_request_duration_seconds",
                                 "API request latency by route", ["method", "route"],
                                 registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: count and time each HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            # the router put the matched route in the scope; unknown paths share one label
            route: Any = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.latency.labels(scope["method"], path).observe(
                time.perf_counter() - start)
            self.metrics.requests.labels(scope["method"], path, str(status[0])).inc()
