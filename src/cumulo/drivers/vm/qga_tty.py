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
from dataclasses import replace
from pathlib import Path

from cumulo.drivers.base import ExecRequest
from cumulo.drivers.vm import qga
from cumulo.drivers.vm.exec_session import KILLED, OwnedFds, guest_script, write_all
from cumulo.errors import ConflictError, DriverError, InvalidInputError

PORTS = 2                           # concurrent terminal sessions per VM
PORT_NAME = "org.cumulo.tty.{}"
STATUS_EVERY = 0.5                  # seconds between guest-exec-status questions
DRAIN_QUIET = 0.3                   # the command ended: output still coming is read
DRAIN_MAX = 5.0
KILL_WAIT = 10.0
RUN = "/run/cumulo-tty"             # in the guest: each session's pty name and relay pid


def socket_path(run_dir: Path, port: int) -> Path:
    return run_dir / f"tty{port}.sock"


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


class TtySession(OwnedFds):
    """An ExecSession with a pty in the guest (see the module's docstring)."""

    def __init__(self, run_dir: Path, name: str, request: ExecRequest, ports: int,
                 relay: Callable[[ExecRequest, int, str], str] = relay_script) -> None:
        """``relay``: the guest's relay for (request, port, session id), when not
        ``relay_script`` (an image VM's, on a serial line: image_guest.py)."""
        self.name, self._run_dir = name, run_dir
        self._id = uuid.uuid4().hex[:12]
        self._code: int | None = None
        self._done = threading.Event()
        self._stop = threading.Event()
        self._fds: set[int] = set()
        self._lock, self._port = self._take_port(ports)
        self._fds.add(self._lock)
        try:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.connect(str(socket_path(run_dir, self._port)))
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
            fd = os.open(self._run_dir / f"tty{port}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd, port
            except BlockingIOError:
                os.close(fd)
        raise ConflictError(f"{ports} terminal sessions are open in {self.name!r} already:"
                            " end one first")

    def _drop_stale(self) -> None:
        """Bytes a previous session's relay wrote after it was given up are not ours."""
        while select.select([self._sock], [], [], 0)[0]:
            if not self._sock.recv(65536):
                break

    # --- the bytes ---------------------------------------------------------------
    def _pump_in(self, in_r: int) -> None:
        """What the user types, to the guest's pty."""
        with contextlib.suppress(OSError):
            while data := os.read(in_r, 65536):
                self._sock.sendall(data)

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
                ready = select.select([self._sock], [], [],
                                      DRAIN_QUIET if code is not None else STATUS_EVERY)[0]
                if ready:
                    data = self._sock.recv(65536)
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
            self._sock.sendall(b"\x04")

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
        with contextlib.suppress(OSError, AttributeError):
            self._sock.close()
        for fd in list(self._fds):
            self._close(fd)
