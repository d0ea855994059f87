"""What the scheduler reasons about, as plain data (no numpy here, so the store, the
API and the daemon's start do not pay for it): member states and policies, resources,
members, placement groups, a request, and the error when nobody fits."""

from __future__ import annotations

from dataclasses import dataclass, field

from cumulo.errors import ConflictError, InvalidInputError

ONLINE, OFFLINE, EVACUATED = "online", "offline", "evacuated"
STATES = (ONLINE, OFFLINE, EVACUATED)
SPREAD, COMPACT = "spread", "compact"
POLICIES = (SPREAD, COMPACT)


@dataclass(frozen=True)
class Resources:
    """CPUs, memory and disk (bytes): a capacity, a declared usage or a request."""

    cpus: float = 0.0
    memory: int = 0
    disk: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpus + other.cpus, self.memory + other.memory,
                         self.disk + other.disk)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpus - other.cpus, self.memory - other.memory,
                         self.disk - other.disk)

    def fits_in(self, free: Resources) -> bool:
        return (self.cpus <= free.cpus + 1e-9 and self.memory <= free.memory
                and self.disk <= free.disk)


@dataclass(frozen=True)
class Member:
    """What the scheduler knows of one member (the store's ``members`` row, summed)."""

    name: str
    capacity: Resources
    used: Resources = Resources()       # declared by the instances placed on it
    instances: int = 0
    state: str = ONLINE
    architecture: str = "x86_64"
    features: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    placement_groups: dict[str, int] = field(default_factory=dict)  # group -> instances here

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise InvalidInputError(f"member {self.name!r}: unknown state {self.state!r}"
                                    f" (one of {', '.join(STATES)})")


@dataclass(frozen=True)
class PlacementGroup:
    """Instances that should be apart (``spread``: anti-affinity) or together
    (``compact``); ``strict``: a rule, else a preference."""

    name: str
    policy: str = SPREAD
    strict: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise InvalidInputError(f"unknown placement policy {self.policy!r}: use spread"
                                    " or compact")


@dataclass(frozen=True)
class Request:
    """One instance to place."""

    resources: Resources = Resources()
    type: str = "container"
    architecture: str | None = None
    features: frozenset[str] = frozenset()
    target: str | None = None           # a member's name, or "@group"
    placement_group: PlacementGroup | None = None


class NoMemberFits(ConflictError):
    """Nobody passes the filters; ``excluded`` maps each reason to how many members."""

    def __init__(self, excluded: dict[str, int], where: str = "",
                 subject: str = "this instance", prefix: str = "") -> None:
        self.excluded = dict(excluded)
        parts = ", ".join(f"{n} {reason}" for reason, n in excluded.items()) or "no members"
        super().__init__(f"{prefix}no member{where} can host {subject}: {parts}")
