"""Inside an image VM (``imagevm``, Docker's ``--runtime cumulo-vm``): our ``/init`` and
guest agent beside the image, the image's tree at ``/image``, its processes chrooted there.

The initramfs is two cpio archives back to back (the kernel unpacks both into one
root): ours, shared by every image VM on a kernel (busybox, the virtio-mmio and
virtio-serial modules, ``IMAGE_INIT`` as ``/init``, the agent of ``guest_qga.py``), then
the instance's: the image's tree under ``/image`` and the workload's script under
``/cumulo``. ``/init`` mounts proc, sys and dev in both roots, starts the agent
outside the image and runs the workload inside it, waits for it and exits with its
status (the kernel's panic line carries it out, as for an app VM: ``appvm.py``).

The workload and every exec run the same way (``enter_argv`` + ``chroot_script``):
``chroot /image``, then our busybox reached through ``/proc/1/root`` (PID 1, our
``/init``, keeps the initramfs's root: nothing of ours is put into the image's tree)
with an empty environment runs a sh script: the image's environment, ``cd`` to the
working dir, the command looked up in the image's ``PATH`` (busybox's sh would run its
own applet for a bare ``ls``: the image's ``ls`` must run), and exec, as another
user through ``nsenter -S/-G`` where one is asked for.

``exec -t``: busybox has no ``script`` to make a pty, so the VM gets an ISA serial line
(``ttyS1``, a unix socket on the host: ``VmSpec.tty_serial``) and ``tty_relay`` runs the
command on it, as the session leader with the line as its controlling terminal: the
guest's line discipline echoes and turns ^C into SIGINT as a pty's does; a resize is
``stty`` on the line (qga_tty.TtySession does the rest, as for a pty).
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

from cumulo.drivers.base import ExecRequest
from cumulo.drivers.vm import initramfs, qga, qga_tty
from cumulo.drivers.vm.exec_session import check_env

IMAGE_DIR = "/image"
RUN_SCRIPT = "/cumulo/run"          # the workload's script, outside the image's tree
HOSTNAME = "/cumulo/hostname"
OUTSIDE = "/proc/1/root"            # the initramfs's root, seen from inside the chroot
BUSYBOX = f"{OUTSIDE}/bin/busybox"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# what the agent's part needs of the kernel: microvm's bus and the agent's port
MODULES = ("virtio_mmio", "virtio_console")

IMAGE_INIT = f"""#!/bin/sh
# PID 1 of an image VM (drivers/vm/image_guest.py): the image at {IMAGE_DIR}, the
# workload chrooted there, the guest agent outside. Silent: the console is the workload's.
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $(cat /etc/modules.order); do insmod /lib/modules/$m.ko 2>/dev/null; done
for m in proc sys dev; do mkdir -p {IMAGE_DIR}/$m; done
mount -t proc proc {IMAGE_DIR}/proc
mount -t sysfs sys {IMAGE_DIR}/sys
mount -t devtmpfs dev {IMAGE_DIR}/dev
hostname -F {HOSTNAME} 2>/dev/null
# the agent on its virtio-serial port, which shows up once the device announced it
(
  n=0
  while [ $n -lt 200 ]; do
    for p in /sys/class/virtio-ports/*; do
      if [ "$(cat $p/name 2>/dev/null)" = {qga.PORT_NAME} ]; then
        exec setsid sh /bin/cumulo-agent /dev/${{p##*/}}
      fi
    done
    sleep 0.05
    n=$((n + 1))
  done
) </dev/null >/dev/null 2>&1 &
chroot {IMAGE_DIR} {BUSYBOX} env -i {BUSYBOX} sh {OUTSIDE}{RUN_SCRIPT} &
echo $! > /run/app.pid
wait $!
exit $?
"""


def enter_argv() -> list[str]:
    """What runs a ``chroot_script`` (``sh -c SCRIPT`` follows): from the initramfs's root,
    into the image's, with an empty environment."""
    return ["/bin/busybox", "chroot", IMAGE_DIR, BUSYBOX, "env", "-i", BUSYBOX, "sh"]


def chroot_script(request: ExecRequest) -> str:
    """The sh script that runs ``request`` in the image's root (see the module's
    docstring): 126 when the working dir is missing or the command may not run, 127 when
    it is not found, as runc's exec."""
    check_env(request.env)
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", **request.env}
    lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines.append(f"cd {shlex.quote(request.cwd or '/')} || exit 126")
    if request.tty:  # no pty in the guest: one stream, in the order it was written
        lines.append("exec 2>&1")
    lines += [f"c={shlex.quote(request.command[0])}",
              'case $c in */*) ;; *)',
              '  IFS=:',
              '  for d in $PATH; do',
              '    if [ -f "$d/$c" ] && [ -x "$d/$c" ]; then c=$d/$c; break; fi',
              '  done',
              '  unset IFS',
              '  case $c in */*) ;; *)',
              '    echo "exec: \\"$c\\": executable file not found in \\$PATH" >&2',
              '    exit 127 ;;',
              '  esac ;;',
              'esac']
    user = request.user or (0, 0)
    switch = f"{BUSYBOX} nsenter -S {user[0]} -G {user[1]} -F -- " if user != (0, 0) else ""
    lines.append(f'exec {switch}"$c" {shlex.join(request.command[1:])}'.rstrip())
    return "\n".join(lines) + "\n"


def exec_argv(request: ExecRequest) -> list[str]:
    """The guest-exec of ``request``: our sh, in the image's root, runs its script."""
    return [*enter_argv(), "-c", chroot_script(request)]


def tty_relay(request: ExecRequest, port: int, ident: str) -> str:
    """The relay of a terminal session (see the module's docstring) on serial line
    ``port`` + 1; its pid file names the command, its tty file the line."""
    run, line = qga_tty.RUN, f"/dev/ttyS{port + 1}"
    env = {"TERM": "xterm", **request.env}
    inner = shlex.join([*enter_argv(), "-c", chroot_script(replace(request, tty=False,
                                                                   env=env))])
    return (f"mkdir -p {run}\n"
            f"[ -c {line} ] || {{ echo 'no terminal line {line} in the guest' >&2; exit 125; }}\n"
            f"echo {line} > {run}/{ident}.tty\n"
            f"stty -F {line} sane 115200 rows {request.rows} cols {request.cols}\n"
            f"setsid -c sh -c {shlex.quote(f'echo $$ > {run}/{ident}.pid; exec {inner}')}"
            f" <>{line} >&0 2>&0\n"
            f"code=$?\n"
            f"rm -f {run}/{ident}.pid {run}/{ident}.tty\n"
            f"exit $code\n")


def initrd(kernel: initramfs.Kernel, cache_dir: Path, rootfs: Path, workload: ExecRequest,
           hostname: str) -> bytes:
    """The image VM's initramfs: ours (cached per kernel), then the image's tree and the
    workload's script."""
    ours = initramfs.ensure(kernel, cache_dir, init=IMAGE_INIT, modules=MODULES).read_bytes()
    tree = initramfs.build_tree(rootfs, prefix=IMAGE_DIR.strip("/"), extra={
        RUN_SCRIPT.strip("/"): chroot_script(workload).encode(),
        HOSTNAME.strip("/"): hostname.encode() + b"\n"})
    return ours + b"\0" * (-len(ours) % 4) + tree
