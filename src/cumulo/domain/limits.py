"""Resource limits of an instance, validated against the host's capacity."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from cumulo.domain.units import parse_size
from cumulo.errors import InvalidInputError, LimitExceedsHostError

MIN_MEMORY = 4 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What an instance may use. ``None`` means unlimited (the host's default)."""

    cpu: float | None = None          # CPUs worth of time (CFS quota); fractions allowed
    cpu_weight: int | None = None     # relative share, 1..10000 (cgroup v2 scale, default 100)
    cpuset: str | None = None         # CPUs it may run on, e.g. "0-1" or "0,2"
    memory: int | None = None         # bytes
    memory_swap: int | None = None    # bytes of memory+swap; None = same as memory
    pids: int | None = None           # max processes/threads
    io_weight: int | None = None      # relative block I/O share, 10..1000

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidInputError(f"unknown limit(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def merged(self, **changes: Any) -> Limits:
        return replace(self, **changes)


def parse_cpuset(text: str) -> set[int]:
    """The CPU numbers named by ``0-2,4``."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            lo, dash, hi = part.strip().partition("-")
            a, b = int(lo), int(hi) if dash else int(lo)
            if a < 0 or b < a:
                raise ValueError
            cpus.update(range(a, b + 1))
    except ValueError:
        raise InvalidInputError(f"invalid cpuset {text!r}: use a list like 0-1,3") from None
    return cpus


def parse_limit(key: str, value: str) -> Any:
    """One limit from its text form, as typed on the command line or in the API."""
    try:
        if key == "cpu":
            return float(value)
        if key in ("cpu_weight", "pids", "io_weight"):
            return int(value)
    except ValueError:
        raise InvalidInputError(f"invalid value {value!r} for {key}") from None
    if key in ("memory", "memory_swap"):
        return parse_size(value)
    if key == "cpuset":
        parse_cpuset(value)
        return value
    raise InvalidInputError(
        f"unknown limit {key!r}: use cpu, cpu_weight, cpuset, memory, memory_swap,"
        " pids or io_weight"
    )


def validate_limits(limits: Limits, host_cpus: int, host_memory: int) -> Limits:
    """Refuse values that are malformed or beyond this host."""
    if limits.cpu is not None:
        if limits.cpu <= 0:
            raise InvalidInputError(f"invalid cpu {limits.cpu}: must be more than 0")
        if limits.cpu > host_cpus:
            raise LimitExceedsHostError("cpu", limits.cpu, f"{host_cpus} CPUs")
    if limits.cpu_weight is not None and not 1 <= limits.cpu_weight <= 10000:
        raise InvalidInputError(f"invalid cpu_weight {limits.cpu_weight}: use 1..10000")
    if limits.cpuset is not None:
        bad = sorted(c for c in parse_cpuset(limits.cpuset) if c >= host_cpus)
        if bad:
            raise LimitExceedsHostError("cpuset", limits.cpuset, f"CPUs 0-{host_cpus - 1}")
    for key in ("memory", "memory_swap"):
        value = getattr(limits, key)
        if value is None:
            continue
        if value < MIN_MEMORY:
            raise InvalidInputError(f"invalid {key} {value}: at least 4MiB")
        if key == "memory" and value > host_memory:
            raise LimitExceedsHostError("memory", value, f"{host_memory} bytes")
    if limits.memory_swap is not None and (
            limits.memory is None or limits.memory_swap < limits.memory):
            raise InvalidInputError("memory_swap needs memory, and must be at least memory")
    if limits.pids is not None and limits.pids < 1:
        raise InvalidInputError(f"invalid pids {limits.pids}: at least 1")
    if limits.io_weight is not None and not 10 <= limits.io_weight <= 1000:
        raise InvalidInputError(f"invalid io_weight {limits.io_weight}: use 10..1000")
    return limits
