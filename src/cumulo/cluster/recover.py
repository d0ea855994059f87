"""Ephemeral instances of a member that stays offline longer than a grace period are
recreated from their image on another member: each online member, after its heartbeat,
takes those ``choose_member`` gives it (the store's compare-and-set decides if two try)."""

from __future__ import annotations

import logging

from cumulo.cluster.choose import choose_member
from cumulo.cluster.membership import Membership
from cumulo.errors import CumuloError
from cumulo.services.instances import InstanceService
from cumulo.store.cluster import OFFLINE

log = logging.getLogger(__name__)
GRACE = 30.0   # seconds offline (beyond offline_after) before ephemeral instances move


class Recovery:
    def __init__(self, cluster: Membership, instances: InstanceService,
                 grace: float = GRACE) -> None:
        self.cluster, self.instances, self.grace = cluster, instances, grace

    def run(self) -> None:
        me = self.cluster.member
        if me is None:
            return
        members = self.cluster.store.list_members()
        for lost in members:
            if self.cluster.state_of(lost) != OFFLINE or \
                    lost.silent < self.cluster.offline_after + self.grace:
                continue
            for project, name in self.cluster.store.ephemeral_on(lost.name):
                try:
                    dest = choose_member(members, self.cluster.store.usage(),
                                         self.cluster.offline_after, exclude=[lost.name])
                except CumuloError:
                    return   # nobody can take it now
                if dest != me or not self.cluster.store.claim(project, name, lost.name, me):
                    continue
                log.warning("member %s is lost: recreating ephemeral %s here", lost.name, name)
                self.cluster.moved(project, name, me)
                try:
                    self.instances.recreate(project, name)
                except CumuloError as err:
                    log.error("cannot recreate %s: %s", name, err)
