"""The daemon's event bus: services publish, subscribers (``/1.0/events``) each read a queue.

Events are small dicts (``type``, ``timestamp``, ``project``, ``metadata``), like Incus's:
``lifecycle`` (an instance was created, started, stopped, deleted, ...), ``operation``
(an operation's status or progress changed) and ``logging`` (a daemon log record).
Publishing never blocks: each subscriber has a bounded queue, and one that falls
behind is dropped (its stream ends) rather than slowing the daemon down. The last
``HISTORY`` lifecycle events are kept (in memory, since the daemon started), so that a
subscriber may begin with those after a time (``docker events --since``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

TYPES = ("lifecycle", "operation", "logging")
QUEUE_SIZE = 1024   # events a subscriber may fall behind before it is dropped
HISTORY = 1000      # recent lifecycle events kept for a replay

Event = dict[str, Any]


class Subscription:
    """One subscriber's view: the events it asked for, in publishing order."""

    def __init__(self, bus: EventBus, types: frozenset[str], project: str | None,
                 notify: Callable[[], None] | None, size: int) -> None:
        self.types, self.project, self._notify = types, project, notify
        self._bus, self._size = bus, size
        self._queue: deque[Event] = deque()
        self._ready = threading.Condition()
        self.dropped = False   # it fell behind: its stream should end
        self.closed = False    # unsubscribed, or the bus closed

    def wants(self, event: Event) -> bool:
        return event["type"] in self.types and (
            self.project is None or event["project"] == self.project)

    def _offer(self, event: Event) -> bool:
        """Queue ``event``; False if the queue is full (the caller drops this subscriber)."""
        with self._ready:
            if len(self._queue) >= self._size:
                return False
            self._queue.append(event)
            self._ready.notify()
        self._wake()
        return True

    def _end(self, dropped: bool) -> None:
        with self._ready:
            self.dropped, self.closed = self.dropped or dropped, True
            self._ready.notify_all()
        self._wake()

    def _wake(self) -> None:
        if self._notify is not None:
            with contextlib.suppress(RuntimeError):   # the subscriber's event loop is gone
                self._notify()

    def drain(self) -> list[Event]:
        """Every queued event, without waiting."""
        with self._ready:
            out = list(self._queue)
            self._queue.clear()
            return out

    def get(self, timeout: float) -> list[Event]:
        """Queued events, waiting up to ``timeout`` for one; [] on timeout or when closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._queue or self.closed, timeout)
        return self.drain()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    """Thread-safe fan-out; one lock orders events the same way for every subscriber."""

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._size = queue_size
        self._closed = False
        self._history: deque[Event] = deque(maxlen=HISTORY)

    def subscribe(self, types: list[str] | None = None, project: str | None = None,
                  notify: Callable[[], None] | None = None,
                  since: datetime | None = None) -> Subscription:
        """``notify`` is called (from the publisher's thread) after events are queued;
        ``since``: the subscription begins with the kept lifecycle events after it (then
        every new one: none twice, none lost)."""
        sub = Subscription(self, frozenset(types or TYPES), project, notify,
                           self._size + (HISTORY if since is not None else 0))
        with self._lock:
            if self._closed:
                sub._end(dropped=False)
                return sub
            if since is not None:
                for event in self._history:
                    if sub.wants(event) and datetime.fromisoformat(event["timestamp"]) > since:
                        sub._queue.append(event)
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
        sub._end(dropped=False)

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, type_: str, metadata: dict[str, Any], project: str | None = None
                ) -> Event:
        event: Event = {"type": type_, "timestamp": datetime.now(UTC).isoformat(),
                        "project": project, "metadata": metadata}
        with self._lock:
            if type_ == "lifecycle":
                self._history.append(event)
            slow = [s for s in self._subs if s.wants(event) and not s._offer(event)]
            for sub in slow:
                self._subs.remove(sub)
        for sub in slow:
            sub._end(dropped=True)
        return event

    def lifecycle(self, action: str, project: str, name: str, **context: Any) -> Event:
        """``instance-<action>`` for instance ``project/name`` (action: created, started...)."""
        return self.publish("lifecycle", {"action": f"instance-{action}",
                                          "source": f"/1.0/instances/{name}",
                                          "name": name, "context": context}, project)

    def close(self) -> None:
        """End every subscription (the daemon is stopping)."""
        with self._lock:
            self._closed, subs, self._subs = True, self._subs, []
        for sub in subs:
            sub._end(dropped=False)


class LogHandler(logging.Handler):
    """Daemon log records (warning and up by default) as ``logging`` events."""

    def __init__(self, bus: EventBus, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.bus = bus

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.bus.publish("logging", {"level": record.levelname.lower(),
                                         "logger": record.name,
                                         "message": record.getMessage()})
