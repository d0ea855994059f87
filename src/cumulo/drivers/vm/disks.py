"""A VM's block devices: its root disk from the storage pool, and volumes.

Root: the pool's per-instance qcow2 over the image's base disk (``images/vmdisk.py``),
checked before each start (``qemu-img check`` on every file of its backing chain), so a
corrupted disk is a clear error and no QEMU starts. Attached as virtio-blk with
``--io paravirt`` (virtio-mmio on microvm) or as an IDE/AHCI disk with ``--io emulated``;
the guest's ``/init`` finds it by its ext4 label.

Volumes: raw ext4 files, always virtio-blk (the hot-pluggable family), serial = device
id so the guest can tell them apart (``/sys/block/vdX/serial``). Cold-plugged at start
(``qemu_cmd`` builds those arguments); hot-plugged into a running VM through QMP
(blockdev-add + device_add; device_del waits for the guest to let go, then blockdev-del).
q35's root bus takes no hot-plug, so it gets a few PCIe root ports; microvm
(virtio-mmio) has no hot-plug at all.
"""

from __future__ import annotations

import json
from pathlib import Path

from cumulo.drivers.base import InstanceSpec
from cumulo.drivers.vm import qmp
from cumulo.drivers.vm.qemu_cmd import (
    Machine,
    node_name,
    volume_device,
    volume_node,
)
from cumulo.errors import DriverError, RuntimeToolError, UnsupportedError
from cumulo.images import vmdisk
from cumulo.storage.pools import pool_of
from cumulo.storage.tools import run


def root_append() -> str:
    """What the kernel command line tells /init about the root disk."""
    return f"cumulo.root=LABEL={vmdisk.LABEL}"


def prepare_root(spec: InstanceSpec) -> Path | None:
    """The instance's root qcow2 in its pool (made on first use), or None without a pool."""
    if spec.root is None:
        return None
    base = vmdisk.base_disk(spec.rootfs, spec.root.size)
    return pool_of(spec.root).vm_disk(spec.host_id, base, spec.root.copy, spec.root.size)


def check(disk: Path) -> None:
    """Every file of ``disk``'s backing chain opens and passes ``qemu-img check``."""
    try:
        chain = json.loads(run(["qemu-img", "info", "--backing-chain", "--output=json",
                                "-U", str(disk)]))
    except RuntimeToolError as err:
        raise DriverError(f"the root disk {disk} cannot be opened ({err}): restore a"
                          " snapshot or recreate the instance") from err
    except ValueError as err:
        raise DriverError(f"cannot read the backing chain of {disk}: {err}") from err
    for i, layer in enumerate(chain):
        if layer.get("format") == "raw":
            continue   # an imported raw disk: nothing to check (qemu-img checks qcow2)
        what = f"the root disk {disk}" if i == 0 else \
            f"the image's base disk {layer['filename']} (under {disk})"
        try:
            run(["qemu-img", "check", "-q", "-U", "-f", str(layer["format"]),
                 str(layer["filename"])])
        except RuntimeToolError as err:
            fix = "restore a snapshot or recreate the instance" if i == 0 else \
                "every VM cloned from it is affected: recreate them"
            raise DriverError(f"{what} is damaged ({err}): {fix}") from err


def attach(socket: Path, machine: Machine, dev_id: str, path: Path, shared: bool) -> None:
    """Hot-plug volume ``path`` as virtio-blk ``dev_id`` into the running VM at ``socket``."""
    if machine == Machine.MICROVM:
        raise UnsupportedError("a microvm has no hot-plug (virtio-mmio): stop it, attach the"
                               " volume, and start it again")
    node = node_name(dev_id)
    if node in qmp.block_nodes(socket):
        raise DriverError(f"the VM already has a disk {dev_id!r}")
    qmp.blockdev_add(socket, volume_node(dev_id, str(path), shared))
    try:
        dev = volume_device(machine, dev_id, shared)
        if machine == Machine.Q35:
            dev["bus"] = free_port(socket)
        qmp.device_add(socket, dev)
    except BaseException:
        qmp.blockdev_del(socket, node)
        raise


def free_port(socket: Path) -> str:
    """The first of q35's hot-plug root ports (``hpN``) with nothing behind it."""
    for bus in qmp.execute(socket, "query-pci"):
        for dev in bus.get("devices", []):
            port = str(dev.get("qdev_id", ""))
            if port.startswith("hp") and not dev.get("pci_bridge", {}).get("devices"):
                return port
    raise DriverError("no free hot-plug port left in this q35 VM: stop it to attach more"
                      " volumes or NICs")


def detach(socket: Path, dev_id: str) -> None:
    """Hot-unplug ``dev_id``: the guest releases it, then QEMU closes the file."""
    node = node_name(dev_id)
    qmp.device_del(socket, node)
    qmp.blockdev_del(socket, node)
