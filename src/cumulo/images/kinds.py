"""What an image holds (its kind) and which file or folder of the image dir that is.

An image dir ``<root>/<sha256>/`` holds ``meta.json`` and exactly one payload:

| kind      | payload            | used by                                      |
|-----------|--------------------|----------------------------------------------|
| container | ``rootfs/``        | containers (and, converted, VM disks)        |
| app       | ``rootfs/``        | containers now; single-application VMs       |
| vm-disk   | ``disk.qcow2`` or ``disk.raw`` | VMs                              |
| kernel    | ``boot/`` (vmlinux, bzImage, config) | app VMs (image build kernel) |

The sha256 of a folder payload is `files.tree_sha256`; of a disk, the file's sha256.
"""

from __future__ import annotations

CONTAINER = "container"
APP = "app"
VM_DISK = "vm-disk"
KERNEL = "kernel"

KINDS = (CONTAINER, APP, VM_DISK, KERNEL)
GENERIC_KERNEL = "generic"   # appvm --kernel generic: Debian's, from the host's kernel cache
ROOTFS_KINDS = frozenset({CONTAINER, APP})   # a root filesystem tree a container can run

ROOTFS = "rootfs"
DISKS = ("disk.qcow2", "disk.raw")
BOOT = "boot"
PAYLOADS = (ROOTFS, *DISKS, BOOT)
