"""Moving one instance to another member: the placement engine chooses (or checks) the
destination and moves the instance's allocation there in one locked transaction, then
the member that runs it migrates it (``POST /instances/NAME/migrate`` with the member
as remote: live when it runs, cold when live fails or it is stopped); if that fails the
allocation goes back. Evacuation, restore and the rebalancer all move this way. The
requests to the other member speak for the caller who asked (an admin), as forwarded
ones do (the automatic rebalancer speaks as root of the member that runs it).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from cumulo.client import APIError, Client
from cumulo.cluster.choose import request_for
from cumulo.cluster.membership import ROOT_CALLER, Membership, behalf
from cumulo.cluster.model import Request
from cumulo.errors import ConflictError, CumuloError
from cumulo.services.instances import InstanceService
from cumulo.services.placement import Scheduler

log = logging.getLogger(__name__)
MOVE_TIMEOUT = 600.0


class Mover:
    def __init__(self, cluster: Membership, instances: InstanceService,
                 caller: str = ROOT_CALLER) -> None:
        self.cluster, self.instances = cluster, instances
        self.caller = caller   # whom the requests to other members speak for

    @property
    def scheduler(self) -> Scheduler:
        if self.cluster.scheduler is None:
            raise ConflictError("this host is in no cluster: `cumulo cluster enable` first")
        return self.cluster.scheduler

    def request(self, project: str, name: str) -> Request:
        """What the engine needs of an instance that exists (its placement group as
        stored: policy, strictness)."""
        inst = self.instances.store.get_instance(project, name)
        req = request_for(inst, self.scheduler.members.allocation(project, name))
        return self.scheduler.stored_group(project, req)

    def relocate(self, project: str, name: str, src: str, prefer: str | None = None,
                 dest: str | None = None) -> tuple[str, str]:
        """Move ``name`` off ``src``: to ``dest``, else where the engine puts it
        (``prefer`` first); (the member, how it moved)."""
        req = self.request(project, name)
        if dest is not None:
            req = replace(req, target=dest)
        member, before = self.scheduler.relocate(project, name, req, prefer)
        try:
            how = self.migrate(project, name, src, member)
        except BaseException:
            try:
                self.scheduler.undo(project, name, before)
            except CumuloError as err:
                log.error("allocation of %s not put back on %s: %s", name, src, err)
            raise
        return member, how

    def migrate(self, project: str, name: str, src: str, dest: str) -> str:
        """Ask member ``src`` to migrate ``name`` to ``dest``; how it went."""
        remote = self.cluster.remote_for(src)
        inst = self.instances.store.get_instance(project, name)
        live = inst.state.value in ("running", "paused")
        with Client(url=remote.url, token=remote.token, timeout=MOVE_TIMEOUT,
                    fingerprint=remote.fingerprint) as c:
            c.headers.update(behalf(self.cluster.member, self.caller))

            def run(live: bool) -> dict[str, Any]:
                op = c.request("POST", f"/instances/{name}/migrate", params={"project": project},
                               json={"remote": dest, "live": live}).json()
                done: dict[str, Any] = c.request(
                    "GET", f"/operations/{op['id']}", params={"wait": MOVE_TIMEOUT}).json()
                if done["status"] != "success":
                    raise ConflictError(f"moving {name} to {dest} failed: {done['error']}")
                return done
            try:
                run(live)
                how = "live" if live else "cold"
            except (APIError, ConflictError) as err:
                if not live:
                    raise
                log.warning("%s cannot move live (%s): moving it cold", name, err)
                run(False)
                how = "cold (stopped and started again)"
        return how
