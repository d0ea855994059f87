"""A live migration with a root disk mirror: when the send fails (the link stalled), its
error is the one the user sees, even when ending the abandoned mirror fails too (QEMU
waiting on the NBD connection answers no QMP); a failed end after a good send is an
error of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cumulo.drivers.vm import migration, qmp
from cumulo.errors import DriverError

SOCK = Path("/nonexistent/qmp.sock")


def fake(monkeypatch: pytest.MonkeyPatch, send_fails: bool, end_fails: bool) -> list[str]:
    calls: list[str] = []

    def mirror_disk(*a: Any, **kw: Any) -> None:
        calls.append("mirror")

    def send(*a: Any, **kw: Any) -> migration.MigrationStats:
        calls.append("send")
        if send_fails:
            raise DriverError("the migration stalled (nothing went through for 30s)")
        return migration.MigrationStats(status="completed")

    def end_mirror(sock: Path, force: bool = False) -> None:
        calls.append(f"end force={force}")
        if end_fails:
            raise DriverError("QMP query-block-jobs failed: QEMU did not answer in 5s")

    monkeypatch.setattr(migration, "mirror_disk", mirror_disk)
    monkeypatch.setattr(migration, "send", send)
    monkeypatch.setattr(migration, "end_mirror", end_mirror)
    return calls


def run() -> migration.MigrationStats:
    return migration.send_with_disk(SOCK, "root", "tcp:10.0.0.2:1", "nbd:10.0.0.2:2",
                                    lambda f, m: None, lambda: False, live=True)


def test_the_stall_is_reported_not_the_mirror_that_could_not_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake(monkeypatch, send_fails=True, end_fails=True)
    with pytest.raises(DriverError, match="stalled"):
        run()
    assert calls == ["mirror", "send", "end force=True"]


def test_a_mirror_that_cannot_end_after_a_good_send_is_an_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake(monkeypatch, send_fails=False, end_fails=True)
    with pytest.raises(DriverError, match="query-block-jobs"):
        run()
    assert calls == ["mirror", "send", "end force=False"]


def test_a_good_send_ends_the_mirror_in_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake(monkeypatch, send_fails=False, end_fails=False)
    assert run().status == "completed"
    assert calls == ["mirror", "send", "end force=False"]


def test_a_qemu_that_stops_answering_while_sending_is_a_stall(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """QEMU blocked on the cut link answers no query-migrate: after the stall time the
    send ends with the stall (the recovery settles the migration once QEMU answers), not
    with the first QMP timeout."""
    asked: list[str] = []
    for name in ("migrate_set_capabilities", "migrate_set_parameters", "migrate",
                 "migrate_cancel"):
        monkeypatch.setattr(qmp, name, lambda *a, n=name, **kw: asked.append(n))

    def stats(sock: Path) -> migration.MigrationStats:
        asked.append("query-migrate")
        raise qmp.QmpTimeout("QMP query-migrate failed: QEMU did not answer in 5s")

    monkeypatch.setattr(migration, "_stats", stats)
    monkeypatch.setattr(migration, "STALL_TIMEOUT", 0.3)
    monkeypatch.setattr(migration, "POLL", 0.01)
    with pytest.raises(DriverError, match="stalled .* QEMU does not answer"):
        migration.send(SOCK, "tcp:10.0.0.2:1", live=True)
    assert asked.count("query-migrate") > 1 and "migrate_cancel" not in asked


def test_a_qemu_that_stops_answering_when_the_stall_is_cancelled_is_a_stall(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """QEMU answered query-migrate (nothing moving), then blocked before migrate_cancel:
    the user is told it stalled, not that a QMP command timed out."""
    for name in ("migrate_set_capabilities", "migrate_set_parameters", "migrate"):
        monkeypatch.setattr(qmp, name, lambda *a, **kw: None)

    def cancel(sock: Path) -> None:
        raise qmp.QmpTimeout("QMP migrate_cancel failed: QEMU did not answer in 5s")

    monkeypatch.setattr(qmp, "migrate_cancel", cancel)
    monkeypatch.setattr(migration, "_stats", lambda sock: migration.MigrationStats(
        status="active", transferred=1))
    monkeypatch.setattr(migration, "STALL_TIMEOUT", 0.3)
    monkeypatch.setattr(migration, "POLL", 0.01)
    with pytest.raises(DriverError, match="stalled .* QEMU does not answer"):
        migration.send(SOCK, "tcp:10.0.0.2:1", live=True)
