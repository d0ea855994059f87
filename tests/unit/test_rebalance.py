"""The rebalancer (cumulo.cluster.rebalance): greedy, bounded, fewest moves, placement
groups respected, never overcommitting; and its dry-run lines."""

from __future__ import annotations

import pytest

from cumulo.cluster.placement import EVACUATED, Member, PlacementGroup, Resources
from cumulo.cluster.rebalance import Placed, plan, score, weighed

GiB = 1 << 30


def cluster(spec: dict[str, list[int]], cap: int = 16, **states: str
            ) -> tuple[list[Member], list[Placed]]:
    """Members named by ``spec``, each with instances of the given GiB."""
    members, placed = [], []
    for name, sizes in spec.items():
        used = Resources(len(sizes), sum(sizes) * GiB, 0)
        members.append(Member(name, Resources(64, cap * GiB, 1 << 40), used, len(sizes),
                              state=states.get(name, "online")))
        placed += [Placed(f"{name}-{i}", name, Resources(1, s * GiB, 0))
                   for i, s in enumerate(sizes)]
    return members, placed


def test_a_balanced_cluster_needs_no_move() -> None:
    members, placed = cluster({"a": [2, 2], "b": [4], "c": [1, 1, 1, 1]})
    p = plan(members, placed)
    assert p.moves == [] and p.before == p.after == 0.0


def test_one_large_instance_moves_rather_than_several_small() -> None:
    members, placed = cluster({"a": [4, 1, 1, 1, 1], "b": []})
    p = plan(members, placed)
    assert [(m.instance, m.source, m.target) for m in p.moves] == [("a-0", "a", "b")]
    assert p.before == 0.25 and p.after == 0.0
    assert p.describe()[-1] == "imbalance 0.2500 -> 0.0000 with 1 move(s)"


def test_a_restored_member_fills_up_with_the_fewest_moves() -> None:
    # after an evacuation and restore: c is empty, a and b hold its former instances
    members, placed = cluster({"a": [1] * 6, "b": [1] * 6, "c": []})
    p = plan(members, placed, max_moves=10)
    assert len(p.moves) == 4 and {m.target for m in p.moves} == {"c"}
    assert p.after == 0.0 < p.before
    assert score(members) == p.before


def test_moves_are_bounded_and_stop_below_the_minimum_gain() -> None:
    members, placed = cluster({"a": [1] * 8, "b": [], "c": [], "d": []})
    assert len(plan(members, placed, max_moves=2).moves) == 2
    assert plan(members, placed, min_gain=1.0).moves == []


def test_never_overcommits_and_skips_members_not_online() -> None:
    members, placed = cluster({"a": [12], "b": [8], "c": [1]}, e=EVACUATED)
    members.append(Member("e", Resources(64, 64 * GiB, 1 << 40), state=EVACUATED))
    p = plan(members, placed)
    for m in p.moves:   # 12 GiB fits nowhere else; e is evacuated
        assert m.target != "e" and m.instance != "a-0"


def test_placement_groups_are_respected() -> None:
    web = PlacementGroup("web", strict=True)
    db = PlacementGroup("db", policy="compact")
    members, _ = cluster({"a": [1, 1, 4, 4], "b": [1], "c": []})
    placed = [Placed("web-1", "a", Resources(1, GiB), web),
              Placed("web-2", "b", Resources(1, GiB), web),
              Placed("db-1", "a", Resources(1, 4 * GiB), db),
              Placed("db-2", "a", Resources(1, 4 * GiB), db),
              Placed("x", "a", Resources(1, GiB))]
    p = plan(members, placed, max_moves=5)
    moved = {m.instance: m.target for m in p.moves}
    assert "db-1" not in moved and "db-2" not in moved     # compact: stays together
    assert moved.get("web-1") in (None, "c")               # never onto b (has web-2)
    assert p.after < p.before


def test_evacuation_places_each_instance_elsewhere_largest_first() -> None:
    from cumulo.cluster import evacuation
    from cumulo.cluster.model import NoMemberFits, Request

    members, _ = cluster({"a": [8, 1, 1], "b": [4], "c": [2]})
    reqs = [("big", Request(Resources(1, 8 * GiB))), ("s1", Request(Resources(1, GiB))),
            ("s2", Request(Resources(1, GiB)))]
    moves = evacuation.plan(members, "a", reqs)
    assert moves[0] == ("big", "c")            # the largest first, to the emptiest
    assert {t for _, t in moves} <= {"b", "c"}
    # the last member cannot be evacuated: one line naming the instance and why
    alone, _ = cluster({"a": [1]})
    with pytest.raises(NoMemberFits, match=r"^cannot evacuate a: no member can host"
                                           r" instance 'web': 1 evacuated$"):
        evacuation.plan(alone, "a", [("web", Request(Resources(1, GiB)))])


def test_instances_without_memory_weigh_their_types_default() -> None:
    """Six VMs launched without --memory on a: declared 0, so nothing to move; weighed at
    their default (256 MiB each) a is the fullest and half of them move."""
    MiB = 1 << 20
    cap = Resources(64, 4 * GiB, 1 << 40)
    members = [Member("a", cap, Resources(6, 0, 0), 6), Member("b", cap), Member("c", cap)]
    placed = [Placed(f"vm{i}", "a", Resources(1, 0, 0)) for i in range(6)]
    assert plan(members, placed).moves == []
    types = {f"vm{i}": "vm" for i in range(6)}
    wm, wp = weighed(members, placed, types, {"vm": 256 * MiB, "container": 64 * MiB})
    assert [m.used.memory for m in wm] == [6 * 256 * MiB, 0, 0]
    assert {p.resources.memory for p in wp} == {256 * MiB}
    p = plan(wm, wp)
    assert len(p.moves) == 4 and p.after == 0.0
    assert sorted(m.target for m in p.moves) == ["b", "b", "c", "c"]
    # an unknown type (or one with its memory declared) keeps what it declares
    _, kept = weighed(members, [Placed("x", "a", Resources(1, 0, 0)),
                                Placed("y", "a", Resources(1, GiB, 0))], {"y": "vm"},
                      {"vm": 256 * MiB})
    assert [q.resources.memory for q in kept] == [0, GiB]
