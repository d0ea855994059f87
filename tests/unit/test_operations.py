"""Operations: their course while they run, their record once they end, and waiting."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cumulo.domain.lifecycle import State
from cumulo.domain.models import Image, Instance, Operation, OpStatus
from cumulo.errors import InvalidStateError, NotFoundError, status_of_type
from cumulo.services.operations import Operations, Progress
from cumulo.store.repo import Store


def blocked_work(release: threading.Event) -> tuple[threading.Event, object]:
    """Work that reports half-way, then waits for ``release``."""
    halfway = threading.Event()

    def work(progress: Progress) -> dict[str, str]:
        progress(0.5, "half")
        halfway.set()
        assert release.wait(10)
        return {"made": "it"}

    return halfway, work


def test_a_running_operation_is_shown_live_and_stored_when_it_ends() -> None:
    store = Store("sqlite://")
    ops = Operations(store, workers=1)
    release = threading.Event()
    halfway, work = blocked_work(release)
    op = ops.submit("launch instance web", work)  # type: ignore[arg-type]
    try:
        assert halfway.wait(10)
        live = ops.get(op.id)
        assert (live.status, live.progress, live.message) == (OpStatus.RUNNING, 0.5, "half")
        assert [o.progress for o in ops.list() if o.id == op.id] == [0.5]
        # its progress costs no commit: the store has it as submitted until it ends
        assert store.get_operation(op.id).status == OpStatus.PENDING
    finally:
        release.set()
    done = ops.get(op.id, wait=10)
    assert (done.status, done.progress, done.resources) == (OpStatus.SUCCESS, 1.0,
                                                           {"made": "it"})
    kept = store.get_operation(op.id)
    assert (kept.status, kept.message, kept.resources) == (OpStatus.SUCCESS, "half",
                                                          {"made": "it"})
    assert ops.active() == 0
    ops.shutdown()
    store.close()


def test_waiting_on_the_event_loop_ends_with_the_operation() -> None:
    store = Store("sqlite://")
    ops = Operations(store, workers=1)
    release = threading.Event()
    halfway, work = blocked_work(release)

    async def scenario() -> tuple[OpStatus, OpStatus, OpStatus]:
        op = ops.submit("launch instance web", work)  # type: ignore[arg-type]
        assert await asyncio.to_thread(halfway.wait, 10)
        early = await ops.wait(op.id, 0)            # as it is, at once
        waiter = asyncio.ensure_future(ops.wait(op.id, 30))
        await asyncio.sleep(0)
        release.set()                               # from another thread than the loop's
        ended = await waiter
        assert early is not None and ended is not None
        # a wait that comes after the end (a busy loop, a launch that failed at once)
        # gets the ended operation at once, not None (the client then asked again)
        after = await ops.wait(op.id, 30)
        assert after is not None and after.status == OpStatus.SUCCESS
        assert await ops.wait(op.id, 30, project="other") is None
        return early.status, ended.status, store.get_operation(op.id).status

    try:
        assert asyncio.run(scenario()) == (OpStatus.RUNNING, OpStatus.SUCCESS,
                                           OpStatus.SUCCESS)
    finally:
        release.set()
        ops.shutdown()
        store.close()


def test_a_failed_operation_keeps_its_error_class_and_the_client_its_status() -> None:
    """A conflict found while the operation runs (stop of a stopped instance, raced by a
    parallel stop) reaches a waiting client as the 409 it would be before the operation."""
    store = Store("sqlite://")
    ops = Operations(store, workers=1)

    def work(progress: Progress) -> None:
        raise InvalidStateError("one", "stopped", "stop")

    op = ops.submit("stop instance one", work)
    done = ops.get(op.id, wait=10)
    assert (done.status, done.error_type) == (OpStatus.FAILURE, "InvalidStateError")
    assert store.get_operation(op.id).error_type == "InvalidStateError"
    ops.shutdown()
    store.close()
    assert [status_of_type(n) for n in ("InvalidStateError", "ConflictError",
                                        "QuotaExceededError", "NotFoundError",
                                        "InternalError", None)] == [409, 409, 403, 404, 500, 500]


def test_work_that_succeeds_with_a_store_write_records_both_in_one_commit() -> None:
    """``succeed``: the work's last store change and the operation's end in one commit,
    announced before the waiters hear of the end; a commit that fails raises in the work
    (which undoes its part) and the operation ends as that failure."""
    store = Store("sqlite://")
    store.put_image(Image(fingerprint="b" * 64, aliases=["busybox"]))
    ops = Operations(store, workers=1)
    seen: list[object] = []

    def launch(name: str) -> Operation:
        op = ops.new(f"launch instance {name}", {"instances": [f"default/{name}"]})
        store.add_instance(Instance(project="default", name=name, type="container",
                                    image="b" * 64), op)

        def work(progress: Progress) -> None:
            try:
                ops.succeed(store.state_write("default", "a", State.RUNNING),
                            then=lambda: seen.append(ops.get(op.id).status), made="it")
            except NotFoundError:
                seen.append("undone")
                raise

        return ops.run(op, work)

    ok = ops.get(launch("a").id, wait=10)
    assert (ok.status, ok.progress, ok.resources["made"]) == (OpStatus.SUCCESS, 1.0, "it")
    assert store.get_instance("default", "a").state == State.RUNNING
    assert store.get_operation(ok.id).status == OpStatus.SUCCESS
    store.delete_instance("default", "a")
    bad = ops.get(launch("b").id, wait=10)   # its write names "a": gone now
    assert (bad.status, bad.error_type) == (OpStatus.FAILURE, "NotFoundError")
    assert store.get_operation(bad.id).error == "instance 'a' not found"
    assert seen == [OpStatus.RUNNING, "undone"]
    with pytest.raises(RuntimeError, match="outside of a running operation"):
        ops.succeed(store.state_write("default", "b", State.RUNNING))
    ops.shutdown()
    store.close()


def test_an_announcement_that_fails_after_the_commit_still_ends_it_as_a_success() -> None:
    """Once ``succeed`` committed, nothing may turn the work into a failure (its undo
    would remove what the store says runs): a ``then`` that raises goes to the log."""
    store = Store("sqlite://")
    store.put_image(Image(fingerprint="b" * 64, aliases=["busybox"]))
    ops = Operations(store, workers=1)
    undone: list[str] = []
    op = ops.new("launch instance a", {"instances": ["default/a"]})
    store.add_instance(Instance(project="default", name="a", type="container",
                                image="b" * 64), op)

    def broken() -> None:
        raise RuntimeError("an event bus bug")

    def work(progress: Progress) -> None:
        try:
            ops.succeed(store.state_write("default", "a", State.RUNNING), then=broken)
        except BaseException:
            undone.append("a")
            raise

    done = ops.get(ops.run(op, work).id, wait=10)
    assert (done.status, undone) == (OpStatus.SUCCESS, [])
    assert store.get_operation(op.id).status == OpStatus.SUCCESS
    assert store.get_instance("default", "a").state == State.RUNNING
    ops.shutdown()
    store.close()
