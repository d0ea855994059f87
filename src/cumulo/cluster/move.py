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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from cumulo.client import APIError, Client
from cumulo.cluster.choose import request_for
from cumulo.cluster.membership import ROOT_CALLER, Membership, behalf
from cumulo.cluster.model import Request
from cumulo.domain import evacuation_mode
from cumulo.errors import ConflictError, CumuloError
from cumulo.services.instances import InstanceService
from cumulo.services.placement import Scheduler

log = logging.getLogger(__name__)
MOVE_TIMEOUT = 600.0
VM_TYPES = ("vm", "appvm", "imagevm")   # QEMU moves only a running guest
STOP_TIMEOUT = 30.0   # seconds a guest has to stop before it is forced


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
                 dest: str | None = None, mode: str = evacuation_mode.AUTO
                 ) -> tuple[str, str]:
        """Move ``name`` off ``src``: to ``dest``, else where the engine puts it
        (``prefer`` first), the way ``mode`` says; (the member, how it moved)."""
        req = self.request(project, name)
        if dest is not None:
            req = replace(req, target=dest)
        member, before = self.scheduler.relocate(project, name, req, prefer)
        try:
            how = self.migrate(project, name, src, member, mode)
        except BaseException:
            try:
                self.scheduler.undo(project, name, before)
            except CumuloError as err:
                log.error("allocation of %s not put back on %s: %s", name, src, err)
            raise
        return member, how

    @contextmanager
    def client(self, member: str) -> Iterator[Client]:
        """A client of ``member``'s API that speaks for the caller."""
        remote = self.cluster.remote_for(member)
        with Client(url=remote.url, token=remote.token, timeout=MOVE_TIMEOUT,
                    fingerprint=remote.fingerprint) as c:
            c.headers.update(behalf(self.cluster.member, self.caller))
            yield c

    def set_state(self, project: str, name: str, member: str, action: str) -> None:
        """Start or stop ``name`` on ``member`` (a stop that does not end in time is
        forced)."""
        with self.client(member) as c:
            c.set_state(name, action, timeout=STOP_TIMEOUT, project=project)

    def migrate(self, project: str, name: str, src: str, dest: str,
                mode: str = evacuation_mode.AUTO) -> str:
        """Ask member ``src`` to migrate ``name`` to ``dest``; how it went. ``auto``: live
        when it runs, cold if that fails or it is stopped; ``live-migrate``: live only;
        ``migrate``: cold. A stopped VM is moved running (QEMU moves only a running
        guest): started, moved cold and stopped again on ``dest``."""
        inst = self.instances.store.get_instance(project, name)
        running = inst.state.value in ("running", "paused")
        if not running and inst.type in VM_TYPES:
            self.set_state(project, name, src, "start")
            try:
                self.migrate(project, name, src, dest, evacuation_mode.COLD)
            except BaseException:
                self.set_state(project, name, src, "stop")
                raise
            self.set_state(project, name, dest, "stop")
            return "cold (a stopped VM: started to move, stopped again)"
        live = running and mode != evacuation_mode.COLD
        with self.client(src) as c:
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
                how = "live" if live else ("cold (stopped, moved, started again)" if running
                                           else "cold")
            except (APIError, ConflictError) as err:
                if not live or mode == evacuation_mode.LIVE:
                    raise
                log.warning("%s cannot move live (%s): moving it cold", name, err)
                run(False)
                how = "cold (stopped and started again)"
        return how
