"""Recovering a stateful instance (not ``--ephemeral``) of a member that is offline:
``cumulo cluster recover NAME [--target MEMBER] [--from-snapshot SNAP]``.

Such an instance waits for its member. Recreating it elsewhere from its latest snapshot
needs a snapshot held by another member, and there is none: snapshots live in the
member's own storage pools (a directory or an ext4 image on its disk, storage/dir.py,
storage/ext4.py), which no other member can read, and nothing copies them off it. So
the request is checked (the instance, its member offline, the target) and then refused
in one line that says why and what to do, rather than recreate the instance from its
image and pretend its data came along. A pool shared between members (or snapshots
copied to another member) would make this the place that does it.
"""

from __future__ import annotations

from cumulo.cluster.membership import Membership
from cumulo.errors import ConflictError
from cumulo.services.instances import InstanceService
from cumulo.store.cluster import OFFLINE, ONLINE


def recover(cluster: Membership, instances: InstanceService, project: str, name: str,
            target: str | None = None, snapshot: str | None = None) -> None:
    """Check the request, then refuse it (see the module's docstring)."""
    cluster._require()
    inst = instances.store.get_instance(project, name)   # 404 for an unknown one
    where = inst.location or ""
    if not where or cluster.state_of(cluster.store.get_member(where)) != OFFLINE:
        raise ConflictError(f"instance {name!r} is on member {where or 'none'!r}, which is"
                            " not offline: nothing to recover (move it with `cumulo"
                            f" cluster evacuate {where or 'MEMBER'}`)")
    if inst.ephemeral:
        raise ConflictError(f"instance {name!r} is ephemeral: it is recreated from its image"
                            " on another member by itself once the grace period is over")
    if target is not None:
        state = cluster.state_of(cluster.store.get_member(target))   # 404: unknown
        if state != ONLINE:
            raise ConflictError(f"member {target!r} is {state}: it takes no instance")
    which = f"snapshot {snapshot!r}" if snapshot else "a snapshot"
    raise ConflictError(f"cannot recover {name!r} from {which}: its snapshots are in the"
                        f" storage pools of {where}, offline with it (pools are local to"
                        f" each member); it waits for {where} to come back")
