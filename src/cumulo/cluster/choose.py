"""Where a new instance goes when no member is named: the simplest spread rule, behind
one function the placement engine (h-sched's filters and scores) replaces."""

from __future__ import annotations

from collections.abc import Iterable

from cumulo.errors import ConflictError
from cumulo.store.cluster import ONLINE, Member, Usage


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
