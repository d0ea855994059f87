"""GET /1.0/metrics over the fake driver: parses, follows instances, counts requests."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from cumulo.api.metrics import guest_metrics
from cumulo.domain.lifecycle import State
from cumulo.domain.models import Instance
from cumulo.drivers.base import DiskStats, GuestStats
from cumulo.services.host import Services
from cumulo.services.telemetry import sample_all
from tests.unit.conftest import launch, wait_op


def scrape(api: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    resp = api.get("/1.0/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def of(metrics: dict[str, list[tuple[dict[str, str], float]]], metric: str, **labels: str
       ) -> list[float]:
    return [v for lab, v in metrics.get(metric, []) if labels.items() <= lab.items()]


def test_metrics_follow_instances_and_requests(api: TestClient) -> None:
    launch(api, "web", limits={"memory": "64MiB"})
    m = scrape(api)
    web = {"name": "web", "project": "default", "type": "container"}
    assert of(m, "cumulo_cpu_seconds_total", **web)
    assert of(m, "cumulo_memory_usage_bytes", **web)[0] > 0
    assert of(m, "cumulo_memory_limit_bytes", **web) == [64 * 1024**2]
    assert of(m, "cumulo_processes", **web)[0] >= 1
    assert of(m, "cumulo_instance_state", **web, state="running") == [1]
    assert of(m, "cumulo_instances", type="container", state="running") == [1]
    assert of(m, "cumulo_operations_total", kind="launch instance", result="success") == [1]
    assert of(m, "cumulo_storage_pool_size_bytes", pool="default")[0] > 0
    # requests are counted by route template, not by raw path
    api.get("/1.0/instances/web")
    api.get("/1.0/instances/nosuch")
    m = scrape(api)
    route = "/1.0/instances/{name}"
    assert of(m, "cumulo_api_requests_total", method="GET", route=route, status="200") == [1]
    assert of(m, "cumulo_api_requests_total", method="GET", route=route, status="404") == [1]
    assert of(m, "cumulo_api_request_duration_seconds_count", method="GET", route=route) == [2]
    assert not [lab for lab, _ in m["cumulo_api_requests_total"]
                if "nosuch" in lab["route"]]
    # a deleted instance leaves no series behind
    assert wait_op(api, api.delete("/1.0/instances/web",
                                   params={"force": True}))["status"] == "success"
    m = scrape(api)
    assert not of(m, "cumulo_cpu_seconds_total", name="web")
    assert not of(m, "cumulo_instance_state", name="web")


def test_history_keeps_readings_of_live_instances(api: TestClient, svc: Services) -> None:
    launch(api, "web")
    svc.history.record(sample_all(svc.instances))
    svc.history.record(sample_all(svc.instances))
    body = api.get("/1.0/instances/web/history").json()
    assert len(body["points"]) == 2
    assert body["points"][0]["cpu_usage"] is None
    assert body["points"][1]["cpu_usage"] is not None
    assert body["points"][1]["memory_bytes"] > 0
    assert api.get("/1.0/instances/nosuch/history").status_code == 404
    wait_op(api, api.delete("/1.0/instances/web", params={"force": True}))
    svc.history.record(sample_all(svc.instances))
    assert svc.history.get("default", "web") == []


def test_guest_figures_are_labelled_per_vcpu_and_drive() -> None:
    vm = Instance("default", "v", "vm", "img", State.RUNNING)
    stats = GuestStats({1: 2.5, 0: 1.25}, {"root0": DiskStats(4096, 512, 3, 1)})
    silent = Instance("default", "w", "vm", "img", State.RUNNING)

    class Guests(Collector):
        def collect(self) -> Iterator[Metric]:
            return guest_metrics([(vm, stats), (silent, None)])

    registry = CollectorRegistry()
    registry.register(Guests())
    m: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            m.setdefault(s.name, []).append((s.labels, s.value))
    labels = {"name": "v", "project": "default", "type": "vm"}
    assert m["cumulo_instance_vcpu_seconds_total"] == [({**labels, "vcpu": "0"}, 1.25),
                                                        ({**labels, "vcpu": "1"}, 2.5)]
    root = {**labels, "device": "root0"}
    assert m["cumulo_instance_disk_read_bytes_total"] == [(root, 4096)]
    assert m["cumulo_instance_disk_written_bytes_total"] == [(root, 512)]
    assert m["cumulo_instance_disk_reads_total"] == [(root, 3)]
    assert m["cumulo_instance_disk_writes_total"] == [(root, 1)]
