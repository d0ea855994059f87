"""Where a new instance goes when no member is named: the simplest spread rule, behind
one function the placement engine (h-sched's filters and scores) replaces."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from cumulo.errors import ConflictError
from cumulo.store.cluster import ONLINE, Member, Usage

if TYPE_CHECKING:
    from cumulo.cluster.membership import Membership

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


def spread(cluster: Membership) -> Place:
    """The placement at launch: the member ``target`` names (it must exist and be
    online), else ``choose_member``. The placement engine replaces this function."""
    def place(_project: str, _request: dict[str, Any], target: str | None) -> str:
        if target:
            m = cluster.store.get_member(target)   # 404 for an unknown one
            if cluster.state_of(m) != ONLINE:
                raise ConflictError(f"member {target!r} is {cluster.state_of(m)}: it takes"
                                    " no new instance")
            return target
        return choose_member(cluster.store.list_members(), cluster.store.usage(),
                             cluster.offline_after)
    return place
