"""Long-running work as operations with id, status, progress and error (like Incus).

Cancelling (``DELETE /1.0/operations/ID``, like Incus) sets a flag; the work sees it
the next time it reports progress, which then raises `OperationCancelled`, so the
work unwinds through its own undo. Work that waits on something slow calls
``progress`` with an unchanged value to poll: only changes are written.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from cumulo.domain.models import Operation, OpStatus
from cumulo.errors import ConflictError, CumuloError
from cumulo.services.events import EventBus
from cumulo.store.repo import Store

log = logging.getLogger(__name__)

# what an operation still queued when the daemon stops ends with (it never ran)
NOT_RUN = "not run: cumulod stopped before this operation started; nothing was changed"

Progress = Callable[[float, str], None]
Work = Callable[[Progress], dict[str, Any] | None]


class OperationCancelled(CumuloError):
    """The operation was cancelled by a client before it finished."""


def kind_of(description: str) -> str:
    """What an operation does, without its object: "launch instance web" -> "launch instance"."""
    return " ".join(description.split()[:2])


def project_of(op: Operation) -> str | None:
    """The project of the instances an operation works on ("PROJECT/NAME"), if any."""
    for value in op.resources.get("instances") or ():
        if isinstance(value, str) and "/" in value:
            return value.split("/", 1)[0]
    return None


class Operations:
    """Runs work in a bounded thread pool and records its course in the store."""

    def __init__(self, store: Store, workers: int = 8, events: EventBus | None = None) -> None:
        self.store = store
        self.events = events or EventBus()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="op")
        self._done = threading.Condition()
        self._cancel: dict[str, threading.Event] = {}
        self._long: set[str] = set()
        # finished operations by (kind, result), e.g. ("launch instance", "success")
        self.finished: Counter[tuple[str, str]] = Counter()

    def submit(self, description: str, work: Work, resources: dict[str, Any] | None = None,
               cancel_on_shutdown: bool = False) -> Operation:
        """Run ``work`` in the pool. ``cancel_on_shutdown``: long work that a daemon stop
        cancels (an image build) instead of waiting for it to finish."""
        op = self.store.add_operation(Operation(
            id=str(uuid.uuid4()), description=description, resources=resources or {}))
        self._cancel[op.id] = threading.Event()
        if cancel_on_shutdown:
            self._long.add(op.id)
        self._publish(op)
        future = self._pool.submit(self._run, op.id, work)
        future.add_done_callback(functools.partial(self._not_run, op.id))
        return op

    def _not_run(self, op_id: str, future: Future[None]) -> None:
        """A queued operation cancelled by the daemon's stop ends saying it never ran
        (not pending forever, nor "cut off while it ran" at the next start)."""
        if future.cancelled():
            self._cancel.pop(op_id, None)
            self._long.discard(op_id)
            self._update(op_id, status=OpStatus.FAILURE, error=NOT_RUN)
            with self._done:
                self._done.notify_all()

    def _publish(self, op: Operation) -> None:
        """An ``operation`` event: its status or progress changed."""
        self.events.publish("operation", {
            "id": op.id, "description": op.description, "status": op.status.value,
            "progress": op.progress, "message": op.message, "error": op.error,
            "resources": op.resources}, project_of(op))

    def _update(self, op_id: str, **changes: Any) -> None:
        op = self.store.update_operation(op_id, **changes)
        if op.done:
            self.finished[(kind_of(op.description), op.status.value)] += 1
        self._publish(op)

    def cancel(self, op_id: str) -> Operation:
        """Ask a running operation to stop; it ends as a failure saying it was cancelled."""
        op = self.store.get_operation(op_id)
        flag = self._cancel.get(op_id)
        if op.done or flag is None:
            raise ConflictError(f"operation {op_id} is not running: nothing to cancel")
        flag.set()
        return op

    def _run(self, op_id: str, work: Work) -> None:
        flag = self._cancel[op_id]
        last: list[tuple[float, str]] = []

        def progress(fraction: float, message: str = "") -> None:
            if flag.is_set():
                raise OperationCancelled("cancelled")
            now = (max(0.0, min(1.0, fraction)), message)
            if last[-1:] != [now]:
                last[:] = [now]
                self._update(op_id, progress=now[0], message=message)

        self._update(op_id, status=OpStatus.RUNNING)
        try:
            extra = work(progress) or {}
            op = self.store.get_operation(op_id)
            self._update(op_id, status=OpStatus.SUCCESS, progress=1.0,
                         resources={**op.resources, **extra})
        except CumuloError as err:
            self._update(op_id, status=OpStatus.FAILURE, error=str(err))
        except Exception as err:  # a bug: keep the daemon alive, say what happened
            log.exception("operation %s crashed", op_id)
            self._update(op_id, status=OpStatus.FAILURE, error=f"internal error: {err!r}")
        finally:
            self._cancel.pop(op_id, None)
            self._long.discard(op_id)
            with self._done:
                self._done.notify_all()

    def active(self) -> int:
        """Operations submitted and not finished yet."""
        return len(self._cancel)

    def get(self, op_id: str, wait: float = 0.0) -> Operation:
        """The operation; with ``wait`` > 0, block up to that many seconds for it to end."""
        op = self.store.get_operation(op_id)
        if wait <= 0 or op.done:
            return op
        with self._done:
            self._done.wait_for(lambda: self.store.get_operation(op_id).done, timeout=wait)
        return self.store.get_operation(op_id)

    def shutdown(self) -> None:
        """Cancel long work, let running operations finish; those still queued end as
        failures that say they never ran (``_not_run``)."""
        for op_id in list(self._long):
            if flag := self._cancel.get(op_id):
                flag.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
