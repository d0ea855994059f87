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


def test_a_refusal_is_said_on_the_store_as_it_is_now(members: MemberStore) -> None:
    """A scheduler whose copy saw m2 evacuated (up to max_age old) still places on it once
    m2 is restored: it re-reads before it refuses; a real refusal stays one."""
    three(members)
    members.update("m2", state="evacuated")
    scheduler = Scheduler(members, max_age=3600)
    target = Request(Resources(1, GiB), target="m2")
    with pytest.raises(NoMemberFits, match="1 evacuated"):
        scheduler.allocate("default", "early", target)
    members.update("m2", state="online")   # restored, by another member
    assert scheduler.allocate("default", "held", target) == "m2"
    with pytest.raises(NoMemberFits, match="lack memory"):
        scheduler.allocate("default", "big", Request(Resources(1, 64 * GiB)))


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
    with pytest.raises(LostRace, match="m2 has 7 CPU, 1.0GiB memory"):
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


def test_move_keeps_a_strict_spread_group_apart(members: MemberStore) -> None:
    three(members)
    members.create_group("default", "web", "spread", strict=True)
    for name, member in (("w1", "m1"), ("w2", "m2")):
        members.allocate("default", name, Request(Resources(1, GiB),
                                                  placement_group=PlacementGroup("web")),
                         [member])
    with pytest.raises(LostRace, match="m2 already hosts one of placement group web"):
        members.move("default", "w1", "m2")
    assert members.move("default", "w1", "m3").member == "m3"
    # an undo puts it back unchecked (its member may be evacuated by now)
    members.update("m1", state="evacuated")
    assert members.move("default", "w1", "m1", check=False).member == "m1"
    assert members.allocation("default", "w1") is not None
    assert members.allocation("default", "nope") is None


def test_relocate_chooses_by_the_engine_and_undo_puts_it_back(members: MemberStore) -> None:
    """An instance of an evacuated member goes where the engine says (the evacuated
    member excluded by its filters), its allocation moved in one transaction; undo
    brings it back; one that had none gets one; nobody fits: one line which filter."""
    from cumulo.cluster.choose import request_for
    from cumulo.domain.limits import Limits
    from cumulo.domain.models import Instance

    three(members)
    sched = Scheduler(members)
    members.allocate("default", "big", Request(Resources(1, 3 * GiB)), ["m2"])
    members.allocate("default", "a", Request(Resources(1, GiB)), ["m1"])
    members.update("m1", state="evacuated")
    inst = Instance(project="default", name="a", type="container", image="x")
    req = request_for(inst, members.allocation("default", "a"))
    assert req.resources == Resources(1, GiB)
    dest, before = sched.relocate("default", "a", req)
    assert dest == "m3" and before is not None and before.member == "m1"   # m2: fuller
    sched.undo("default", "a", before)
    assert members.get("m1").used.memory == GiB and members.get("m3").instances == 0
    # made before the cluster: no allocation; its limits count, one is made
    old = Instance(project="default", name="old", type="container", image="x",
                   limits=Limits(memory=2 * GiB))
    dest, before = sched.relocate("default", "old", request_for(old, None))
    assert (dest, before) == ("m3", None)
    sched.undo("default", "old", before)
    assert members.allocation("default", "old") is None
    huge = Instance(project="default", name="huge", type="container", image="x",
                    limits=Limits(memory=8 * GiB))
    with pytest.raises(NoMemberFits, match=r"no member can host this instance: 1"
                                           r" evacuated, 2 lack memory \(needs 8.0GiB\)"):
        sched.relocate("default", "huge", request_for(huge, None))


def test_cluster_settings_and_rounds(store_url: str) -> None:
    """Settings are kept as checked text; a round is taken by one member at a time,
    then not again before the cooldown."""
    from cumulo.cluster import settings
    from cumulo.store.cluster import ClusterStore

    s = Store(store_url)
    try:
        cs = ClusterStore(s.db)
        assert cs.config() == {}
        cs.set_config("rebalance.interval", settings.check("rebalance.interval", "2"))
        assert settings.Rebalance.of(cs.config()).interval == 2.0
        cs.set_config("rebalance.interval", None)
        assert settings.Rebalance.of(cs.config()) == settings.Rebalance()
        # the scheduler reads its strategy from the store at each placement
        members = MemberStore(s.db)
        three(members)
        sched = Scheduler(members, strategy_of=lambda: settings.strategy(cs.config()))
        first = sched.allocate("default", "a", Request(Resources(1, GiB)))
        assert sched.allocate("default", "b", Request(Resources(1, GiB))) != first
        cs.set_config("placement.strategy", settings.check("placement.strategy", "compact"))
        sched.forget()
        assert sched.allocate("default", "c", Request(Resources(1, GiB))) == \
            sched.allocate("default", "d", Request(Resources(1, GiB)))
        cs.set_config("placement.strategy", None)
        assert cs.take_round("rebalance", cooldown=3600)
        assert not cs.take_round("rebalance", cooldown=3600)
        assert cs.take_round("rebalance", cooldown=0)
        assert cs.config() == {}   # the round's mark is no setting
    finally:
        s.close()


def test_forgetting_a_member_takes_its_allocations_along(store_url: str) -> None:
    """`cumulo cluster remove --force`: the member's row, its allocations and its join
    tokens go in one transaction; the instances still located there are named (their
    rows are the caller's to delete)."""
    from cumulo.domain.models import Image, Instance
    from cumulo.store.cluster import ClusterStore

    s = Store(store_url)
    try:
        cs = ClusterStore(s.db)
        three(cs.members)
        s.put_image(Image(fingerprint="i" * 64, aliases=[], size=1))
        s.add_instance(Instance(project="default", name="x", type="container",
                                image="i" * 64, location="m2"))
        s.add_instance(Instance(project="default", name="y", type="container",
                                image="i" * 64, location="m1", origin="m2"))
        cs.members.allocate("default", "x", Request(Resources(1, GiB)), ["m2"])
        assert cs.forget_member("m2") == [("default", "x")]
        assert [m.name for m in cs.members.members()] == ["m1", "m3"]
        assert cs.members.allocations() == []
        assert s.get_instance("default", "y").origin is None
        with pytest.raises(NotFoundError):
            cs.forget_member("m2")
    finally:
        s.close()
