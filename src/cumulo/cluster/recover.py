"""Ephemeral instances of a member that stays offline longer than a grace period are
recreated from their image on another member, chosen by the placement engine (filters,
scores, placement groups, declared capacity). Each online member, after its heartbeat,
runs the engine over a fresh inventory for those instances (the same inputs give every
member the same answer) and takes the ones it is given: a compare-and-set on the
instance's location decides if two try, and the allocation moves to it in the locked
transaction (that fails if it has no room left: the instance waits for the next beat).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from cumulo.cluster.membership import Membership
from cumulo.cluster.model import NoMemberFits
from cumulo.cluster.move import Mover
from cumulo.errors import CumuloError
from cumulo.services.instances import InstanceService
from cumulo.store.cluster import OFFLINE

log = logging.getLogger(__name__)
GRACE = 30.0   # seconds offline (beyond offline_after) before ephemeral instances move


class Recovery:
    def __init__(self, cluster: Membership, instances: InstanceService,
                 grace: float = GRACE) -> None:
        self.cluster, self.instances, self.grace = cluster, instances, grace
        self.mover = Mover(cluster, instances)

    def run(self) -> None:
        me = self.cluster.member
        if me is None or self.cluster.scheduler is None:
            return
        for lost in self.cluster.store.list_members():
            if self.cluster.state_of(lost) != OFFLINE or \
                    lost.silent < self.cluster.offline_after + self.grace:
                continue
            todo = self.cluster.store.ephemeral_on(lost.name)
            if todo:
                self._recover(me, lost.name, todo)

    def _recover(self, me: str, lost: str, todo: list[tuple[str, str]]) -> None:
        from cumulo.cluster.placement import Inventory  # numpy: only when needed

        scheduler = self.mover.scheduler
        inv = Inventory(scheduler.members.scheduling(), strategy=scheduler.strategy)
        for project, name in todo:
            req = self.mover.request(project, name)
            try:
                dest = inv.candidates(req, 1)[0]
            except NoMemberFits as err:
                log.warning("ephemeral %s of lost member %s waits: %s", name, lost, err)
                continue
            inv.record(dest, req)   # the next one counts it, as every member does
            if dest != me or not self.cluster.store.claim(project, name, lost, me):
                continue
            try:
                scheduler.relocate(project, name, replace(req, target=me))
            except CumuloError as err:   # no room left here after all: give it back
                log.warning("cannot take ephemeral %s of %s: %s", name, lost, err)
                self.cluster.store.claim(project, name, me, lost)
                continue
            log.warning("member %s is lost: recreating ephemeral %s here", lost, name)
            try:
                self.instances.recreate(project, name)
            except CumuloError as err:
                log.error("cannot recreate %s: %s", name, err)
