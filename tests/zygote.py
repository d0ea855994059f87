"""`cumulo` and `cumulod` for the system tests, forked from processes that have already
imported them.

A suite runs the CLI some 2,600 times and starts some 170 daemons; each paid for a new
interpreter and its imports first (the CLI: about 0.1 s on a quiet 2-core host, 0.3 s
under the suite's load; the daemon: about 1 s of its 2 s start). Here one process per
pytest worker and program (the zygote) imports it once; each call forks the zygote, and
the child runs the installed script's own entry point (``cumulo.cli.entry:main``,
``cumulo.daemon:main``) with the call's argv, environment, working dir, network
namespace and standard streams: a real process, with its pid, exit code, output,
signals and timeout as ``subprocess`` gives them, minus the start-up. What start-up
itself costs and loads is tested with real interpreters (tests/unit/test_cli_imports.py,
the README's transcripts, the daemon's own start in the bench); ``CUMULO_TEST_FORK=0``
runs every call as a new process instead.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

BIN = Path(sys.executable).parent

# The zygote: imports the program, then forks a child per connection, which gets the
# call (JSON) and its stdin, stdout and stderr (SCM_RIGHTS); the zygote answers with the
# child's pid, then with its wait status once it has ended. It ends with the process
# that started it.
SERVER = r"""
import ctypes, json, os, selectors, socket, sys, traceback
from importlib import import_module, reload
KIND = sys.argv[2]
if KIND == "cli":
    import cumulo.cli.entry, cumulo.cli.fast, cumulo.cli.main, cumulo.cli.output
    import cumulo.client, cumulo.cli.exec_client, cumulo.cli.console_client
    for module, *_ in [*cumulo.cli.main.LAZY.values(), *cumulo.cli.main.NET_LAZY.values()]:
        import_module(module)
    import rich.console, rich.table
else:
    import cumulo.daemon, cumulo.faults
    # and what a daemon's start imports on its way: its drivers, uvicorn's protocols, and
    # what FastAPI loads while it builds the routes (an app made once here does that)
    import cumulo.api.app, cumulo.drivers.container.driver, cumulo.drivers.vm.driver
    import uvicorn.lifespan.on, uvicorn.protocols.http.h11_impl, websockets.server
    cumulo.api.app.create_app(None)

parent = os.getppid()
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1] + ".new")   # its name once it listens: never a refused connect
server.listen(64)
os.rename(sys.argv[1] + ".new", sys.argv[1])
sel = selectors.DefaultSelector()
sel.register(server, selectors.EVENT_READ)
children = {}   # pidfd -> (pid, connection)


def setup(call, fds):
    server.close()
    sel.close()
    for pidfd, (_, conn) in children.items():   # the other calls' ends
        os.close(pidfd)
        conn.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    if call.get("netns"):   # as `nsenter --net=PATH`
        fd = os.open(call["netns"], os.O_RDONLY)
        if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:   # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns {call['netns']}")
        os.close(fd)
    os.chdir(call["cwd"])
    os.environ.clear()
    os.environ.update(call["env"])
    sys.argv = call["argv"]


def cli(call, fds):
    try:
        setup(call, fds)
        cumulo.cli.entry.main()   # ends the process (os._exit) with the command's code
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(1)


def daemon(call, fds):
    try:
        setup(call, fds)
        reload(cumulo.faults)   # its armed points are read from the environment at import
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    cumulo.daemon.main(sys.argv[1:])   # and the process ends as any would: atexit, threads


while os.getppid() == parent:
    for key, _ in sel.select(timeout=1):
        if key.fileobj is server:
            conn, _ = server.accept()
            try:   # a caller gone before its pid was sent does not end the zygote
                data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            except OSError:
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                (cli if KIND == "cli" else daemon)(json.loads(data), fds)
                sys.exit(0)
            for fd in fds:
                os.close(fd)
            pidfd = os.pidfd_open(pid)
            children[pidfd] = (pid, conn)
            sel.register(pidfd, selectors.EVENT_READ)
            try:
                conn.sendall(f"{pid}\n".encode())
            except OSError:
                pass   # reaped and reported (to nobody) all the same
        else:
            pid, conn = children.pop(key.fd)
            sel.unregister(key.fd)
            os.close(key.fd)
            _, status = os.waitpid(pid, 0)
            try:
                conn.sendall(f"{status}\n".encode())
            except OSError:
                pass
            conn.close()
"""

_lock = threading.Lock()
_zygotes: dict[str, tuple[subprocess.Popen[bytes], str]] = {}


def forking() -> bool:
    return os.environ.get("CUMULO_TEST_FORK") != "0"


def _socket(kind: str, fresh: bool = False) -> str:
    """The socket of this pytest process's zygote of ``kind`` (started at its first use);
    ``fresh``: a new zygote (the last one refused a connection: it is ending)."""
    with _lock:
        if kind in _zygotes and _zygotes[kind][0].poll() is None:
            if not fresh:
                return _zygotes[kind][1]
            proc, old = _zygotes.pop(kind)
            _stop(proc, os.path.dirname(old))
        path = os.path.join(tempfile.mkdtemp(prefix=f"cu-{kind}-"), "zygote.sock")
        proc = subprocess.Popen([sys.executable, "-c", SERVER, path, kind],
                                stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not os.path.exists(path):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the {kind} zygote did not start")
            time.sleep(0.02)
        _zygotes[kind] = (proc, path)
        atexit.register(_stop, proc, os.path.dirname(path))
        return path


def _stop(proc: subprocess.Popen[bytes], folder: str) -> None:
    proc.kill()
    proc.wait(30)
    shutil.rmtree(folder, ignore_errors=True)


class Forked:
    """A child of a zygote, as much of ``subprocess.Popen`` as the tests use: its end
    (the wait status) comes from the zygote, its parent."""

    def __init__(self, kind: str, argv: list[str], env: dict[str, str], fds: list[int],
                 netns: str | None = None) -> None:
        self.args = argv
        self.returncode: int | None = None
        self._answer = bytearray()
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                self.conn.connect(_socket(kind))
            except (ConnectionRefusedError, FileNotFoundError):   # it died: a new one
                self.conn.connect(_socket(kind, fresh=True))
        except BaseException:
            self.conn.close()
            raise
        call = {"argv": argv, "env": env, "cwd": os.getcwd(), "netns": netns}
        socket.send_fds(self.conn, [json.dumps(call).encode()], fds)
        while b"\n" not in self._answer:
            self._read(None)
        self.pid = int(self._answer.split(b"\n")[0])

    def fileno(self) -> int:
        return self.conn.fileno()

    def _read(self, timeout: float | None) -> None:
        if self.returncode is not None:
            return
        ready, _, _ = select.select([self.conn], [], [], timeout)
        if not ready:
            return
        chunk = self.conn.recv(64)
        self._answer += chunk
        lines = self._answer.split(b"\n")
        if len(lines) >= 3:   # pid, status and the rest (nothing)
            self.returncode = os.waitstatus_to_exitcode(int(lines[1]))
            self.conn.close()
        elif not chunk:
            raise RuntimeError(f"the zygote left child {self._answer!r} unreported")

    def poll(self) -> int | None:
        self._read(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._read(left)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def spawn_daemon(args: list[str], stdout: IO[Any], netns: str | None = None
                 ) -> Forked | subprocess.Popen[bytes]:
    """``cumulod ARGS`` (in the network namespace at ``netns``), its output (and errors)
    to ``stdout``, with this process's environment, as ``subprocess.Popen`` would."""
    argv = [str(BIN / "cumulod"), *args]
    if not forking():
        wrapper = ["nsenter", f"--net={netns}"] if netns else []
        return subprocess.Popen([*wrapper, *argv], stdout=stdout, stderr=subprocess.STDOUT)
    fds = [_stdin(), os.dup(stdout.fileno()), os.dup(stdout.fileno())]
    try:
        return Forked("daemon", argv, dict(os.environ), fds, netns)
    finally:
        for fd in fds:
            os.close(fd)


def run(args: list[str], env: dict[str, str], input: str | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """As ``subprocess.run([BIN/"cumulo", *args], capture_output=True, text=True,
    env=env, input=input, timeout=timeout)``."""
    argv = [str(BIN / "cumulo"), *args]
    if not forking():
        return subprocess.run(argv, capture_output=True, text=True, env=env, input=input,
                              timeout=timeout)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if input is not None else (_stdin(), -1)
    try:
        child = Forked("cli", argv, env, [in_r, out_w, err_w])
    except BaseException:
        for fd in (out_r, err_r, in_w):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    if input is not None:
        threading.Thread(target=_feed, args=(in_w, input.encode()), daemon=True).start()
    deadline = None if timeout is None else time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    streams = {out_r: out, err_r: err}
    try:
        while streams or child.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                child.kill()
                raise subprocess.TimeoutExpired(argv, timeout or 0, bytes(out), bytes(err))
            waiting: list[Any] = [*streams, child] if child.returncode is None else [*streams]
            ready, _, _ = select.select(waiting, [], [], left)
            for fd in ready:
                if fd is child:
                    child.poll()
                elif chunk := os.read(fd, 65536):
                    streams[fd] += chunk
                else:
                    del streams[fd]
    finally:
        for fd in (out_r, err_r):
            os.close(fd)
        if child.returncode is None:
            child.conn.close()
    assert child.returncode is not None
    return subprocess.CompletedProcess(argv, child.returncode, _text(out), _text(err))


def _stdin() -> int:
    """This process's stdin, as a child of it would inherit it (or /dev/null)."""
    try:
        return os.dup(0)
    except OSError:
        return os.open(os.devnull, os.O_RDONLY)


def _feed(fd: int, data: bytes) -> None:
    try:
        with open(fd, "wb") as f:
            f.write(data)
    except BrokenPipeError:   # the command did not read it all
        pass


def _text(data: bytearray) -> str:
    """As ``text=True`` decodes: the locale's encoding, universal newlines."""
    return data.decode().replace("\r\n", "\n").replace("\r", "\n")
