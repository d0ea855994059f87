"""Evacuate a member (move every instance off it) and restore it (bring them back).

Whichever member is asked drives it. Evacuation first plans where each instance goes
with the placement engine (cluster/evacuation.py: largest first, filters, scores,
placement groups, declared capacity): if one of them fits nowhere it refuses in one
line and nothing changes. Then the member is marked ``evacuated`` (no new instance
goes there) and each instance moves (cluster/move.py: its allocation moved to the
planned member in a locked transaction, or to the engine's next choice if that member
filled up meanwhile, then live or cold migration, as its ``cluster.evacuate`` says:
domain/evacuation_mode.py). Those marked ``stop`` are stopped in place instead. Each
moved (or stopped) instance keeps the member it came from (``origin``) until restore
brings it back the same way (or starts it again).
"""

from __future__ import annotations

import logging
from typing import Any

from cumulo.cluster import evacuation
from cumulo.cluster.membership import Membership
from cumulo.cluster.move import Mover
from cumulo.domain import evacuation_mode
from cumulo.domain.models import Operation
from cumulo.errors import ConflictError, CumuloError
from cumulo.services.instances import InstanceService
from cumulo.services.operations import Progress
from cumulo.store.cluster import EVACUATED, ONLINE

log = logging.getLogger(__name__)


class Evacuation:
    def __init__(self, cluster: Membership, instances: InstanceService,
                 caller: str) -> None:
        self.cluster, self.instances = cluster, instances
        self.mover = Mover(cluster, instances, caller)

    def evacuate(self, member: str) -> Operation:
        m = self.cluster.store.get_member(member)
        if self.cluster.state_of(m) == "offline":
            raise ConflictError(f"member {member!r} is offline: its instances cannot be"
                                " moved live (ephemeral ones come back elsewhere by"
                                " themselves)")
        todo = [(project, name, self.mode(project, name))
                for project, name, _loc in self.cluster.store.instances_on(member)]
        others = [o for o in self.cluster.store.list_members()
                  if o.name != member and self.cluster.state_of(o) == ONLINE]
        if not others and any(mode != evacuation_mode.STOP for *_, mode in todo):
            raise ConflictError(f"cannot evacuate {member!r}: no other member is online to"
                                " take its instances")
        reqs = [(f"{project}/{name}", self.mover.request(project, name))
                for project, name, mode in todo if mode != evacuation_mode.STOP]
        scheduler = self.mover.scheduler
        planned = dict(evacuation.plan(scheduler.members.scheduling(), member, reqs,
                                       scheduler.strategy))   # NoMemberFits: refused
        self.cluster.store.set_state(member, EVACUATED)

        def work(progress: Progress) -> dict[str, Any]:
            moved: list[str] = []
            failed: list[str] = []
            for i, (project, name, mode) in enumerate(todo):
                prefer = planned.get(f"{project}/{name}")
                progress(i / max(len(todo), 1),
                         f"{'stopping' if prefer is None else 'moving'} {name}"
                         f"{'' if prefer is None else f' to {prefer}'}"
                         f" ({i + 1}/{len(todo)})")
                try:   # one that cannot move does not keep the others
                    if prefer is None:
                        if self._stop(project, name, member):
                            moved.append(f"{name} stopped on {member}")
                        continue
                    dest, how = self.mover.relocate(project, name, member, prefer=prefer,
                                                    mode=mode)
                except CumuloError as err:
                    log.error("evacuating %s: %s stays: %s", member, name, err)
                    failed.append(f"{name} ({err})")
                    continue
                self.instances.store.update_instance(project, name, origin=member)
                moved.append(f"{name} -> {dest} ({how})")
            if failed:
                raise ConflictError(f"{len(moved)} instance(s) moved off {member}, these stay"
                                    f" on it: {'; '.join(failed)}")
            progress(1.0, f"{len(moved)} instance(s) moved off or stopped on {member}")
            return {"moved": moved}

        return self.instances.ops.submit(f"evacuate member {member}", work,
                                         {"members": [member]})

    def mode(self, project: str, name: str) -> str:
        """Its ``cluster.evacuate``."""
        return evacuation_mode.of(self.instances.store.get_instance(project, name).options)

    def _stop(self, project: str, name: str, member: str) -> bool:
        """Stop a ``stop`` one in place; marked (its origin: this member) for restore to
        start it again. One already stopped stays as it is (False)."""
        if self.instances.store.get_instance(project, name).state.value not in (
                "running", "paused"):
            return False
        self.mover.set_state(project, name, member, "stop")
        self.instances.store.update_instance(project, name, origin=member)
        return True

    def restore(self, member: str) -> Operation:
        m = self.cluster.store.get_member(member)
        if self.cluster.state_of(m) == "offline":
            raise ConflictError(f"member {member!r} is offline: start its cumulod first")
        self.cluster.store.set_state(member, ONLINE)

        def work(progress: Progress) -> dict[str, Any]:
            todo = self.cluster.store.instances_on(member, origin=True)
            back: list[str] = []
            for i, (project, name, loc) in enumerate(todo):
                progress(i / max(len(todo), 1), f"bringing {name} back from {loc}"
                                                 f" ({i + 1}/{len(todo)})")
                try:
                    if loc == member:   # stopped in place (``stop``): started again
                        self.mover.set_state(project, name, member, "start")
                        how = "started again"
                    else:
                        _dest, how = self.mover.relocate(project, name, loc, dest=member,
                                                        mode=self.mode(project, name))
                except CumuloError as err:
                    raise ConflictError(f"{name} stays on {loc}: {err}") from err
                self.instances.store.update_instance(project, name, origin=None)
                back.append(f"{name} <- {loc} ({how})" if loc != member
                            else f"{name} started again on {member}")
            progress(1.0, f"{len(back)} instance(s) back on {member}")
            return {"restored": back}

        return self.instances.ops.submit(f"restore member {member}", work,
                                         {"members": [member]})
