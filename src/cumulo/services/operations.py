"""Long-running work as operations with id, status, progress and error (like Incus).

Cancelling (``DELETE /1.0/operations/ID``, like Incus) sets a flag; the work sees it
the next time it reports progress, which then raises `OperationCancelled`, so the
work unwinds through its own undo. Work that waits on something slow calls
``progress`` with an unchanged value to poll: only changes are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cumulo.domain.models import Operation, OpStatus
from cumulo.errors import ConflictError, CumuloError, NotFoundError
from cumulo.services.events import EventBus
from cumulo.store.repo import Store, StoreWrite

log = logging.getLogger(__name__)

# what an operation still queued when the daemon stops ends with (it never ran)
ENDED_KEPT = 100   # ended operations kept in memory for a ``?wait`` that comes late
NOT_RUN = "not run: cumulod stopped before this operation started; nothing was changed"

Progress = Callable[[float, str], None]
Work = Callable[[Progress], dict[str, Any] | None]


def utcnow() -> datetime:
    return datetime.now(UTC)


class OperationCancelled(CumuloError):
    """The operation was cancelled by a client before it finished."""


def kind_of(description: str) -> str:
    """What an operation does, without its object: "launch instance web" -> "launch instance"."""
    return " ".join(description.split()[:2])


def _project_in(resources: dict[str, Any]) -> str | None:
    """The project of the instances an operation works on ("PROJECT/NAME"), if any."""
    for value in resources.get("instances") or ():
        if isinstance(value, str) and "/" in value:
            return value.split("/", 1)[0]
    return None


class _Live:
    """A running operation: its current state, cancel flag and who waits for its end."""

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.cancel = threading.Event()
        self.done = threading.Event()
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Operation]]] = []


class Operations:
    """Runs work in a bounded thread pool and records its course in the store.

    The store gets an operation when it is submitted and again when it ends; its
    status and progress in between live in memory (and go out as events): a launch
    then costs two commits for its operation instead of five. A daemon that stops
    midway marks what the store still has as unfinished failed at its next start.
    """

    def __init__(self, store: Store, workers: int = 8, events: EventBus | None = None) -> None:
        self.store = store
        self.events = events or EventBus()
        # in a cluster: this member's name, kept in each operation's resources (its
        # daemon is the one that knows how a running operation goes)
        self.member: Callable[[], str | None] = lambda: None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="op")
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        # the last operations that ended, as they ended: a ``?wait`` that comes after the
        # end (a launch that failed at once, a busy event loop) answers from here, not
        # with the op as submitted (the client then asked again)
        self._ended: OrderedDict[str, Operation] = OrderedDict()
        self._long: set[str] = set()
        self._current = threading.local()   # .live: the operation a pool thread runs
        # finished operations by (kind, result), e.g. ("launch instance", "success")
        self.finished: Counter[tuple[str, str]] = Counter()

    def new(self, description: str, resources: dict[str, Any] | None = None,
            project: str | None = None) -> Operation:
        """An operation neither recorded nor run yet: for a caller that writes it to the
        store with rows of its own (one commit, ``Store.add_instance``), then ``run``s it.
        ``project``: whose it is (default: that of the instances in ``resources``, else
        ``default``)."""
        member = self.member()
        resources = {**(resources or {}), **({"member": member} if member else {})}
        now = utcnow()
        return Operation(id=str(uuid.uuid4()), description=description, resources=resources,
                         project=project or _project_in(resources) or "default",
                         created_at=now, updated_at=now)

    def submit(self, description: str, work: Work, resources: dict[str, Any] | None = None,
               cancel_on_shutdown: bool = False, project: str | None = None) -> Operation:
        """Record and run ``work`` in the pool. ``cancel_on_shutdown``: long work that a
        daemon stop cancels (an image build) instead of waiting for it to finish."""
        op = self.store.add_operation(self.new(description, resources, project))
        return self.run(op, work, cancel_on_shutdown)

    def run(self, op: Operation, work: Work, cancel_on_shutdown: bool = False) -> Operation:
        """Run ``work`` in the pool as ``op``, which the store has already (``new``)."""
        live = _Live(op)
        with self._lock:
            self._live[op.id] = live
        if cancel_on_shutdown:
            self._long.add(op.id)
        self._publish(op)
        future = self._pool.submit(self._run, live, work)
        future.add_done_callback(functools.partial(self._not_run, live))
        return op

    def _not_run(self, live: _Live, future: Future[None]) -> None:
        """A queued operation cancelled by the daemon's stop ends saying it never ran
        (not pending forever, nor "cut off while it ran" at the next start)."""
        if future.cancelled():
            self._long.discard(live.op.id)
            self._end(live, status=OpStatus.FAILURE, error=NOT_RUN)

    def _publish(self, op: Operation) -> None:
        """An ``operation`` event: its status or progress changed."""
        self.events.publish("operation", {
            "id": op.id, "description": op.description, "status": op.status.value,
            "progress": op.progress, "message": op.message, "error": op.error,
            "resources": op.resources}, op.project)

    def _update(self, live: _Live, **changes: Any) -> None:
        """A change while it runs: in memory, and an event."""
        with self._lock:
            live.op = replace(live.op, updated_at=utcnow(), **changes)
            op = live.op
        self._publish(op)

    def _end(self, live: _Live, **changes: Any) -> None:
        """The end: written to the store, then told to those who wait."""
        op = replace(live.op, **changes)
        try:
            op = self.store.end_operation(op)
        except CumuloError as err:   # the store failed: the waiters still hear of the end
            log.error("cannot record the end of operation %s: %s", op.id, err)
            op = replace(op, updated_at=utcnow())
        self._ended_as(live, op)

    def _ended_as(self, live: _Live, op: Operation) -> None:
        """Told to those who wait (the store has the end already, or cannot have it)."""
        self.finished[(kind_of(op.description), op.status.value)] += 1
        with self._lock:
            live.op = op
            self._live.pop(op.id, None)
            self._ended[op.id] = op
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)
            waiters, live.waiters = live.waiters, []
        live.done.set()
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):   # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, fut, op)
        self._publish(op)

    def succeed(self, write: StoreWrite, then: Callable[[], None] | None = None,
                **resources: Any) -> None:
        """End the calling thread's operation now as a success, its record and ``write``
        (the work's last store change, e.g. an instance's new state) in one commit:
        for work whose last step is a store write. A failed commit raises (nothing is
        recorded: the work undoes what it did and the operation ends as a failure).
        ``then``: what to announce once it is recorded, before the end is told."""
        live = getattr(self._current, "live", None)
        if live is None or live.done.is_set():
            raise RuntimeError("succeed() outside of a running operation's work")
        op = self.store.end_operation(replace(
            live.op, status=OpStatus.SUCCESS, progress=1.0,
            resources={**live.op.resources, **resources}), also=write)
        if then is not None:
            try:
                then()
            except Exception:   # recorded already: the end is told all the same
                log.exception("operation %s: announcing its end failed", op.id)
        self._ended_as(live, op)

    def _running(self, op_id: str, project: str | None) -> _Live | None:
        """The running operation, if it is one of ``project`` (None: any)."""
        with self._lock:
            live = self._live.get(op_id)
        if live is not None and project is not None and live.op.project != project:
            raise NotFoundError("operation", op_id)
        return live

    def cancel(self, op_id: str, project: str | None = None) -> Operation:
        """Ask a running operation to stop; it ends as a failure saying it was cancelled."""
        live = self._running(op_id, project)
        if live is None:
            self.store.get_operation(op_id, project)   # NotFoundError for an unknown id
            raise ConflictError(f"operation {op_id} is not running: nothing to cancel")
        live.cancel.set()
        return live.op

    def _run(self, live: _Live, work: Work) -> None:
        flag = live.cancel
        last: list[tuple[float, str]] = []

        def progress(fraction: float, message: str = "") -> None:
            if flag.is_set():
                raise OperationCancelled("cancelled")
            now = (max(0.0, min(1.0, fraction)), message)
            if last[-1:] != [now]:
                last[:] = [now]
                self._update(live, progress=now[0], message=message)

        self._update(live, status=OpStatus.RUNNING)
        self._current.live = live
        try:
            try:
                extra = work(progress) or {}
            except CumuloError as err:
                if not self._ended_before(live, err):
                    self._end(live, status=OpStatus.FAILURE, error=str(err),
                              error_type=type(err).__name__)
            except Exception as err:  # a bug: keep the daemon alive, say what happened
                log.exception("operation %s crashed", live.op.id)
                if not self._ended_before(live, err):
                    self._end(live, status=OpStatus.FAILURE, error=f"internal error: {err!r}",
                              error_type="InternalError")
            else:
                if not live.done.is_set():   # (else it ``succeed``ed)
                    self._end(live, status=OpStatus.SUCCESS, progress=1.0,
                              resources={**live.op.resources, **extra})
        finally:
            self._current.live = None
            self._long.discard(live.op.id)
            if not live.done.is_set():   # (a BaseException went through)
                with self._lock:
                    self._live.pop(live.op.id, None)
                live.done.set()

    @staticmethod
    def _ended_before(live: _Live, err: Exception) -> bool:
        """Whether the operation ``succeed``ed before its work raised ``err`` (a bug:
        the record stays, the error goes to the log)."""
        if live.done.is_set():
            log.error("operation %s raised after it succeeded: %r", live.op.id, err)
            return True
        return False

    def active(self) -> int:
        """Operations submitted and not finished yet."""
        return len(self._live)

    def get(self, op_id: str, wait: float = 0.0, project: str | None = None) -> Operation:
        """The operation; with ``wait`` > 0, block up to that many seconds for it to end.
        ``project``: only one of that project (another's is not found)."""
        live = self._running(op_id, project)
        if live is None:
            return self.store.get_operation(op_id, project)
        if wait > 0:
            live.done.wait(wait)
        return live.op

    async def wait(self, op_id: str, wait: float, project: str | None = None
                   ) -> Operation | None:
        """The running operation once it ended, or as it is after ``wait`` seconds (at
        once with 0), awaited on the event loop: no thread blocks meanwhile. None if it
        is not running: the store has it (or not). Another project's is not found."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Operation] = loop.create_future()
        self._running(op_id, project)
        with self._lock:
            live = self._live.get(op_id)
            if live is None:
                ended = self._ended.get(op_id)
                return ended if ended is None or project in (None, ended.project) else None
            if wait <= 0:
                return live.op
            live.waiters.append((loop, fut))
        try:
            return await asyncio.wait_for(fut, wait)
        except TimeoutError:
            return live.op
        finally:
            with self._lock, contextlib.suppress(ValueError):
                live.waiters.remove((loop, fut))

    def list(self, limit: int = 100, project: str | None = None) -> list[Operation]:
        """Recent operations (of ``project``), newest first; running ones as they are now."""
        with self._lock:
            live = {op_id: lv.op for op_id, lv in self._live.items()}
        return [live.get(op.id, op) for op in self.store.list_operations(limit, project)]

    def shutdown(self) -> None:
        """Cancel long work, let running operations finish; those still queued end as
        failures that say they never ran (``_not_run``)."""
        with self._lock:
            flags = [lv.cancel for op_id, lv in self._live.items() if op_id in self._long]
        for flag in flags:
            flag.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _settle(fut: asyncio.Future[Operation], op: Operation) -> None:
    if not fut.done():
        fut.set_result(op)
