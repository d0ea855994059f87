"""The placement engine (cumulo.cluster.placement): filters, scores, sampling, and the
one-line error that says which filter excluded how many members."""

from __future__ import annotations

import pytest

from cumulo.cluster.placement import (
    COMPACT,
    EVACUATED,
    OFFLINE,
    Inventory,
    Member,
    NoMemberFits,
    PlacementGroup,
    Request,
    Resources,
    sample_size,
)
from cumulo.errors import NotFoundError

GiB = 1 << 30


def member(name: str, mem: int = 16, cpus: float = 8, used: int = 0, n: int = 0,
           **kw: object) -> Member:
    return Member(name=name, capacity=Resources(cpus, mem * GiB, 100 * GiB),
                  used=Resources(0, used * GiB, 0), instances=n, **kw)  # type: ignore[arg-type]


def req(mem: int = 1, **kw: object) -> Request:
    return Request(resources=Resources(1, mem * GiB, GiB), **kw)  # type: ignore[arg-type]


def test_spread_prefers_least_memory_use_then_fewest_instances() -> None:
    inv = Inventory([member("a", used=8), member("b", used=2, n=5), member("c", used=2, n=1)])
    assert inv.candidates(req()) == ["c", "b", "a"]
    # by fraction of capacity: 4 of 32 GiB beats 2 of 16
    inv.put([member("d", mem=32, used=4, n=9)])
    assert inv.candidates(req())[0] == "d"


def test_compact_fills_the_fullest_member_that_still_fits() -> None:
    inv = Inventory([member("a", used=8), member("b", used=14), member("c")],
                    strategy=COMPACT)
    assert inv.candidates(req(1)) == ["b", "a", "c"]
    assert inv.candidates(req(4)) == ["a", "c"]   # b has only 2 GiB left


def test_spread_fills_evenly_and_never_overcommits() -> None:
    inv = Inventory([member(f"m{i}", mem=4) for i in range(3)])
    placed = [inv.place(req(1)) for _ in range(12)]
    assert sorted(placed.count(f"m{i}") for i in range(3)) == [4, 4, 4]
    with pytest.raises(NoMemberFits) as err:
        inv.place(req(1))
    assert str(err.value) == ("no member can host this instance: 3 lack memory (needs"
                              " 1.0GiB)")


def test_the_error_says_which_filter_excluded_how_many() -> None:
    inv = Inventory([member("a", state=OFFLINE), member("b", state=OFFLINE),
                     member("c", state=EVACUATED), member("d", mem=2),
                     member("e", architecture="aarch64"), member("f", features=frozenset())])
    with pytest.raises(NoMemberFits) as err:
        inv.candidates(req(4, architecture="x86_64", features=frozenset({"kvm"})))
    assert str(err.value) == (
        "no member can host this instance: 2 offline, 1 evacuated, 1 is another"
        " architecture (needs x86_64), 2 lack kvm")
    assert err.value.excluded["offline"] == 2
    # each member is counted once, under the first filter that excludes it
    inv.put([member("d", mem=2, features=frozenset({"kvm"})),
             member("f", features=frozenset({"kvm"}), used=15)])
    with pytest.raises(NoMemberFits) as err:
        inv.candidates(req(4, features=frozenset({"kvm"})))
    assert str(err.value).endswith("1 lacks kvm, 2 lack memory (needs 4.0GiB)")


def test_targets_a_member_or_a_group() -> None:
    inv = Inventory([member("a", groups=frozenset({"gpu"})), member("b"),
                     member("c", groups=frozenset({"gpu"}), state=OFFLINE)])
    assert inv.candidates(req(target="b")) == ["b"]
    assert inv.candidates(req(target="@gpu")) == ["a"]
    with pytest.raises(NoMemberFits, match=r"^no member \(target c\) can host this"
                                           r" instance: 1 offline$"):
        inv.candidates(req(target="c"))
    with pytest.raises(NotFoundError):
        inv.candidates(req(target="zz"))
    with pytest.raises(NotFoundError):
        inv.candidates(req(target="@nope"))


def test_placement_groups_spread_and_compact() -> None:
    inv = Inventory([member(f"m{i}") for i in range(3)])
    web = PlacementGroup("web", strict=True)
    first = [inv.place(req(placement_group=web)) for _ in range(3)]
    assert sorted(first) == ["m0", "m1", "m2"]    # one each
    with pytest.raises(NoMemberFits, match="3 already host one of placement group web"
                                           r" \(strict spread\)"):
        inv.place(req(placement_group=web))
    soft = PlacementGroup("soft")
    assert len({inv.place(req(placement_group=soft)) for _ in range(3)}) == 3
    assert inv.place(req(placement_group=soft))   # a preference: a fourth still goes

    inv = Inventory([member(f"m{i}", mem=4) for i in range(3)])
    db = PlacementGroup("db", policy=COMPACT, strict=True)
    where = {inv.place(req(placement_group=db)) for _ in range(4)}
    assert len(where) == 1                        # all together
    with pytest.raises(NoMemberFits, match=r"1 lacks memory \(needs 1.0GiB\), 2 do not"
                                           r" host placement group db \(strict compact\)$"):
        inv.place(req(placement_group=db))


def test_large_clusters_score_a_sample_round_robin() -> None:
    assert sample_size(50) == 50
    assert sample_size(1000) == 420               # 42 %
    assert sample_size(10_000) == 500             # 5 %, at least 100
    inv = Inventory([member(f"m{i:05}") for i in range(10_000)])
    seen = {inv.place(req(0)) for _ in range(100)}
    # without sampling the same best member (the first) would win each time; here the
    # window moves on, so the placements land on many members
    assert len(seen) > 50
    # a sampled placement still finds the one member that fits
    inv.put([member(f"m{i:05}", used=16) for i in range(10_000) if i != 7777])
    assert inv.candidates(req(1)) == ["m07777"]
