"""Evacuate a member (move every instance off it) and restore it (bring them back).

Whichever member is asked drives it: for each instance it asks the member that runs it
to migrate it (``POST /instances/NAME/migrate`` with the destination member as remote:
live when it runs, cold otherwise) and waits for that operation. Each moved instance
keeps the member it came from (``origin``) until restore brings it back. Those requests
speak for the caller who asked for the evacuation (an admin), as forwarded ones do.
"""

from __future__ import annotations

import logging
from typing import Any

from cumulo.client import APIError, Client
from cumulo.cluster.choose import choose_member
from cumulo.cluster.membership import Membership, behalf
from cumulo.domain.models import Operation
from cumulo.errors import ConflictError, CumuloError
from cumulo.services.instances import InstanceService
from cumulo.services.operations import Progress
from cumulo.store.cluster import EVACUATED, ONLINE

log = logging.getLogger(__name__)
MOVE_TIMEOUT = 600.0


class Evacuation:
    def __init__(self, cluster: Membership, instances: InstanceService,
                 caller: str) -> None:
        self.cluster, self.instances = cluster, instances
        self.caller = caller   # whom the requests to other members speak for

    def _move(self, project: str, name: str, src: str, dest: str) -> str:
        """Migrate one instance from member ``src`` to ``dest``; how it went."""
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

    def evacuate(self, member: str) -> Operation:
        m = self.cluster.store.get_member(member)
        others = [o for o in self.cluster.store.list_members()
                  if o.name != member and self.cluster.state_of(o) == ONLINE]
        if not others:
            raise ConflictError(f"cannot evacuate {member!r}: no other member is online to"
                                " take its instances")
        if self.cluster.state_of(m) == "offline":
            raise ConflictError(f"member {member!r} is offline: its instances cannot be"
                                " moved live (ephemeral ones come back elsewhere by"
                                " themselves)")
        self.cluster.store.set_state(member, EVACUATED)   # no new instance goes there

        def work(progress: Progress) -> dict[str, Any]:
            todo = self.cluster.store.instances_on(member)
            moved: list[str] = []
            failed: list[str] = []
            for i, (project, name, _loc) in enumerate(todo):
                dest = choose_member(self.cluster.store.list_members(),
                                     self.cluster.store.usage(),
                                     self.cluster.offline_after, exclude=[member])
                progress(i / max(len(todo), 1), f"moving {name} to {dest}"
                                                 f" ({i + 1}/{len(todo)})")
                try:   # one that cannot move does not keep the others
                    how = self._move(project, name, member, dest)
                except CumuloError as err:
                    log.error("evacuating %s: %s stays: %s", member, name, err)
                    failed.append(f"{name} ({err})")
                    continue
                self.instances.store.update_instance(project, name, origin=member)
                moved.append(f"{name} -> {dest} ({how})")
            if failed:
                raise ConflictError(f"{len(moved)} instance(s) moved off {member}, these stay"
                                    f" on it: {'; '.join(failed)}")
            progress(1.0, f"{len(moved)} instance(s) moved off {member}")
            return {"moved": moved}

        return self.instances.ops.submit(f"evacuate member {member}", work,
                                         {"members": [member]})

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
                    how = self._move(project, name, loc, member)
                except CumuloError as err:
                    raise ConflictError(f"{name} stays on {loc}: {err}") from err
                self.instances.store.update_instance(project, name, origin=None)
                back.append(f"{name} <- {loc} ({how})")
            progress(1.0, f"{len(back)} instance(s) back on {member}")
            return {"restored": back}

        return self.instances.ops.submit(f"restore member {member}", work,
                                         {"members": [member]})
