"""Metrics, events and history against a real cumulod (in its own network namespace, so
the container's NIC and the traffic to its gateway stay inside what the test made)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.system.conftest import BIN, Daemon
from tests.system.conftest import netns_daemon as in_netns

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime]
WEB = {"name": "web", "project": "default", "type": "container"}


@pytest.fixture
def netns_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A cumulod in a fresh netns, sampling history every 0.3 s."""
    with in_netns(tmp_path, "obs", ("--history-interval", "0.3")) as d:
        yield d


def scrape(d: Daemon) -> dict[str, list[tuple[dict[str, str], float]]]:
    with d.client() as c:
        text = c.metrics()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(m: dict[str, list[tuple[dict[str, str], float]]], metric: str, **labels: str
          ) -> float:
    found = [v for lab, v in m.get(metric, []) if labels.items() <= lab.items()]
    assert len(found) == 1, (metric, labels, m.get(metric))
    return found[0]


def wait_for(what: str, check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"no {what} in {timeout}s"
        time.sleep(0.1)


def test_metrics_events_and_history(netns_daemon: Daemon) -> None:
    d = netns_daemon
    d.cli("image", "build", "busybox")
    d.cli("network", "create", "blue", "--subnet", "10.94.0.0/24")
    monitor = subprocess.Popen([str(BIN / "cumulo"), "monitor", "--format", "json",
                                "--type", "lifecycle"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=d.env)
    try:
        wait_for("event subscriber",
                 lambda: value(scrape(d), "cumulo_event_subscribers") == 1)
        d.cli("launch", "busybox", "web", "--network", "blue", "--memory", "64MiB")
        # the exposition parses, and the instance is there with its labels
        before = scrape(d)
        assert value(before, "cumulo_instance_state", **WEB, state="running") == 1
        assert value(before, "cumulo_memory_limit_bytes", **WEB) == 64 * 1024**2
        assert value(before, "cumulo_memory_usage_bytes", **WEB) > 0
        assert value(before, "cumulo_processes", **WEB) >= 1
        # work in the container moves its counters: CPU, and packets to its gateway
        d.cli("exec", "web", "--", "sh", "-c",
              "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done;"
              " ping -c 3 -W 2 10.94.0.1 >/dev/null")
        after = scrape(d)
        cpu = "cumulo_cpu_seconds_total"
        assert value(after, cpu, **WEB) > value(before, cpu, **WEB) + 0.05
        sent = "cumulo_network_transmit_packets_total"
        assert value(after, sent, **WEB, device="eth0") >= value(
            before, sent, **WEB, device="eth0") + 3
        assert value(after, "cumulo_api_requests_total", method="GET",
                     route="/1.0/metrics", status="200") >= 2
        # events: created, then started, for the launch
        d.cli("stop", "web")
    finally:
        d.stop()   # the daemon stops with the stream open, and the stream ends
        out, err = monitor.communicate(timeout=30)
    actions = [(e["metadata"]["action"], e["metadata"]["name"])
               for e in map(json.loads, out.splitlines())]
    assert actions == [("instance-created", "web"), ("instance-started", "web"),
                       ("instance-stopped", "web")], out
    assert monitor.returncode == 1 and "cumulod stopped" in err, err
    d.start()
    # history: a point every 0.3 s, with usage once it runs again
    d.cli("start", "web")
    with d.client() as c:
        def running_points() -> list[dict[str, float]]:
            return [p for p in c.get("/instances/web/history")["points"]
                    if p["cpu_usage"] is not None]

        wait_for("history", lambda: len(running_points()) >= 2)
        points = running_points()
    assert points[-1]["memory_bytes"] > 0 and points[-1]["processes"] >= 1
    assert points[0]["time"] < points[-1]["time"]


@pytest.mark.qemu
@pytest.mark.slow
def test_vm_metrics_from_the_host(netns_daemon: Daemon) -> None:
    """A VM measured from the host side: its vCPU thread, its drive (QMP blockstats) and
    its tap's counters move with work in the guest; a VM whose QMP does not answer is left
    out of the scrape, which still succeeds."""
    d = netns_daemon
    vm = {"name": "vm1", "project": "default", "type": "vm"}
    d.cli("image", "build", "busybox")
    d.cli("network", "create", "blue", "--subnet", "10.94.0.0/24")
    d.cli("launch", "busybox", "vm1", "--type", "vm", "--machine", "pc", "--memory", "128MiB",
          "--network", "blue")
    before = scrape(d)
    vcpu, sent = "cumulo_instance_vcpu_seconds_total", "cumulo_network_transmit_packets_total"
    read, written = "cumulo_instance_disk_read_bytes_total", \
        "cumulo_instance_disk_written_bytes_total"
    reads, writes = "cumulo_instance_disk_reads_total", "cumulo_instance_disk_writes_total"
    root = {**vm, "device": "root0"}
    assert [lab["vcpu"] for lab, _ in before[vcpu] if lab["name"] == "vm1"] == ["0"]
    d.cli("exec", "vm1", "--", "sh", "-c",
          "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done;"
          " dd if=/dev/vda of=/dev/null bs=1M skip=64 count=8 2>/dev/null;"
          " dd if=/dev/zero of=/f bs=1M count=4 conv=fsync 2>/dev/null;"
          " ping -c 3 -W 2 10.94.0.1 >/dev/null")
    after = scrape(d)
    assert value(after, vcpu, **vm, vcpu="0") > value(before, vcpu, **vm, vcpu="0") + 0.05
    assert value(after, read, **root) >= value(before, read, **root) + 8 * 2**20
    assert value(after, written, **root) >= value(before, written, **root) + 4 * 2**20
    assert value(after, reads, **root) > value(before, reads, **root)
    assert value(after, writes, **root) > value(before, writes, **root)
    assert value(after, sent, **vm, device="eth0") >= value(before, sent, **vm,
                                                            device="eth0") + 3
    # QEMU frozen: its QMP cannot answer, the scrape goes on without the VM's figures
    pid = json.loads(d.cli("info", "vm1", "--format", "json").stdout)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        frozen = scrape(d)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert not [lab for lab, _ in frozen.get(vcpu, []) if lab["name"] == "vm1"]
    assert value(frozen, "cumulo_host_cpus") > 0
    d.cli("delete", "vm1", "--force")
