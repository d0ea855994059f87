"""VMs that run a container image (``--type imagevm``; Docker's ``--runtime cumulo-vm``).

Kata-style isolation for an image made for containers: the image's whole tree goes
into the initramfs of an app VM (microvm, Debian's kernel) under ``/image``, beside our
``/init`` and guest agent (image_guest.py); the command runs chrooted in the tree with
the image's environment, working dir and user, its output is the console and its exit
status the VM's, as for an app VM. ``exec`` goes through the agent, chrooted in the same
tree, so a process it starts sees what the workload wrote. The tree lives in the guest's
memory: this suits small images.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from cumulo.drivers.base import ExecRequest, ExecSession, InstanceSpec
from cumulo.drivers.vm import image_guest, initramfs
from cumulo.drivers.vm.appvm import AppVmDriver
from cumulo.errors import InvalidInputError, UnsupportedError

SEARCH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def _inside(rootfs: Path, path: str) -> bool:
    """``path`` names a file in the tree (a symlink counts: the guest resolves it)."""
    target = rootfs / path.lstrip("/")
    return target.is_symlink() or target.is_file()


def _command(spec: InstanceSpec) -> str:
    """The command's path in the image, looked up as a shell would, checked before
    anything is made."""
    if not spec.command:
        raise InvalidInputError("an image VM needs a command")
    cmd = spec.command[0]
    if "/" not in cmd:
        cmd = next((posixpath.join(d, cmd) for d in SEARCH if _inside(spec.rootfs,
                                                                     f"{d}/{cmd}")), cmd)
    if not cmd.startswith("/") or not _inside(spec.rootfs, cmd):
        raise InvalidInputError(f"exec: \"{spec.command[0]}\": executable file not found"
                                " in the image")
    return cmd


def in_image(path: str) -> str:
    """A path of the image's tree as the agent (outside it) names it."""
    return image_guest.IMAGE_DIR + posixpath.normpath("/" + path)


class ImageVmDriver(AppVmDriver):
    """``InstanceDriver`` running a container image's command in a VM, exec beside it."""

    kind = "imagevm"
    agent = True
    tty_lines = 1       # ttyS1 (ttyS0 is the console; a third line would share its IRQ)

    def _init(self, spec: InstanceSpec) -> tuple[str, Path]:
        _command(spec)
        return "init", spec.rootfs

    def _args(self, spec: InstanceSpec) -> list[str]:
        return []      # the command is in the initramfs (image_guest.RUN_SCRIPT)

    def _nic_append(self, spec: InstanceSpec, append: str) -> str:
        """No NIC yet: the initramfs loads virtio_console only (image_guest), no
        virtio-net, and Debian's kernel has none built in (an app VM's ip=dhcp needs a
        kernel built --with net)."""
        if spec.nics:
            raise UnsupportedError(
                "a NIC on an image VM (--network, or the project's network 'default') is not"
                " supported yet: its initramfs loads no virtio-net driver; run it with"
                " --network none")
        return append

    def _initrd(self, spec: InstanceSpec, init: str, source: Path) -> bytes:
        workload = ExecRequest(command=[_command(spec), *spec.command[1:]], env=spec.env,
                               cwd=spec.cwd, user=spec.user)
        return image_guest.initrd(initramfs.find_kernel(), self._records.root / "initramfs",
                                  source, workload, spec.hostname)

    def exec(self, host_id: str, request: ExecRequest) -> ExecSession:
        """The command in the image's tree, through the guest agent; ``-t`` on the VM's
        serial terminal line (one session at a time)."""
        return self._agent_exec(host_id, request, f"image VM {host_id!r} was created before"
                                " image VMs had a guest agent", image_guest.tty_relay,
                                image_guest.exec_argv)

    def write_file(self, host_id: str, path: str, data: bytes, mode: int) -> bool:
        return super().write_file(host_id, in_image(path), data, mode)

    def read_file(self, host_id: str, path: str, limit: int) -> bytes | None:
        return super().read_file(host_id, in_image(path), limit)
