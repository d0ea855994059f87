"""Children that die on their own: noticed within seconds, reported, cleaned up.

A thread looks every ``INTERVAL`` seconds at what should run: each running or paused
instance (its conmon or QEMU, and helpers such as swtpm) and each network's dnsmasq.

- An instance whose process ended on its own is marked stopped (with its exit status, or
  with ``last_error`` saying it ended without one: ``cumulo info`` shows it), an
  ``instance-died`` event goes out (``instance-stopped``, reason "exited", when it left
  an exit status), and what its process left (cgroup, NICs, sockets, swtpm) is cleared
  as a stop would.
- An instance that lost a helper (conmon, swtpm) is stopped, with ``last_error`` and an
  ``instance-died`` event naming the helper: it could no longer be supervised.
- A dnsmasq that died is started again (``network-dns-restarted``).
"""

from __future__ import annotations

import logging

from cumulo.domain.lifecycle import State
from cumulo.drivers.supervised import Supervised
from cumulo.errors import CumuloError, NotFoundError
from cumulo.host.periodic import Periodic
from cumulo.services.instances import InstanceService
from cumulo.services.networks import NetworkService

log = logging.getLogger(__name__)
INTERVAL = 3.0


class Watchdog(Periodic):
    name = "watchdog"

    def __init__(self, instances: InstanceService, networks: NetworkService,
                 interval: float = INTERVAL) -> None:
        super().__init__(interval)
        self.instances, self.networks = instances, networks

    def tick(self) -> None:
        self.check()

    def check(self) -> list[str]:
        """One round; returns what it did, one line each."""
        done: list[str] = []
        svc = self.instances
        for inst in svc.store.list_instances():
            if inst.state not in (State.RUNNING, State.PAUSED):
                continue
            driver = svc.drivers.get(inst.type)
            if driver is None:
                continue
            try:
                svc.refresh(inst)   # a process that ended goes to ``ended``
            except NotFoundError:   # deleted since the list: nothing to watch
                continue
            if (inst.project, inst.name) in svc.ended or not isinstance(driver, Supervised):
                continue
            try:
                lost = driver.lost_helpers(inst.host_id)
            except CumuloError as err:
                log.warning("cannot check the helpers of %s: %s", inst.name, err)
                continue
            if lost:
                done.append(self._stop_unsupervised(inst.project, inst.name, lost))
        for project, name in sorted(svc.ended):
            svc.ended.discard((project, name))
            done.append(self._clear(project, name))
        for n in self.networks.revive_dns():
            svc.events.publish("lifecycle", {"action": "network-dns-restarted",
                                             "source": f"/1.0/networks/{n.name}",
                                             "name": n.name}, n.project)
            done.append(f"network {n.name}: dnsmasq had died, started again")
        return [d for d in done if d]

    def _clear(self, project: str, name: str) -> str:
        svc = self.instances
        try:
            inst = svc.store.get_instance(project, name)
        except NotFoundError:
            return ""
        with svc._locked(inst):
            inst = svc.store.get_instance(project, name)
            if inst.state != State.STOPPED:
                return ""   # started again meanwhile
            if (err := svc._clear_stopped(svc._driver(inst.type), inst)) is not None:
                log.error("cannot clear what %s left: %s", name, err)
        if inst.exit_code is None:   # (an exit with a status has its "stopped" event)
            svc.events.lifecycle("died", project, name, reason=inst.last_error or "")
            log.warning("instance %s died: %s", name, inst.last_error)
            return f"{name}: died, cleared"
        return f"{name}: exited with {inst.exit_code}, cleared"

    def _stop_unsupervised(self, project: str, name: str, lost: list[str]) -> str:
        svc = self.instances
        inst = svc.store.get_instance(project, name)
        reason = f"its {' and '.join(lost)} died: stopped, it could no longer be supervised"
        with svc._locked(inst):
            inst = svc.store.get_instance(project, name)
            if inst.state not in (State.RUNNING, State.PAUSED):
                return ""
            driver = svc._driver(inst.type)
            try:
                driver.stop(inst.host_id, 0, True)
            except CumuloError as err:
                log.error("cannot stop %s after its %s died: %s", name, lost, err)
                return ""
            svc.networks.detach(inst)
            svc.store.update_instance(project, name, state=State.STOPPED, exit_code=None,
                                      last_error=reason)
        svc.events.lifecycle("died", project, name, reason=reason)
        log.warning("instance %s: %s", name, reason)
        return f"{name}: {reason}"
