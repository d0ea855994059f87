"""Interactive exec (``exec -t``) in a VM booted from its own disk: a pty in the guest,
its bytes over a virtio-serial port of their own.

qemu-guest-agent runs commands without a terminal and returns their output when they
end, so a terminal session takes a second channel: QEMU gives these VMs ``PORTS``
virtio-serial ports named ``org.cumulo.tty.N``, each a unix socket on the host. A
session takes a free port (a lock file per port), connects to its socket, then asks
the agent (``guest-exec``) to run a relay in the guest: util-linux's ``script``
(Essential in Debian, so in every Debian guest) opens a pty, runs the command in it
with the terminal's size, and copies the port to the pty and back; ECHO stays on in
the guest's pty because its input is not a terminal. Nothing to install in the guest.

The exit code comes from ``guest-exec-status`` (``script -e`` returns the command's);
the agent is asked in short connections, so other execs and file copies go on while a
session is open. A resize runs ``stty`` on the session's pty (the kernel sends the
command SIGWINCH); a kill sends SIGKILL to ``script``, whose pty hangs up the command.

Busybox (initramfs) VMs have no ``script``: they get ``virtconsole`` devices instead
(``org.cumulo.hvc.N``), each a tty in the guest (``/dev/hvcN``, the kernel's hvc driver
with its line discipline). The relay there is busybox ``setsid -c``: the command in a
session of its own whose controlling tty is that console, so ^C is SIGINT to its
foreground group, ``stty`` sets its size (a resize: SIGWINCH), and the relay's sh waits
for it and returns its exit code. QEMU does not hold back a console's output when the host
is slow to take it (a virtserialport's it does): what its chardev cannot take at once is
dropped. So a console's chardev is a pair of FIFOs (``hvcN.in``, ``hvcN.out``) rather
than a socket: the host makes the output FIFO 1 MiB, and small writes (a line each) share
its pages, where each would take a socket buffer of its own. A console is slow for bulk
output on TCG all the same (tens of KB/s: the guest waits for QEMU at each write): fine
for a terminal; ``exec`` without ``-t`` is the way for data.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cumulo.drivers.base import ExecRequest
from cumulo.drivers.vm import qga
from cumulo.drivers.vm.exec_session import KILLED, OwnedFds, guest_script, write_all
from cumulo.errors import ConflictError, DriverError, InvalidInputError

PORTS = 2                           # concurrent terminal sessions per VM
PORT_NAME = "org.cumulo.tty.{}"
FIFO_SIZE = 1 << 20                 # the console output FIFO (/proc/sys/fs/pipe-max-size)
STATUS_EVERY = 0.5                  # seconds between guest-exec-status questions
DRAIN_QUIET = 0.3                   # the command ended: output still coming is read
DRAIN_MAX = 5.0
KILL_WAIT = 10.0
RUN = "/run/cumulo-tty"             # in the guest: each session's pty name and relay pid


def relay_script(request: ExecRequest, port: int, ident: str) -> str:
    """The guest's relay: ``script`` on the port, the command in its pty. ``script``
    runs in the foreground: a non-interactive sh starts a background job with SIGINT
    ignored, and the command would inherit that (^C would do nothing)."""
    inner = (f"echo $PPID > {RUN}/{ident}.pid; tty > {RUN}/{ident}.tty;"
             f" stty rows {request.rows} cols {request.cols} 2>/dev/null\n"
             + guest_script(replace(request, tty=False)))
    dev = f"/dev/virtio-ports/{PORT_NAME.format(port)}"
    return (f"mkdir -p {RUN}\n"
            f"[ -c {dev} ] || {{ echo 'no port {dev} in the guest' >&2; exit 125; }}\n"
            f"script -q -e -c {shlex.quote(inner)} /dev/null <>{dev} >&0 2>&0\n"
            f"code=$?\n"
            f"rm -f {RUN}/{ident}.pid {RUN}/{ident}.tty\n"
            f"exit $code\n")


def hvc_script(request: ExecRequest, port: int, ident: str) -> str:
    """A busybox guest's relay: the command in a session of its own on the virtio console
    ``/dev/hvcN`` (its controlling tty: ``setsid -c``), in the foreground of this sh,
    which then has its exit code. ``stty sane``: a killed full-screen program may have
    left the console raw."""
    dev = f"/dev/hvc{port}"
    inner = (f"echo $$ > {RUN}/{ident}.pid;"
             f" stty sane rows {request.rows} cols {request.cols} 2>/dev/null\n"
             + guest_script(replace(request, tty=False)))
    return (f"mkdir -p {RUN}\n"
            f"[ -c {dev} ] || {{ echo 'no console {dev} in the guest' >&2; exit 125; }}\n"
            f"echo {dev} > {RUN}/{ident}.tty\n"
            f"setsid -c sh -c {shlex.quote(inner)} <>{dev} >&0 2>&0\n"
            f"code=$?\n"
            f"rm -f {RUN}/{ident}.pid {RUN}/{ident}.tty\n"
            f"exit $code\n")


@dataclass(frozen=True)
class Kind:
    """The host's end of a VM's terminal slots: their file names, and their chardev."""

    prefix: str
    fifo: bool      # two FIFOs (a virtio console's: see the module's docstring), else a socket


PTY = Kind("tty", False)   # virtio-serial ports (script's pty), serial lines (image VMs)
HVC = Kind("hvc", True)    # the virtio consoles of busybox VMs: /dev/hvcN in the guest
HVC_NAME = "org.cumulo.hvc.{}"


def socket_path(run_dir: Path, port: int, kind: Kind = PTY) -> Path:
    """The host end of a slot: a unix socket, or with ``kind.fifo`` the FIFOs' stem."""
    return run_dir / (f"{kind.prefix}{port}" if kind.fifo else f"{kind.prefix}{port}.sock")


def chardev(run_dir: Path, port: int, kind: Kind) -> str:
    """QEMU's -chardev for a slot (QEMU opens ``PATH.in`` and ``PATH.out`` of a pipe)."""
    path = socket_path(run_dir, port, kind)
    return (f"pipe,id={kind.prefix}{port},path={path}" if kind.fifo
            else f"socket,id={kind.prefix}{port},path={path},server=on,wait=off")


def make_fifos(run_dir: Path, ports: int) -> None:
    """The console slots' FIFOs, new before each QEMU start (QEMU needs them to exist)."""
    for port in range(ports):
        stem = socket_path(run_dir, port, HVC)
        for end in (".in", ".out"):
            path = stem.with_name(stem.name + end)
            path.unlink(missing_ok=True)
            os.mkfifo(path, 0o600)


class TtySession(OwnedFds):
    """An ExecSession with a pty in the guest (see the module's docstring)."""

    def __init__(self, run_dir: Path, name: str, request: ExecRequest, ports: int,
                 relay: Callable[[ExecRequest, int, str], str] = relay_script,
                 kind: Kind = PTY) -> None:
        """``relay``: the guest's relay for (request, port, session id), when not
        ``relay_script`` (an image VM's, on a serial line: image_guest.py; a busybox VM's
        on a virtio console: ``hvc_script``, with ``kind`` HVC)."""
        self.name, self._run_dir, self._kind = name, run_dir, kind
        self._id = uuid.uuid4().hex[:12]
        self._code: int | None = None
        self._done = threading.Event()
        self._stop = threading.Event()
        self._fds: set[int] = set()
        self._lock, self._port = self._take_port(ports)
        self._fds.add(self._lock)
        try:
            self._rd, self._wr = self._connect(socket_path(run_dir, self._port, kind))
            self._drop_stale()
            with qga.connect(run_dir, name) as agent:   # fails now without an agent
                self._pid = int(agent.call(
                    "guest-exec", path="/bin/sh",
                    arg=["-c", relay(request, self._port, self._id)],
                    env=[f"{k}={v}" for k, v in (("TERM", request.env.get("TERM", "xterm")),
                                                 ("PATH", "/usr/local/sbin:/usr/local/bin:"
                                                  "/usr/sbin:/usr/bin:/sbin:/bin"))])["pid"])
        except OSError as err:
            self._release()
            raise DriverError(f"cannot open a terminal in {name!r}: {err}") from err
        except BaseException:
            self._release()
            raise
        in_r = self._open_pipes(merge=True)
        self._threads = [threading.Thread(target=self._pump_out, daemon=True,
                                          name=f"tty-out-{name}"),
                         threading.Thread(target=self._pump_in, args=(in_r,), daemon=True,
                                          name=f"tty-in-{name}")]
        for t in self._threads:
            t.start()

    def _take_port(self, ports: int) -> tuple[int, int]:
        for port in range(ports):
            fd = os.open(self._run_dir / f"{self._kind.prefix}{port}.lock",
                         os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd, port
            except BlockingIOError:
                os.close(fd)
        raise ConflictError(f"{ports} terminal sessions are open in {self.name!r} already:"
                            " end one first")

    def _connect(self, path: Path) -> tuple[int, int]:
        """The slot's (read, write) fds, owned: its socket, or its two FIFOs, the output
        one made large (see the module's docstring)."""
        if self._kind.fifo:
            rd = os.open(f"{path}.out", os.O_RDONLY | os.O_NONBLOCK)
            self._fds.add(rd)
            with contextlib.suppress(OSError):      # else the default 64 KiB
                fcntl.fcntl(rd, fcntl.F_SETPIPE_SZ, FIFO_SIZE)
            wr = os.open(f"{path}.in", os.O_WRONLY | os.O_NONBLOCK)  # ENXIO without QEMU
            self._fds.add(wr)
            os.set_blocking(wr, True)
            return rd, wr
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            raise
        fd = sock.detach()
        self._fds.add(fd)
        return fd, fd

    def _drop_stale(self) -> None:
        """Bytes a previous session's relay wrote after it was given up are not ours."""
        while select.select([self._rd], [], [], 0)[0]:
            try:
                if not os.read(self._rd, 65536):
                    break
            except BlockingIOError:
                break

    # --- the bytes ---------------------------------------------------------------
    def _pump_in(self, in_r: int) -> None:
        """What the user types, to the guest's pty."""
        with contextlib.suppress(OSError):
            while data := os.read(in_r, 65536):
                write_all(self._wr, data)

    def _pump_out(self) -> None:
        """The pty's output to the caller until the relay exited (and its last bytes
        came), then the exit code."""
        code, ended_at, next_status = None, 0.0, 0.0
        try:
            while True:
                now = time.monotonic()
                if code is None and now >= next_status and not self._stop.is_set():
                    code = self._status()
                    next_status = now + STATUS_EVERY
                    ended_at = now if code is not None else 0.0
                ready = select.select([self._rd], [], [],
                                      DRAIN_QUIET if code is not None else STATUS_EVERY)[0]
                if ready:
                    try:
                        data = os.read(self._rd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        break
                    write_all(self._out_w, data)
                elif code is not None or self._stop.is_set():
                    break        # quiet after the end: all of it came
                if code is not None and time.monotonic() - ended_at > DRAIN_MAX:
                    break
        except (OSError, DriverError, InvalidInputError) as err:
            with contextlib.suppress(OSError):
                os.write(self._out_w, f"\r\ncumulo: {err}\r\n".encode())
        finally:
            self._code = KILLED if self._stop.is_set() or code is None else code
            self._close(self._out_w)
            self._done.set()

    def _status(self) -> int | None:
        """The relay's exit code once it exited (None while it runs)."""
        with qga.connect(self._run_dir, self.name) as agent:
            status = agent.call("guest-exec-status", pid=self._pid)
        if not status.get("exited"):
            return None
        code = status.get("exitcode")
        return 128 + int(status.get("signal", 9)) if code is None else int(code)

    def _guest(self, script: str) -> None:
        """A short command in the guest through the agent (resize, kill)."""
        with qga.connect(self._run_dir, self.name) as agent:
            agent.run(["/bin/sh", "-c", script], b"")

    # --- ExecSession ---------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self._code if self._done.is_set() else None

    def close_stdin(self) -> None:
        """End of input on a terminal: ^D."""
        with contextlib.suppress(OSError):
            os.write(self._wr, b"\x04")

    def resize(self, rows: int, cols: int) -> None:
        with contextlib.suppress(DriverError, InvalidInputError):
            self._guest(f"t=$(cat {RUN}/{self._id}.tty) && stty -F \"$t\" rows {int(rows)}"
                        f" cols {int(cols)}")

    def kill(self) -> None:
        if not self._done.is_set():
            self._stop.set()
            with contextlib.suppress(DriverError, InvalidInputError):
                self._guest(f"kill -KILL $(cat {RUN}/{self._id}.pid) 2>/dev/null")
            deadline = time.monotonic() + KILL_WAIT
            with contextlib.suppress(DriverError, InvalidInputError):
                while self._status() is None and time.monotonic() < deadline:
                    time.sleep(STATUS_EVERY)
        self._done.wait(DRAIN_MAX + 1)
        if self._code is None:
            self._code = KILLED
        self._done.set()
        self._release()

    def _release(self) -> None:
        for fd in list(self._fds):
            self._close(fd)
