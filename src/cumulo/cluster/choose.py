"""Where a new instance goes: at launch the placement engine (``scheduled``: filters,
scores, placement groups, the allocation transaction of services/placement.py);
``choose_member``, the simple spread rule, still picks an evacuated instance's member."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from cumulo.cluster.model import PlacementGroup, Request, Resources
from cumulo.domain.units import parse_size
from cumulo.errors import ConflictError, InvalidInputError
from cumulo.store.cluster import ONLINE, Member, Usage

if TYPE_CHECKING:
    from cumulo.cluster.membership import Membership
    from cumulo.services.placement import Scheduler

# (project, the launch request's body, --target or None) -> the member that runs it
Place = Callable[[str, dict[str, Any], str | None], str]


def choose_member(members: Iterable[Member], usage: dict[str, Usage], offline_after: float,
                  exclude: Iterable[str] = ()) -> str:
    """The online member with the least declared memory, then the fewest instances,
    then the first by name; ``exclude``: members that may not take it."""
    skip = set(exclude)
    candidates = [m for m in members
                  if m.name not in skip and m.effective(offline_after) == ONLINE]
    if not candidates:
        raise ConflictError("no online member can take the instance"
                            + (f" (besides {', '.join(sorted(skip))})" if skip else ""))

    def key(m: Member) -> tuple[int, int, str]:
        u = usage.get(m.name, Usage())
        return (u.memory, u.instances, m.name)

    return min(candidates, key=key).name


def request_of(body: dict[str, Any], target: str | None) -> Request:
    """What the engine needs of a launch request: its declared limits, its type (a
    member must offer it), ``--target`` (a member or ``@GROUP``), its placement group."""
    limits = body.get("limits") or {}
    try:
        memory = limits.get("memory")
        res = Resources(float(limits.get("cpu") or 0),
                        parse_size(str(memory)) if memory not in (None, "") else 0)
    except (TypeError, ValueError, InvalidInputError):
        res = Resources()   # the route says what is wrong with them
    type_ = str(body.get("type") or "container")
    group = body.get("placement_group")
    return Request(resources=res, type=type_, features=frozenset({f"type:{type_}"}),
                   target=target or None,
                   placement_group=PlacementGroup(str(group)) if group else None)


def scheduled(cluster: Membership, scheduler: Scheduler) -> Place:
    """The placement at launch: the engine chooses among the members ``--target`` allows
    and records the allocation (released again if the launch fails)."""
    def place(project: str, body: dict[str, Any], target: str | None) -> str:
        if target and not target.startswith("@"):
            m = cluster.store.get_member(target)   # 404 for an unknown one
            if cluster.state_of(m) != ONLINE:
                raise ConflictError(f"member {target!r} is {cluster.state_of(m)}"
                                    + (f" (silent for {m.silent:.0f} s)"
                                       if cluster.state_of(m) == "offline" else "")
                                    + ": it takes no new instance")
        return scheduler.allocate(project, str(body.get("name") or ""),
                                  request_of(body, target))
    return place
