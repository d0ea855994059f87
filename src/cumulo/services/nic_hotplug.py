"""NICs added to and removed from an existing instance (Incus' ``network attach/detach``).

A running container gets a veth into its PID 1's netns, as at start (net/nic.py); a
running VM a tap on the bridge, then a hot-plugged NIC (drivers/vm/nics.py); a stopped
instance only the stored NIC, which its next start wires with the others. The address
is reserved in the store, and the firewall (isolation, security groups) and the
network's DHCP and DNS follow. A failure half-way undoes every step done; a detach
leaves no veth, tap, shaping, firewall entry, DNS name or DHCP lease of the NIC.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from cumulo.domain.lifecycle import State
from cumulo.domain.models import Instance, Nic
from cumulo.drivers.base import NicHotplug
from cumulo.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
)
from cumulo.net.base import INSIDE_PREFIX
from cumulo.services.instances import InstanceService
from cumulo.services.networks import NicRequest

LIVE = (State.RUNNING, State.PAUSED)
MAX_NICS = 32
_NAME = re.compile(rf"^{INSIDE_PREFIX}(\d+)$")


def index_of(instance: str, name: str | None, taken: set[int]) -> int:
    """eth<N> as N (free), or the lowest free index without a name."""
    if name is None:
        free = [i for i in range(MAX_NICS) if i not in taken]
        if not free:
            raise ConflictError(f"instance {instance!r} has {MAX_NICS} NICs: no more")
        return free[0]
    m = _NAME.match(name)
    if m is None or int(m.group(1)) >= MAX_NICS:
        raise InvalidInputError(f"invalid NIC name {name!r}: give {INSIDE_PREFIX}0 to"
                                f" {INSIDE_PREFIX}{MAX_NICS - 1} (the name inside)")
    if int(m.group(1)) in taken:
        raise ConflictError(f"instance {instance!r} already has a NIC {name}")
    return int(m.group(1))


class NicPlugs:
    """Attach and detach one NIC of an instance, live when it runs."""

    def __init__(self, instances: InstanceService) -> None:
        self.instances = instances
        self.networks = instances.networks
        self.store = instances.store

    def _instance(self, project: str, name: str) -> Instance:
        inst = self.instances.get(project, name)
        if not self.instances.local(inst):
            raise ConflictError(f"instance {name!r} runs on member {inst.location!r}:"
                                " ask that member (any member forwards it there)")
        if inst.state not in (State.RUNNING, State.PAUSED, State.STOPPED):
            raise ConflictError(f"instance {name!r} is {inst.state.value}: wait until it"
                                " is running or stopped")
        return inst

    def attach(self, project: str, instance: str, network: str, name: str | None = None,
               ip: str | None = None) -> Instance:
        """A NIC on ``network`` as ``name`` (eth<N>; default: the first free one)."""
        inst = self._instance(project, instance)
        with self.instances._locked(inst):
            inst = self._instance(project, instance)
            if any(n.network == network for n in inst.nics):
                raise ConflictError(f"instance {instance!r} already has a NIC on network"
                                    f" {network!r}")
            index = index_of(instance, name, {n.index for n in inst.nics})
            with self.networks.lock:   # the address, from planned to stored
                nic = self.networks.plan_nics(project, inst.host_id,
                                              [NicRequest(network, ip)])[0]
                nic = replace(nic, index=index)
                after = self.store.add_nic(project, instance, nic)
            try:
                if inst.state in LIVE:
                    self._wire(inst, nic)
            except BaseException:
                self.store.remove_nic(project, instance, network)
                raise
            finally:
                self.networks.nics_changed(project, [network])
            self.instances.events.lifecycle("nic-attached", project, instance,
                                            network=network, nic=f"{INSIDE_PREFIX}{index}")
            return after

    def detach(self, project: str, instance: str, network: str) -> Instance:
        """Remove the instance's NIC on ``network`` and everything that served it."""
        inst = self._instance(project, instance)
        with self.instances._locked(inst):
            inst = self._instance(project, instance)
            nic = next((n for n in inst.nics if n.network == network), None)
            if nic is None:
                self.store.get_network(project, network)   # an unknown network says so
                err = NotFoundError("NIC", network)
                err.args = (f"instance {instance!r} has no NIC on network {network!r}",)
                raise err
            if inst.state in LIVE:
                self._unwire(inst, nic)
            after = self.store.remove_nic(project, instance, network)
            self.networks.nics_changed(project, [network])
            self.instances.events.lifecycle("nic-detached", project, instance,
                                            network=network,
                                            nic=f"{INSIDE_PREFIX}{nic.index}")
            return after

    def _wire(self, inst: Instance, nic: Nic) -> None:
        plan = self.networks.nic_plan(inst.project, nic)
        host_net = self.networks.host_net
        if inst.type == "container":
            pid = self.instances.pid(inst)
            if pid is None:
                raise ConflictError(f"instance {inst.name!r} stopped meanwhile")
            host_net.attach(Path(f"/proc/{pid}/ns/net"), [plan])  # undoes itself on error
            return
        driver = self.instances.driver_of(inst)
        if not isinstance(driver, NicHotplug):
            raise UnsupportedError(f"a running {inst.type} cannot take a NIC: stop it first")
        host_net.attach_taps([plan])
        try:
            driver.attach_nic(inst.host_id, nic.host_name, nic.mac)
        except BaseException:
            host_net.detach([nic.host_name])
            raise

    def _unwire(self, inst: Instance, nic: Nic) -> None:
        driver = self.instances.driver_of(inst)
        if inst.type != "container":
            if not isinstance(driver, NicHotplug):
                raise UnsupportedError(f"a running {inst.type} cannot lose a NIC: stop it"
                                       " first")
            if inst.state != State.RUNNING:
                raise ConflictError(f"instance {inst.name!r} is paused: the guest must run"
                                    " to let the NIC go (resume it first)")
            driver.detach_nic(inst.host_id, nic.host_name)
        self.networks.host_net.detach([nic.host_name])   # a veth's peer goes with it
