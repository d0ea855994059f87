"""Exec in a VM through our guest agent over virtio-serial: both ends of one small protocol.

QEMU gives the guest ``PORTS`` virtio-serial ports named ``org.cumulo.agent.N``, each
backed on the host by a unix socket (a chardev server). In the guest, ``/init`` starts
``GUEST_SCRIPT`` (busybox sh) on every such port; the host connects, one session per
connection, one connection per port at a time (a lock file per port on the host).

Frames are text lines, ``ID VERB [ARG...]``, the binary payloads base64:
  host  -> guest  ``ID PING``                 the agent answers ``ID PONG``
  host  -> guest  ``ID RUN SCRIPT STDIN``     sh script and stdin, base64 (``-``: no stdin)
  guest -> host   ``ID START``, then ``ID OUT B64`` / ``ID ERR B64`` chunks, then ``ID EXIT N``
The host closing the connection while a command runs kills it (its process group).
Frames with another ID are leftovers of a cancelled session and are skipped; PING
repeats each second until a PONG comes (see ``AgentSession._connect``).

Stdin is collected until end of input, then sent with the command: enough for
``echo x | cumulo exec vm -- cat``, not for interactive programs (use the console).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shlex
import socket
import threading
import time
import uuid
from pathlib import Path

from cumulo.drivers.base import ExecRequest
from cumulo.errors import ConflictError, DriverError, InvalidInputError

PORTS = 2                       # concurrent execs per VM
PORT_NAME = "org.cumulo.agent.{}"
READY_TIMEOUT = 60.0            # a VM still booting on TCG answers within seconds
PING_EVERY = 1.0                # ask again if no PONG came (see _connect)
MAX_STDIN = 1024 * 1024         # stdin travels in one frame


def read_stdin(fd: int) -> bytes:
    """All of an exec's stdin (until the client closes it), at most MAX_STDIN bytes: a VM's
    agent takes it in one message."""
    stdin = bytearray()
    while chunk := os.read(fd, 65536):
        stdin += chunk
        if len(stdin) > MAX_STDIN:
            raise DriverError(f"stdin for exec into a VM is limited to {MAX_STDIN} bytes")
    return bytes(stdin)
MAX_FRAME = 1024 * 1024
KILLED = 137

GUEST_SCRIPT = r"""#!/bin/sh
# cumulo-agent PORT: run the host's exec requests, one at a time, on one virtio-serial port.
port=$1
dir=/run/agent-${port##*/}
mkdir -p "$dir"
mkfifo "$dir/idle"
exec 4<>"$dir/idle"
nap() { read -t "$1" _ <&4; }
send() { echo "$id $1" >&3; }
flush() {  # TAG FILE OFFSET-VAR: send what the command wrote since the last flush
  while :; do
    eval "off=\$$3"
    size=$(stat -c %s "$2") || return 0
    [ "$size" -gt "$off" ] || return 0
    tail -c +$((off + 1)) "$2" | head -c 49152 > "$dir/chunk"
    n=$(stat -c %s "$dir/chunk")
    [ "$n" -gt 0 ] || return 0
    eval "$3=$((off + n))"
    got=1
    echo "$id $1 $(base64 -w 0 "$dir/chunk")" >&3
  done
}
exec 3<>"$port"
while :; do
  # no host connected: the port reads as end of file at once
  if ! read -r id verb script input <&3; then nap 0.5; continue; fi
  case "$verb" in
    PING) send PONG; continue ;;
    RUN) ;;
    *) continue ;;
  esac
  rm -f "$dir/done"
  : > "$dir/out"; : > "$dir/err"
  echo "$script" | base64 -d > "$dir/cmd"
  if [ "$input" = "-" ]; then : > "$dir/in"; else echo "$input" | base64 -d > "$dir/in"; fi
  send START
  setsid sh -c 'sh "$1"; r=$?; : > "$2"; exit $r' - "$dir/cmd" "$dir/done" \
    < "$dir/in" > "$dir/out" 2> "$dir/err" &
  pid=$!
  # the host hanging up (or any line from it) cancels the command
  ( read -r _ <&3; kill -9 -$pid 2>/dev/null; : > "$dir/done" ) &
  watch=$!
  oo=0; eo=0; t=0.02
  while [ ! -e "$dir/done" ]; do
    nap $t
    got=0
    flush OUT "$dir/out" oo
    flush ERR "$dir/err" eo
    if [ $got = 1 ]; then t=0.02; else case $t in 0.02) t=0.1;; 0.1) t=0.3;; esac; fi
  done
  wait $pid
  code=$?
  kill $watch 2>/dev/null
  wait $watch
  flush OUT "$dir/out" oo
  flush ERR "$dir/err" eo
  send "EXIT $code"
done
"""


def port_socket(run_dir: Path, index: int) -> Path:
    """The host end of agent port ``index``."""
    return run_dir / f"agent{index}.sock"


def guest_script(request: ExecRequest) -> str:
    """The sh script the guest runs for ``request``: cwd, environment, then exec argv."""
    lines = [f"cd {shlex.quote(request.cwd or '/')} || exit 126"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in request.env.items()]
    if request.tty:  # no pty in the guest: one stream, in the order it was written
        lines.append("exec 2>&1")
    lines.append("exec " + shlex.join(request.command))
    return "\n".join(lines) + "\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else "-"


class OwnedFds:
    """The fds an exec session owns (``_fds``): each is closed once."""

    _fds: set[int]

    def _close(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.discard(fd)
            with contextlib.suppress(OSError):
                os.close(fd)


class AgentSession(OwnedFds):
    """An ExecSession whose process runs in the guest; a thread bridges socket and pipes."""

    def __init__(self, run_dir: Path, name: str, request: ExecRequest,
                 ready_timeout: float = READY_TIMEOUT) -> None:
        for key in request.env:
            if not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
                raise InvalidInputError(f"invalid environment variable name {key!r}")
        self.name = name
        self._id = uuid.uuid4().hex[:12]
        self._merge = request.tty        # no pty in the guest: stderr joins stdout
        self._script = guest_script(request).encode()
        self._code: int | None = None
        self._killed = False
        self._done = threading.Event()
        self._fds: set[int] = set()
        self._buf = bytearray()          # received bytes not yet split into frames
        self._lock_fd, self._sock = self._connect(run_dir, ready_timeout)
        try:
            in_r, self._in_w = os.pipe()
            out_r, self._out_w = os.pipe()
            self._fds.update((in_r, self._in_w, out_r, self._out_w))
            self.stdin_fd: int | None = self._in_w
            self.stdout_fd = out_r
            self.stderr_fd: int | None = None
            self._err_w = self._out_w
            if not self._merge:
                err_r, self._err_w = os.pipe()
                self._fds.update((err_r, self._err_w))
                self.stderr_fd = err_r
            self._thread = threading.Thread(target=self._run, args=(in_r,), daemon=True,
                                            name=f"agent-{name}")
            self._thread.start()
        except BaseException:
            self._release()
            raise

    # --- connection ---------------------------------------------------------
    def _connect(self, run_dir: Path, timeout: float) -> tuple[int, socket.socket]:
        """A free port (lock held) whose agent answered PING.

        PING is repeated: the previous session's watcher in the guest may not have
        seen that host hang up yet, and then takes the first line we send as its own.
        """
        deadline = time.monotonic() + timeout
        index, lock_fd = self._free_port(run_dir, deadline)
        path = port_socket(run_dir, index)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.connect(str(path))
            frame: tuple[str, str] | None = ("", "")
            while frame is not None and frame[0] != "PONG":
                sock.sendall(f"{self._id} PING\n".encode())
                sock.settimeout(max(0.05, min(PING_EVERY, deadline - time.monotonic())))
                try:
                    frame = self._frame(sock)
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        raise
            if frame is None:
                raise DriverError(f"the guest agent of {self.name!r} closed the connection")
            sock.settimeout(None)
        except (OSError, DriverError) as err:
            sock.close()
            os.close(lock_fd)
            if isinstance(err, TimeoutError):
                raise DriverError(f"the guest agent of {self.name!r} did not answer within"
                                  f" {timeout:.0f}s (is the guest booted?)") from err
            if isinstance(err, DriverError):
                raise
            raise DriverError(f"cannot reach the guest agent of {self.name!r}: {err}") from err
        return lock_fd, sock

    def _free_port(self, run_dir: Path, deadline: float) -> tuple[int, int]:
        """(index, fd of its held lock) of a port no other session uses."""
        while True:
            for index in range(PORTS):
                if not port_socket(run_dir, index).exists():
                    continue
                fd = os.open(run_dir / f"agent{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return index, fd
                except BlockingIOError:
                    os.close(fd)
            if not port_socket(run_dir, 0).exists():
                raise DriverError(f"VM {self.name!r} has no guest agent channel"
                                  " (created before exec into VMs existed: recreate it)")
            if time.monotonic() >= deadline:
                raise ConflictError(f"all {PORTS} exec channels of {self.name!r} are busy")
            time.sleep(0.1)

    def _frame(self, sock: socket.socket) -> tuple[str, str] | None:
        """(verb, rest) of the next frame of this session; None at end of stream.

        A timeout leaves a partly read line in the buffer for the next call.
        """
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_FRAME:
                    raise DriverError(f"the guest agent of {self.name!r} sent a frame"
                                      f" over {MAX_FRAME} bytes")
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                self._buf += chunk
                continue
            line = bytes(self._buf[:end])
            del self._buf[:end + 1]
            fid, _, rest = line.decode(errors="replace").rstrip("\r").partition(" ")
            if fid == self._id:
                verb, _, arg = rest.partition(" ")
                return verb, arg

    # --- the bridge thread ----------------------------------------------------
    def _run(self, in_r: int) -> None:
        code = 255
        try:
            stdin = read_stdin(in_r)
            self._sock.sendall(f"{self._id} RUN {_b64(self._script)} {_b64(stdin)}\n"
                               .encode())
            while (frame := self._frame(self._sock)) is not None:
                verb, arg = frame
                if verb in ("OUT", "ERR"):
                    os.write(self._out_w if verb == "OUT" else self._err_w,
                             base64.b64decode(arg))
                elif verb == "EXIT":
                    code = int(arg)
                    break
            else:
                self._problem(f"the guest agent of {self.name!r} hung up before the command"
                              " ended (the VM stopped?)")
        except (OSError, ValueError, DriverError) as err:
            self._problem(str(err))
        finally:
            self._code = KILLED if self._killed else code
            self._close(self._out_w)
            self._close(self._err_w)
            self._done.set()

    def _problem(self, message: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self._err_w, f"cumulo: {message}\n".encode())

    # --- ExecSession -------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self._code if self._done.is_set() else None

    def close_stdin(self) -> None:
        self._close(self._in_w)

    def resize(self, rows: int, cols: int) -> None:
        pass    # no terminal in the guest

    def kill(self) -> None:
        if not self._done.is_set():
            self._killed = True
        self._close(self._in_w)
        self._release()
        self._thread.join(5)
        if self._code is None:
            self._code = KILLED
        self._done.set()
        for fd in list(self._fds):
            self._close(fd)

    def _release(self) -> None:
        """Hang up (the guest kills a running command) and free the port."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1
