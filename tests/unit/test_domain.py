"""Sizes, names, limits and the lifecycle table: pure functions, no I/O."""

from __future__ import annotations

import pytest

from cumulo.domain.lifecycle import ALLOWED, Action, State, guard
from cumulo.domain.limits import Limits, parse_cpuset, parse_limit, validate_limits
from cumulo.domain.units import format_size, parse_size, validate_name
from cumulo.errors import InvalidInputError, InvalidStateError, LimitExceedsHostError

GiB = 1024**3


@pytest.mark.parametrize(("text", "expected"), [
    ("256MiB", 256 * 1024**2), ("1GB", 10**9), ("1.5GiB", int(1.5 * GiB)), ("4096", 4096),
    ("64 mib", 64 * 1024**2), (123, 123),
])
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["12XB", "", "MiB", "-5MiB", "1e9", "five"])
def test_parse_size_refuses(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid size"):
        parse_size(bad)


def test_format_size() -> None:
    assert format_size(256 * 1024**2) == "256.0MiB"
    assert format_size(None) == "-"


@pytest.mark.parametrize("good", ["web", "a", "web-1", "0db", "x" * 63])
def test_valid_names(good: str) -> None:
    assert validate_name(good) == good


@pytest.mark.parametrize("bad", ["", "Web", "-web", "web-", "a_b", "../etc", "a/b", "x" * 64,
                                 "a.b", "web ", "ünï"])
def test_invalid_names(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid instance name"):
        validate_name(bad)


def test_guard_follows_table() -> None:
    for action, allowed in ALLOWED.items():
        for state in State:
            if state in allowed:
                guard("x", state, action)
            else:
                with pytest.raises(InvalidStateError, match=f"cannot {action.value}"):
                    guard("x", state, action)


def test_guard_examples() -> None:
    with pytest.raises(InvalidStateError, match="it is running"):
        guard("web", State.RUNNING, Action.START)
    with pytest.raises(InvalidStateError):
        guard("web", State.STOPPED, Action.EXEC)
    with pytest.raises(InvalidStateError):
        guard("web", State.RUNNING, Action.DELETE)


def test_limits_beyond_host() -> None:
    with pytest.raises(LimitExceedsHostError, match="cpu 4"):
        validate_limits(Limits(cpu=4), host_cpus=2, host_memory=GiB)
    with pytest.raises(LimitExceedsHostError, match="memory"):
        validate_limits(Limits(memory=2 * GiB), host_cpus=2, host_memory=GiB)
    with pytest.raises(LimitExceedsHostError, match="cpuset"):
        validate_limits(Limits(cpuset="0-3"), host_cpus=2, host_memory=GiB)


@pytest.mark.parametrize("limits", [
    Limits(cpu=0), Limits(cpu_weight=0), Limits(cpu_weight=10001), Limits(memory=1024),
    Limits(pids=0), Limits(io_weight=5), Limits(memory_swap=64 * 1024**2),
    Limits(memory=128 * 1024**2, memory_swap=64 * 1024**2),
])
def test_limits_refused(limits: Limits) -> None:
    with pytest.raises(InvalidInputError):
        validate_limits(limits, host_cpus=2, host_memory=GiB)


def test_limits_accepted_and_roundtrip() -> None:
    lim = Limits(cpu=0.5, cpu_weight=200, cpuset="0", memory=64 * 1024**2, pids=50)
    assert validate_limits(lim, 2, GiB) is lim
    assert Limits.from_dict(lim.to_dict()) == lim
    with pytest.raises(InvalidInputError, match="unknown limit"):
        Limits.from_dict({"disk": 1})


def test_parse_limit_and_cpuset() -> None:
    assert parse_limit("memory", "128MiB") == 128 * 1024**2
    assert parse_limit("cpu", "1.5") == 1.5
    assert parse_cpuset("0-2,4") == {0, 1, 2, 4}
    for bad in ("2-1", "a", "1-"):
        with pytest.raises(InvalidInputError):
            parse_cpuset(bad)
    with pytest.raises(InvalidInputError, match="unknown limit"):
        parse_limit("swap", "1")
