"""What the placement engine is asked: at launch (``scheduled``: filters, scores,
placement groups, the allocation transaction of services/placement.py) and for an
instance that exists and must go elsewhere (``request_for``: evacuation, restore,
rebalance, recovery of an ephemeral one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cumulo.cluster.model import PlacementGroup, Request, Resources
from cumulo.domain.models import Instance
from cumulo.domain.units import parse_size
from cumulo.errors import ConflictError, InvalidInputError
from cumulo.store.cluster import ONLINE
from cumulo.store.members import Allocation

if TYPE_CHECKING:
    from cumulo.cluster.membership import Membership
    from cumulo.services.placement import Scheduler

# (project, the launch request's body, --target or None) -> the member that runs it
Place = Callable[[str, dict[str, Any], str | None], str]


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


def request_for(inst: Instance, alloc: Allocation | None) -> Request:
    """An instance that exists, as the engine sees it: what its allocation holds (its
    limits if it has none: made before the cluster), its type, its placement group."""
    res = alloc.resources if alloc is not None else Resources(
        float(inst.limits.cpu or 0), int(inst.limits.memory or 0))
    group = alloc.placement_group if alloc is not None else None
    return Request(resources=res, type=inst.type, features=frozenset({f"type:{inst.type}"}),
                   placement_group=PlacementGroup(group) if group else None)


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
