"""The standard QEMU guest agent protocol, host side: qemu-guest-agent in VMs booted from
their own disk, our busybox sh agent (guest_qga.py) in initramfs VMs.

QEMU gives the guest a virtio-serial port ``org.qemu.guest_agent.0`` backed on the
host by a unix socket (``qga.sock`` in the VM's run dir); one client at a time
(a lock file). JSON commands, one per line; ``guest-sync`` with a fresh id, after a
0xFF byte that resets the agent's parser, skips whatever a previous client left.

Used: guest-sync, guest-ping, guest-info, guest-exec + guest-exec-status (exec:
stdin collected until end of input; output as it comes with our agent, when the command
ends with qemu-guest-agent),
guest-file-open/read/write/close (file push/pull), guest-shutdown (stop).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cumulo.drivers.base import ExecRequest
from cumulo.drivers.vm.exec_session import (
    KILLED,
    OwnedFds,
    guest_script,
    read_stdin,
    write_all,
)
from cumulo.errors import DriverError, InvalidInputError

PORT_NAME = "org.qemu.guest_agent.0"
SOCKET = "qga.sock"
READY_TIMEOUT = 90.0          # a whole Debian boots on TCG in about a minute
SYNC_EVERY = 2.0
POLL = 0.2                    # guest-exec-status of a short command (run)
POLL_MIN, POLL_MAX = 0.05, 0.25  # of an exec session: sooner while output comes
KILL_WAIT = 10.0
CHUNK = 48 * 1024             # file bytes per guest-file-read/write


def socket_path(run_dir: Path) -> Path:
    return run_dir / SOCKET


class Qga:
    """One connection to a guest's agent (held exclusively until closed)."""

    def __init__(self, run_dir: Path, name: str, timeout: float = READY_TIMEOUT) -> None:
        self.name = name
        self._buf = b""
        try:
            self._lock = os.open(run_dir / "qga.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:   # its run dir went with it (a kill racing a delete)
            raise DriverError(f"the guest agent of {name!r} is gone: the VM is not"
                              " running") from None
        deadline = time.monotonic() + timeout
        try:
            while True:   # one client at a time: wait for the previous one (bounded)
                try:
                    fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise DriverError(f"the guest agent of {name!r} is busy") from None
                    time.sleep(0.1)
            self._sock = self._sync(socket_path(run_dir), deadline)
        except BaseException:
            os.close(self._lock)
            raise

    def _sync(self, path: Path, deadline: float) -> socket.socket:
        """Connected and in step with the agent (guest-sync answered with our id)."""
        if not path.exists():
            raise DriverError(f"VM {self.name!r} has no QEMU guest agent channel")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            while True:
                ident = random.randrange(1, 2**31)
                sock.sendall(b"\xff" + json.dumps(
                    {"execute": "guest-sync", "arguments": {"id": ident}}).encode() + b"\n")
                sock.settimeout(SYNC_EVERY)
                try:
                    while self._reply(sock).get("return") != ident:
                        pass
                    sock.settimeout(None)
                    return sock
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise DriverError(
                            f"the guest agent of {self.name!r} did not answer (is the guest"
                            " booted, with qemu-guest-agent running?)") from None
        except OSError as err:
            sock.close()
            raise DriverError(f"cannot reach the guest agent of {self.name!r}: {err}") from err
        except BaseException:
            sock.close()
            raise

    def _reply(self, sock: socket.socket) -> dict[str, Any]:
        while b"\n" not in self._buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise DriverError(f"the guest agent of {self.name!r} hung up")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            reply = json.loads(line.strip(b"\xff \r") or b"{}")
        except ValueError:
            return {}
        return reply if isinstance(reply, dict) else {}

    def call(self, command: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
            reply = self._reply(self._sock)
        except OSError as err:
            raise DriverError(f"the guest agent of {self.name!r}: {err}") from err
        if "error" in reply:
            raise InvalidInputError(str(reply["error"].get("desc", reply["error"])))
        return reply.get("return")

    def shutdown(self) -> None:
        """guest-shutdown: the agent powers the guest off (and sends no reply)."""
        try:
            self._sock.sendall(json.dumps({"execute": "guest-shutdown",
                                           "arguments": {"mode": "powerdown"}}).encode()
                               + b"\n")
        except OSError as err:
            raise DriverError(f"the guest agent of {self.name!r}: {err}") from err

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
        with contextlib.suppress(OSError):
            os.close(self._lock)

    # --- what the driver asks -------------------------------------------------------
    def write_file(self, path: str, data: bytes, mode: int) -> None:
        handle = self.call("guest-file-open", path=path, mode="w")
        try:
            for at in range(0, len(data), CHUNK) or [0]:
                self.call("guest-file-write", handle=handle,
                          **{"buf-b64": base64.b64encode(data[at:at + CHUNK]).decode()})
        finally:
            self.call("guest-file-close", handle=handle)
        code, _, err = self.run(["chmod", f"{mode:o}", path], b"")
        if code != 0:
            raise InvalidInputError(f"cannot chmod {path} in {self.name}: {err.decode()}")

    def read_file(self, path: str, limit: int) -> bytes:
        handle = self.call("guest-file-open", path=path, mode="r")
        out = bytearray()
        try:
            while True:
                got = self.call("guest-file-read", handle=handle, count=CHUNK)
                out += base64.b64decode(got.get("buf-b64", ""))
                if len(out) > limit:
                    raise InvalidInputError(f"file pull copies at most {limit // 2**20} MiB")
                if got.get("eof") or not got.get("count"):
                    return bytes(out)
        finally:
            self.call("guest-file-close", handle=handle)

    def run(self, argv: list[str], stdin: bytes, env: list[str] | None = None,
            stop: threading.Event | None = None) -> tuple[int, bytes, bytes]:
        """guest-exec, then guest-exec-status until it exited: (code, stdout, stderr)."""
        args: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin:
            args["input-data"] = base64.b64encode(stdin).decode()
        if env:
            args["env"] = env
        pid = self.call("guest-exec", **args)["pid"]
        while True:
            if stop is not None and stop.is_set():
                return KILLED, b"", b""
            status = self.call("guest-exec-status", pid=pid)
            if status.get("exited"):
                code = status.get("exitcode")
                if code is None:
                    code = 128 + int(status.get("signal", 9))
                return (int(code), base64.b64decode(status.get("out-data", "")),
                        base64.b64decode(status.get("err-data", "")))
            time.sleep(POLL)


@contextlib.contextmanager
def connect(run_dir: Path, name: str, timeout: float = READY_TIMEOUT) -> Iterator[Qga]:
    agent = Qga(run_dir, name, timeout)
    try:
        yield agent
    finally:
        agent.close()


class QgaSession(OwnedFds):
    """An ExecSession through the guest agent: stdin until end of input, then the command.

    Each question is a short connection, so other execs and file copies go on meanwhile.
    Output comes with guest-exec-status: qemu-guest-agent returns all of it once the
    command exited; our busybox agent (guest_qga.py) also returns what is new while it
    runs (``cumulo-out``/``cumulo-err``), and the final ``out-data`` adds only the rest.
    """

    def __init__(self, run_dir: Path, name: str, request: ExecRequest,
                 argv: list[str] | None = None) -> None:
        """``argv``: what the guest runs for ``request`` when not ``sh -c`` of its
        ``guest_script`` (an image VM's: image_guest.py)."""
        self.name, self._run_dir = name, run_dir
        self._argv = argv or ["/bin/sh", "-c", guest_script(request)]
        self._code: int | None = None
        self._pid: int | None = None
        self._done = threading.Event()
        self._stop = threading.Event()
        self._fds: set[int] = set()
        Qga(run_dir, name).close()      # fails now if the guest has no agent (or waits for it)
        in_r = self._open_pipes(merge=request.tty)
        self._thread = threading.Thread(target=self._work, args=(in_r,), daemon=True,
                                        name=f"qga-{name}")
        self._thread.start()

    def _work(self, in_r: int) -> None:
        code = 255
        try:
            stdin = read_stdin(in_r)
            args: dict[str, Any] = {"path": self._argv[0], "arg": self._argv[1:],
                                    "capture-output": True}
            if stdin:
                args["input-data"] = base64.b64encode(stdin).decode()
            with connect(self._run_dir, self.name) as agent:
                self._pid = int(agent.call("guest-exec", **args)["pid"])
            if self._stop.is_set():     # killed while it was being started
                self._kill_guest(self._pid)
            code = self._follow(self._pid)
        except (OSError, ValueError, DriverError, InvalidInputError) as err:
            with contextlib.suppress(OSError):
                os.write(self._err_w, f"cumulo: {err}\n".encode())
        finally:
            self._code = KILLED if self._stop.is_set() else code
            for fd in {self._out_w, self._err_w}:
                self._close(fd)
            self._done.set()

    def _follow(self, pid: int) -> int:
        """Output to the pipes as it comes, until the command exited: its exit code."""
        sent = {"out": 0, "err": 0}
        pause = POLL_MIN
        while not self._stop.is_set():
            with connect(self._run_dir, self.name) as agent:
                status = agent.call("guest-exec-status", pid=pid)
            news = False
            for key, fd in (("out", self._out_w), ("err", self._err_w)):
                if status.get("exited"):    # all of it: what we have not had yet
                    data = base64.b64decode(status.get(f"{key}-data", ""))[sent[key]:]
                else:
                    data = base64.b64decode(status.get(f"cumulo-{key}", ""))
                write_all(fd, data)
                sent[key] += len(data)
                news = news or bool(data)
            if status.get("exited"):
                code = status.get("exitcode")
                return 128 + int(status.get("signal", 9)) if code is None else int(code)
            pause = POLL_MIN if news else min(POLL_MAX, pause * 2)
            self._stop.wait(pause)
        return KILLED

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self._code if self._done.is_set() else None

    def close_stdin(self) -> None:
        self._close(self._in_w)

    def resize(self, rows: int, cols: int) -> None:
        pass    # no terminal

    def kill(self) -> None:
        """SIGKILL to the command (and its process group, where it has its own)."""
        self._stop.set()
        self._close(self._in_w)
        if self._pid is not None and not self._done.is_set():
            self._kill_guest(self._pid)
        self._thread.join(KILL_WAIT)
        if self._code is None:
            self._code = KILLED
        self._done.set()
        for fd in list(self._fds):
            self._close(fd)

    def _kill_guest(self, pid: int) -> None:
        with contextlib.suppress(DriverError, InvalidInputError), \
                connect(self._run_dir, self.name, KILL_WAIT) as agent:
            agent.run(["/bin/sh", "-c", f"kill -9 -{pid} 2>/dev/null || kill -9 {pid}"], b"")
