"""What the placement engine is asked (a launch, an instance that exists), join tokens
as text, and the cluster's settings."""

from __future__ import annotations

import pytest

from cumulo.cluster import settings
from cumulo.cluster.membership import JoinToken
from cumulo.errors import InvalidInputError


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


def test_settings_are_checked_in_one_line() -> None:
    assert settings.check("rebalance.threshold", "0.05") == "0.05"
    assert settings.check("rebalance.batch", "2") == "2"
    assert settings.check("placement.strategy", " compact") == "compact"
    assert settings.strategy({}) == "spread"
    for key, value, words in [
        ("rebalance.speed", "1", "unknown cluster setting 'rebalance.speed': one of"),
        ("rebalance.batch", "1.5", "rebalance.batch must be a whole number, not '1.5'"),
        ("rebalance.batch", "0", "rebalance.batch must be at least 1"),
        ("rebalance.cooldown", "-1", "rebalance.cooldown must be zero or more"),
        ("rebalance.threshold", "high", "rebalance.threshold must be a number"),
        ("placement.strategy", "pack", "placement.strategy must be one of spread, compact,"
                                       " not 'pack'"),
    ]:
        with pytest.raises(InvalidInputError, match=words.replace(".", r"\.")):
            settings.check(key, value)
