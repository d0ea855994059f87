"""Where each instance of an evacuated member goes: the placement engine run for each,
largest first (the hardest to fit take their pick), with the member excluded (its
state ``evacuated``) and every earlier choice counted. Pure code; the daemon moves the
instances (live migration, cold move or stop) and commits each allocation's move.

Nobody can take one of them (the last member, or a cluster too full): the error names
the instance and says which filter excluded how many members, and nothing is planned.
"""

from __future__ import annotations

from collections.abc import Sequence

from cumulo.cluster.model import EVACUATED, Member, NoMemberFits, Request


def plan(members: Sequence[Member], member: str, instances: Sequence[tuple[str, Request]],
         strategy: str = "spread") -> list[tuple[str, str]]:
    """(instance, target member) for each of ``instances``, which run on ``member``."""
    from cumulo.cluster.placement import Inventory  # numpy: only when evacuating
    inv = Inventory(members, strategy=strategy)
    inv.set_state(member, EVACUATED)
    out: list[tuple[str, str]] = []
    for name, req in sorted(instances, key=lambda x: (-x[1].resources.memory, x[0])):
        inv.release(member, req)
        try:
            out.append((name, inv.place(req)))
        except NoMemberFits as err:
            raise NoMemberFits(err.excluded, subject=f"instance {name!r}",
                               prefix=f"cannot evacuate {member}: ") from None
    return out
