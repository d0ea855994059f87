"""The event bus: order, filters, a slow subscriber dropped; /1.0/events over the API."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from fastapi.testclient import TestClient

from cumulo.services.events import HISTORY, EventBus
from tests.unit.conftest import launch


def test_every_subscriber_sees_events_in_publishing_order() -> None:
    bus = EventBus(queue_size=10_000)
    a, b = bus.subscribe(), bus.subscribe(["lifecycle"], project="p1")

    def publish(tag: int) -> None:
        for i in range(200):
            bus.publish("operation", {"tag": tag, "i": i})
            bus.lifecycle("started", "p1" if i % 2 else "p2", f"n{tag}-{i}")

    threads = [threading.Thread(target=publish, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got_a, got_b = a.drain(), b.drain()
    assert len(got_a) == 4 * 400
    # b got exactly the lifecycle events of p1, in the order a saw them
    assert got_b == [e for e in got_a if e["type"] == "lifecycle" and e["project"] == "p1"]
    for tag in range(4):   # each publisher's own events stay in its order
        mine = [e["metadata"]["i"] for e in got_a if e["metadata"].get("tag") == tag]
        assert mine == list(range(200))


def test_slow_subscriber_is_dropped_without_blocking_the_publisher() -> None:
    bus = EventBus(queue_size=5)
    slow, fast = bus.subscribe(), bus.subscribe()
    for i in range(10):
        bus.publish("operation", {"i": i})
        fast.drain()
    assert slow.dropped and slow.closed and not fast.dropped
    assert [e["metadata"]["i"] for e in slow.drain()] == [0, 1, 2, 3, 4]
    assert bus.subscribers() == 1
    bus.close()
    assert fast.closed and not fast.dropped and bus.subscribers() == 0


def test_launch_streams_created_then_started(api: TestClient) -> None:
    with api.websocket_connect("/1.0/events?type=lifecycle&project=default") as ws:
        launch(api, "web")
        first, second = ws.receive_json(), ws.receive_json()
    assert [first["metadata"]["action"], second["metadata"]["action"]] == [
        "instance-created", "instance-started"]
    assert first["metadata"]["name"] == "web" and first["project"] == "default"


def test_unknown_event_type_is_refused(api: TestClient) -> None:
    with api.websocket_connect("/1.0/events?type=bogus") as ws:
        msg = ws.receive_json()
    assert msg["status"] == 400 and "bogus" in msg["error"]


def test_since_replays_kept_lifecycle_events_then_new_ones_once() -> None:
    bus = EventBus()
    first = bus.lifecycle("created", "p", "a")
    bus.publish("operation", {"id": "x"}, "p")            # not kept
    bus.lifecycle("started", "p", "a")
    bus.lifecycle("started", "q", "b")                     # another project
    since = datetime.fromisoformat(first["timestamp"])
    sub = bus.subscribe(["lifecycle"], "p", since=since)   # after the first one
    bus.lifecycle("stopped", "p", "a")
    actions = [ev["metadata"]["action"] for ev in sub.drain()]
    assert actions == ["instance-started", "instance-stopped"]
    old = bus.subscribe(["lifecycle"], "p", since=since - timedelta(seconds=1))
    assert len(old.drain()) == 3
    assert bus.subscribe(["lifecycle"], "p").drain() == []   # no since: only new ones
    for i in range(HISTORY + 5):
        bus.lifecycle("paused", "p", f"i{i}")
    assert len(bus.subscribe(["lifecycle"], None, since=since).drain()) == HISTORY
