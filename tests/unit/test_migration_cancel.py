"""A cancel of a migration operation becomes a flag the driver polls, not an exception
thrown through the middle of a QEMU migration."""

from __future__ import annotations

import time

from cumulo.domain.models import OpStatus
from cumulo.services.host import Services
from cumulo.services.migration_cancel import CancelWatch
from cumulo.services.operations import Progress


def test_a_cancel_is_seen_as_a_flag_and_the_work_ends_its_own_way(svc: Services) -> None:
    seen: list[str] = []

    def work(progress: Progress) -> dict[str, object]:
        watch = CancelWatch(progress)
        deadline = time.monotonic() + 10
        while not watch() and time.monotonic() < deadline:
            watch.progress(0.5, "sending")          # would raise without the watch
            time.sleep(0.02)
        seen.append("cancel seen" if watch() else "timeout")
        return {"cancelled": watch()}

    op = svc.ops.submit("migrate", work)
    time.sleep(0.2)
    svc.ops.cancel(op.id)
    done = svc.ops.get(op.id, wait=10)
    assert seen == ["cancel seen"]
    # the work decided how to end: here it returned, so the operation says what it did
    assert done.status == OpStatus.SUCCESS and done.resources["cancelled"] is True
