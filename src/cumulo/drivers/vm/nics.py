"""A running VM's NICs hot-plugged and unplugged through QMP.

The tap is made on its bridge by the network service first (net/nic.py); QEMU opens it
by name (netdev_add tap) and the guest sees a new PCI NIC (device_add). Unplugging asks
the guest to let go (device_del, answered by DEVICE_DELETED), then closes the tap
(netdev_del); the service deletes the tap after. Cold-plugged NICs carry the same ids
(qemu_cmd.nic_ids), so either kind can be unplugged. microvm has no hot-plug.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cumulo.drivers.vm import qmp
from cumulo.drivers.vm.disks import free_port
from cumulo.drivers.vm.qemu_cmd import Machine, VmSpec, nic_ids, nic_model
from cumulo.errors import DriverError, UnsupportedError


def attach(vm: VmSpec, tap: str, mac: str) -> None:
    """Plug the NIC behind ``tap`` (with guest MAC ``mac``) into the running VM."""
    if vm.machine == Machine.MICROVM:
        raise UnsupportedError("a microvm has no hot-plug (virtio-mmio): stop it, attach the"
                               " network, and start it again")
    netdev, dev_id = nic_ids(tap)
    qmp.execute(vm.qmp_socket, "netdev_add", {"type": "tap", "id": netdev, "ifname": tap,
                                              "script": "no", "downscript": "no"})
    try:
        dev: dict[str, Any] = {"driver": nic_model(vm), "id": dev_id, "netdev": netdev,
                               "mac": mac}
        if vm.firmware:
            dev["romfile"] = ""
        if vm.machine == Machine.Q35:
            dev["bus"] = free_port(vm.qmp_socket)
        qmp.device_add(vm.qmp_socket, dev)
    except BaseException:
        qmp.execute(vm.qmp_socket, "netdev_del", {"id": netdev})
        raise


def detach(socket: Path, tap: str) -> None:
    """Unplug the NIC behind ``tap``: the guest releases it, then QEMU closes the tap."""
    netdev, dev_id = nic_ids(tap)
    try:
        qmp.device_del(socket, dev_id)
    except DriverError as err:
        if "not found" not in str(err):   # never plugged (a half-done attach): go on
            raise
    qmp.execute(socket, "netdev_del", {"id": netdev})
