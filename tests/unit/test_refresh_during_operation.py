"""What the host shows while an operation holds an instance (a stateful snapshot pauses the
guest while it saves its state; a checkpoint or migration stops it) is that operation's
to record: the watchdog, ``cumulo list`` and the others that refresh the store from the
host leave the state alone meanwhile, and take it up again once the operation ended."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from cumulo.domain.lifecycle import State
from cumulo.drivers.base import ExecRequest, ExecSession, RunState, RunStatus
from cumulo.errors import InvalidStateError
from cumulo.services.host import Services
from cumulo.services.watchdog import Watchdog
from tests.unit.conftest import launch, wait_op

WAIT = 15.0


def stored(svc: Services, name: str) -> State:
    return svc.store.get_instance("default", name).state


def first_look(svc: Services, monkeypatch: pytest.MonkeyPatch, name: str,
               look: Callable[[Callable[[str], RunState], str], RunState]) -> None:
    """The first read of ``name``'s state on the host goes through ``look`` (given the
    real read and the host id); every other read (an operation's own too) is real."""
    inst = svc.store.get_instance("default", name)
    driver = svc.instances.drivers[inst.type]
    real = driver.state
    once = [True]

    def state(host_id: str) -> RunState:
        if host_id == inst.host_id and once:
            once.clear()
            return look(real, host_id)
        return real(host_id)

    monkeypatch.setattr(driver, "state", state)


@contextmanager
def operation_pausing(svc: Services, name: str) -> Iterator[None]:
    """An operation on another thread holding ``name`` with its guest paused (as a stateful
    snapshot saving the state); it resumes the guest and lets go on leaving."""
    inst = svc.store.get_instance("default", name)
    driver = svc.instances.drivers[inst.type]
    paused, done = threading.Event(), threading.Event()

    def op() -> None:
        with svc.instances._locked(inst):
            driver.pause(inst.host_id)
            paused.set()
            assert done.wait(WAIT)
            driver.resume(inst.host_id)
            svc.store.update_instance("default", name, state=State.RUNNING)

    t = threading.Thread(target=op)
    t.start()
    try:
        assert paused.wait(WAIT)
        yield
    finally:
        done.set()
        t.join(WAIT)
    assert not t.is_alive()


def test_a_guest_an_operation_paused_is_not_recorded_paused(api: TestClient,
                                                            svc: Services) -> None:
    launch(api, "v1")
    watchdog = Watchdog(svc.instances, svc.networks, interval=0)
    with operation_pausing(svc, "v1"):
        watchdog.check()
        assert stored(svc, "v1") == State.RUNNING
        assert [i.state for i in svc.instances.list("default")] == [State.RUNNING]
        assert api.get("/1.0/instances/v1").json()["state"] == "running"
    watchdog.check()
    assert stored(svc, "v1") == State.RUNNING
    # a guest paused outside of any operation is recorded, as before
    inst = svc.store.get_instance("default", "v1")
    svc.instances.drivers[inst.type].pause(inst.host_id)
    watchdog.check()
    assert stored(svc, "v1") == State.PAUSED


def test_an_operation_begun_and_ended_during_a_look_leaves_no_state(
        api: TestClient, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host was read while an operation ran that had begun and ended by the time the
    refresh checked for one: what it read is still that operation's."""
    launch(api, "v1")

    def read_mid_operation(real: Callable[[str], RunState], host_id: str) -> RunState:
        with operation_pausing(svc, "v1"):
            return real(host_id)

    first_look(svc, monkeypatch, "v1", read_mid_operation)
    Watchdog(svc.instances, svc.networks, interval=0).check()
    assert stored(svc, "v1") == State.RUNNING


def test_an_operation_itself_reads_the_host(api: TestClient, svc: Services) -> None:
    """Its guard sees a guest paused before it began (the store not told yet)."""
    launch(api, "v1")
    inst = svc.store.get_instance("default", "v1")
    svc.instances.drivers[inst.type].pause(inst.host_id)
    with svc.instances._locked(inst):
        assert svc.instances.get("default", "v1").state == State.PAUSED


def test_exec_during_such_an_operation_names_the_instance(
        api: TestClient, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver refuses in its own words (the VM driver names its host id); the store,
    left alone, lets the guard pass: the error still names the instance."""
    launch(api, "v1")
    inst = svc.store.get_instance("default", "v1")
    driver = svc.instances.drivers[inst.type]

    def refuse(host_id: str, request: ExecRequest) -> ExecSession:
        raise InvalidStateError(host_id, "paused", "exec")

    monkeypatch.setattr(driver, "exec", refuse)
    assert inst.host_id != "v1"
    with operation_pausing(svc, "v1"):
        r = api.post("/1.0/instances/v1/exec", json={"command": ["true"]})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "cannot exec instance 'v1': it is paused", r.text


def test_a_deleted_instance_leaves_no_lock_behind(api: TestClient, svc: Services) -> None:
    """Each name once used kept a lock and a count for the daemon's life (the NIC soak's
    heap grew by them, 2 objects a cycle); a delete lets them go."""
    for i in range(3):
        launch(api, f"gone{i}")
        svc.instances.refresh(svc.store.get_instance("default", f"gone{i}"))
        op = wait_op(api, api.delete(f"/1.0/instances/gone{i}", params={"force": "true"}))
        assert op["status"] == "success", op
    left = [k for k in (*svc.instances._locks, *svc.instances._turns) if "gone" in k]
    assert left == []


def test_an_instance_deleted_during_a_round_ends_nothing(
        api: TestClient, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleted between the watchdog's list and its look at it (its process gone, its row
    too): the round goes on to the others instead of failing."""
    launch(api, "v1")
    launch(api, "v2")

    def deleted_meanwhile(real: Callable[[str], RunState], host_id: str) -> RunState:
        op = wait_op(api, api.delete("/1.0/instances/v1", params={"force": "true"}))
        assert op["status"] == "success", op
        return real(host_id)

    first_look(svc, monkeypatch, "v1", deleted_meanwhile)
    assert Watchdog(svc.instances, svc.networks, interval=0).check() == []
    assert stored(svc, "v2") == State.RUNNING


def test_an_exit_read_before_an_operation_that_ran_meanwhile_is_not_recorded(
        api: TestClient, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog read "gone" (an ephemeral instance just placed here, not recreated
    yet), then the recreate ran whole before it recorded the end: the instance runs, and
    marking it stopped would have the watchdog clear (kill) what the recreate started."""
    launch(api, "v1")
    inst = svc.store.get_instance("default", "v1")
    real_state = svc.instances.drivers[inst.type].state

    def gone_then_recreated(real: Callable[[str], RunState], host_id: str) -> RunState:
        with svc.instances._locked(inst):   # the recreate: an operation, begun and
            pass                            # ended before the refresh records
        return RunState(RunStatus.MISSING)

    first_look(svc, monkeypatch, "v1", gone_then_recreated)
    assert Watchdog(svc.instances, svc.networks, interval=0).check() == []
    assert stored(svc, "v1") == State.RUNNING
    assert real_state(inst.host_id).status == RunStatus.RUNNING
