"""VMs that run a container image (``--type imagevm``; Docker's ``--runtime cumulo-vm``).

Kata-style isolation for an image made for containers: the image's whole tree
becomes the initramfs of an app VM (microvm, Debian's kernel), and the command
runs as its init, so its output is the console and its exit status the VM's, as
for an app VM. The tree lives in the guest's memory: this suits small images.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from cumulo.drivers.base import InstanceSpec
from cumulo.drivers.vm import initramfs
from cumulo.drivers.vm.appvm import AppVmDriver
from cumulo.errors import InvalidInputError

SEARCH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def _inside(rootfs: Path, path: str) -> bool:
    """``path`` names a file in the tree (a symlink counts: the guest resolves it)."""
    target = rootfs / path.lstrip("/")
    return target.is_symlink() or target.is_file()


class ImageVmDriver(AppVmDriver):
    """``InstanceDriver`` running a container image's command as a VM's init."""

    kind = "imagevm"

    def _init(self, spec: InstanceSpec) -> tuple[str, Path]:
        if not spec.command:
            raise InvalidInputError("an image VM needs a command")
        cmd = spec.command[0]
        if "/" not in cmd:   # looked up as a shell would, in the image's own tree
            cmd = next((posixpath.join(d, cmd) for d in SEARCH if _inside(spec.rootfs,
                                                                         f"{d}/{cmd}")), cmd)
        if not cmd.startswith("/") or not _inside(spec.rootfs, cmd):
            raise InvalidInputError(f"exec: \"{spec.command[0]}\": executable file not found"
                                    " in the image")
        return cmd, spec.rootfs

    def _initrd(self, spec: InstanceSpec, init: str, source: Path) -> bytes:
        return initramfs.build_tree(source)
