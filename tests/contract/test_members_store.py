"""The cluster's tables on both engines (``store_url``: a SQLite file, a PostgreSQL
database on the suite's throwaway server): members as membership writes them, and the
allocation transaction, which never overcommits a member however many launches race
for it (20 threads, each with its own stale view of the cluster, as 20 daemons)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from cumulo.cluster.placement import NoMemberFits, PlacementGroup, Request, Resources
from cumulo.errors import ConflictError, CumuloError, NotFoundError
from cumulo.services.placement import Scheduler
from cumulo.store.members import LostRace, MemberRecord, MemberStore
from cumulo.store.repo import Store
from cumulo.store.tables import utcnow

GiB = 1 << 30


@pytest.fixture
def members(store_url: str) -> Iterator[MemberStore]:
    s = Store(store_url)
    yield MemberStore(s.db)
    s.close()


def three(members: MemberStore, memory: int = 4) -> None:
    for name in ("m1", "m2", "m3"):
        members.add(MemberRecord(name=name, capacity=Resources(8, memory * GiB, 100 * GiB),
                                 address=f"{name}:8443", features={
                                     "criu": True, "kvm": False, "arch": "x86_64",
                                     "runtimes": ["runc"], "instance_types": ["container"]}))


def test_members_as_membership_writes_them(members: MemberStore) -> None:
    three(members)
    with pytest.raises(ConflictError, match="member 'm1' already exists"):
        members.add(MemberRecord(name="m1", capacity=Resources()))
    m = members.update("m2", state="evacuated", groups=frozenset({"gpu"}))
    assert (m.state, m.groups, m.address) == ("evacuated", frozenset({"gpu"}), "m2:8443")
    with pytest.raises(CumuloError, match="unknown member state"):
        members.update("m2", state="sleepy")
    with pytest.raises(NotFoundError):
        members.heartbeat("nope")
    members.heartbeat("m1")
    members.heartbeat("m3", at=utcnow() - timedelta(minutes=5))
    assert members.silent_since(utcnow() - timedelta(seconds=30)) == ["m3"]
    assert [m.name for m in members.members()] == ["m1", "m2", "m3"]
    seen = {m.name: m for m in members.scheduling()}
    assert seen["m2"].state == "evacuated" and seen["m3"].state == "online"
    assert seen["m1"].features == {"criu", "runc", "type:container"}   # kvm: False
    assert seen["m1"].architecture == "x86_64"
    # silent for longer than offline_after: offline, and no allocation goes there
    watched = MemberStore(members.db, offline_after=30)
    assert {m.name: m.state for m in watched.scheduling()}["m3"] == "offline"
    with pytest.raises(LostRace, match="m3 is offline"):
        watched.allocate("default", "x", Request(), ["m3"])
    members.remove("m3")
    assert [m.name for m in members.members()] == ["m1", "m2"]


def test_parallel_allocations_never_overcommit(members: MemberStore) -> None:
    three(members)   # 3 x 4 GiB: room for 12 instances of 1 GiB
    schedulers = [Scheduler(members, max_age=3600) for _ in range(20)]
    for s in schedulers:
        s.inventory()   # each sees the empty cluster: all aim at the same members
    start = threading.Barrier(20)
    placed: dict[str, str] = {}
    refused: list[str] = []

    def launch(i: int) -> None:
        start.wait()
        try:
            placed[f"c{i}"] = schedulers[i].allocate("default", f"c{i}",
                                                     Request(Resources(1, GiB, GiB)))
        except CumuloError as err:
            refused.append(str(err))

    threads = [threading.Thread(target=launch, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(placed) == 12 and len(refused) == 8, (placed, refused)
    for m in members.members():
        assert m.used.memory <= m.capacity.memory
        assert m.instances == 4 == sum(1 for x in placed.values() if x == m.name)
        assert m.used == Resources(4, 4 * GiB, 4 * GiB)
    assert all("\n" not in r and ("lack memory" in r or "any more" in r) for r in refused)
    assert len(members.allocations()) == 12
    # a fresh look says why, in one line
    with pytest.raises(NoMemberFits, match=r"^no member can host this instance: 3 lack"
                                           r" memory \(needs 1.0GiB\)$"):
        Scheduler(members).allocate("default", "late", Request(Resources(1, GiB, GiB)))
    # released: room again, on that member
    gone = members.release("default", next(iter(placed)))
    assert members.get(gone.member).used.memory == 3 * GiB
    assert Scheduler(members).allocate("default", "late", Request(Resources(1, GiB))) == \
        gone.member
    with pytest.raises(ConflictError, match="already has an allocation"):
        members.allocate("default", "late", Request(), ["m1"])


def test_strict_spread_holds_under_races(members: MemberStore) -> None:
    three(members, memory=64)
    members.create_group("default", "web", "spread", strict=True)
    web = PlacementGroup("web", "spread", strict=True)
    schedulers = [Scheduler(members, max_age=3600) for _ in range(6)]
    for s in schedulers:
        s.inventory()
    start = threading.Barrier(6)
    placed: list[str] = []

    def launch(i: int) -> None:
        start.wait()
        with contextlib.suppress(CumuloError):
            placed.append(schedulers[i].allocate("default", f"w{i}", Request(   # by name:
                Resources(1, GiB), placement_group=PlacementGroup("web"))))  # strict as stored

    threads = [threading.Thread(target=launch, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(placed) == ["m1", "m2", "m3"]   # one each, never two on one member
    [(group, where)] = members.list_groups("default")
    assert group == web and len(where) == 3
    with pytest.raises(ConflictError, match="placement group 'web' is used by w"):
        members.delete_group("default", "web")
    with pytest.raises(ConflictError, match="already exists"):
        members.create_group("default", "web")
    with pytest.raises(NotFoundError, match="placement group 'nope' not found"):
        Scheduler(members).allocate("default", "x", Request(placement_group=PlacementGroup(
            "nope")))
    assert len(members.allocations()) == 3


def test_move_rechecks_the_destination(members: MemberStore) -> None:
    three(members, memory=2)
    assert members.allocate("default", "a", Request(Resources(1, 2 * GiB)), ["m1"]) == "m1"
    assert members.allocate("default", "b", Request(Resources(1, GiB)), ["m2"]) == "m2"
    with pytest.raises(LostRace, match="m2 lacks the room"):
        members.move("default", "a", "m2")
    members.update("m3", state="evacuated")
    with pytest.raises(LostRace, match="m3 is evacuated"):
        members.move("default", "a", "m3")
    members.update("m3", state="online")
    moved = members.move("default", "a", "m3")
    assert moved.member == "m3"
    assert members.get("m1").used.memory == 0 and members.get("m3").instances == 1
    with pytest.raises(ConflictError, match="still hosts 1 instance"):
        members.remove("m3")
    with pytest.raises(LostRace, match="m1 has"):
        members.allocate("default", "c", Request(Resources(1, 3 * GiB)), ["m1"])
