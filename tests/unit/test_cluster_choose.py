"""Placement at launch without --target (spread: least declared memory, then fewest
instances) and join tokens as text."""

from __future__ import annotations

import pytest

from cumulo.cluster.choose import choose_member
from cumulo.cluster.membership import JoinToken
from cumulo.errors import ConflictError, InvalidInputError
from cumulo.store.cluster import EVACUATED, ONLINE, Member, Usage


def m(name: str, state: str = ONLINE, silent: float = 0.0) -> Member:
    return Member(name=name, address="", state=state, cpus=2, memory=1 << 30, disk=1 << 30,
                  silent=silent)


def test_spread_by_memory_then_instances() -> None:
    ms = [m("a"), m("b"), m("c")]
    usage = {"a": Usage(1, 512 << 20), "b": Usage(3, 256 << 20), "c": Usage(1, 256 << 20)}
    assert choose_member(ms, usage, 10) == "c"      # least memory; fewer than b
    assert choose_member(ms, {}, 10) == "a"         # all empty: the first by name
    assert choose_member(ms, usage, 10, exclude=["c"]) == "b"


def test_offline_and_evacuated_members_take_nothing() -> None:
    ms = [m("a", silent=30), m("b", EVACUATED), m("c")]
    assert choose_member(ms, {"c": Usage(9, 9 << 30)}, 10) == "c"
    with pytest.raises(ConflictError, match="no online member can take the instance"
                                            r" \(besides c\)"):
        choose_member(ms, {}, 10, exclude=["c"])


def test_join_token_text() -> None:
    t = JoinToken("postgresql://u@/db?host=/tmp/x", "m2", "s3cret")
    assert JoinToken.decode(t.encode()) == t
    assert t.encode().startswith("cumulo-join:")
    with pytest.raises(InvalidInputError, match="not a join token"):
        JoinToken.decode("cumulo-join:%%%")


def test_a_launch_request_for_the_placement_engine() -> None:
    from cumulo.cluster.choose import request_of
    from cumulo.cluster.model import PlacementGroup, Resources

    req = request_of({"name": "web", "type": "vm", "limits": {"cpu": 1.5, "memory": "512MiB"},
                      "placement_group": "replicas"}, "@rack1")
    assert req.resources == Resources(1.5, 512 << 20)
    assert req.type == "vm" and req.features == frozenset({"type:vm"})
    assert req.target == "@rack1"
    assert req.placement_group == PlacementGroup("replicas")
    plain = request_of({"name": "x"}, None)
    assert plain.resources == Resources() and plain.target is None
    assert plain.features == frozenset({"type:container"}) and plain.placement_group is None
    # limits the route refuses are left to it (its one-line error)
    assert request_of({"limits": {"memory": "lots"}}, None).resources == Resources()
