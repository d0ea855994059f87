"""The OCI runtime (runc or crun) command lines; the only module that knows them.

Each daemon uses a private state directory (``--root <runtime_dir>/<runtime>``),
so several daemons, or test runs, can share a host without seeing each other.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from cumulo.errors import DriverError, RuntimeToolError, UnsupportedError
from cumulo.host import procs
from cumulo.host.tools import not_installed

KNOWN = ("runc", "crun")
TIMEOUT = 30.0
CRIU_TIMEOUT = 120.0


class OciRuntime:
    """One runtime binary plus the state root it keeps its containers in."""

    def __init__(self, name: str, runtime_dir: Path) -> None:
        if name not in KNOWN:
            raise UnsupportedError(f"unknown OCI runtime {name!r}: use {' or '.join(KNOWN)}")
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if found is None:
            raise not_installed(name, "run containers")
        self.name = name
        self.binary = found
        self.root = runtime_dir / name
        self.log = self.root / "runtime.log"

    def global_args(self) -> list[str]:
        """Arguments every call starts with (also handed to conmon as --runtime-arg)."""
        return [f"--root={self.root}", f"--log={self.log}", "--log-format=json"]

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run(
                [self.binary, *self.global_args(), *args],
                capture_output=True, text=True, timeout=TIMEOUT, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise DriverError(f"{self.name} {args[0]} failed: {err}") from err
        if check and proc.returncode != 0:
            raise RuntimeToolError(self.name, args, proc.returncode, proc.stderr)
        return proc

    def start(self, cid: str, pid: int | None = None) -> None:
        """Let the created container's PID 1 (host pid ``pid``) run its command.

        For runc, what ``runc start`` does, without running runc (a Go binary: ~5-9 ms
        to start, a sixth of a launch): ``runc init`` waits, before it execs the
        command, until a reader opens the container's ``exec.fifo``; it writes one byte
        there, and runc counts a container whose fifo is gone as running. (runc 1.1 runs
        poststart hooks at create, not here; we use no notify socket.) Anything else
        (crun, no fifo, PID 1 gone first) goes through the runtime, which says why."""
        if self.name == "runc" and pid is not None and _read_exec_fifo(
                self.root / cid / "exec.fifo", pid):
            return
        self._run(["start", cid])

    def kill(self, cid: str, signal: str) -> None:
        """Signal PID 1; ignores a container that already stopped."""
        proc = self._run(["kill", cid, signal], check=False)
        if proc.returncode != 0 and self.state(cid) not in (None, "stopped"):
            raise RuntimeToolError(self.name, ["kill", cid], proc.returncode, proc.stderr)

    def pause(self, cid: str) -> None:
        self._run(["pause", cid])

    def resume(self, cid: str) -> None:
        self._run(["resume", cid])

    def update(self, cid: str, resources_file: Path) -> None:
        self._run(["update", "-r", str(resources_file), cid])

    def knows(self, cid: str) -> bool:
        """Whether the runtime keeps state for ``cid``: both keep a dir per container in
        their root, so no ~5 ms runtime call is needed to learn that it does not."""
        return (self.root / cid).exists()

    def delete(self, cid: str) -> None:
        """Forget the container (killing it if alive); no error if it is unknown."""
        if not self.knows(cid):
            return
        proc = self._run(["delete", "--force", cid], check=False)
        if proc.returncode != 0 and self.state_json(cid) is not None:
            raise RuntimeToolError(self.name, ["delete", cid], proc.returncode, proc.stderr)

    def state_json(self, cid: str) -> dict[str, Any] | None:
        """The runtime's ``state`` output, or None if it does not know ``cid``."""
        proc = self._run(["state", cid], check=False)
        if proc.returncode != 0:
            return None
        try:
            data: dict[str, Any] = json.loads(proc.stdout)
        except ValueError as err:
            raise DriverError(f"{self.name} state {cid}: unreadable output") from err
        return data

    def state(self, cid: str) -> str | None:
        """``created``, ``running``, ``paused``, ``stopped`` or None if unknown."""
        data = self.state_json(cid)
        return None if data is None else str(data.get("status"))

    # --- checkpoint/restore: the runtime drives CRIU ------------------------------
    def criu_args(self, criu: str) -> list[str]:
        """Global arguments naming the CRIU binary (install.sh's 4.x, not PATH's)."""
        if self.name != "runc":
            raise UnsupportedError(f"{self.name} cannot checkpoint containers on this host"
                                   " (Debian's crun is built without CRIU): use runc")
        return [f"--criu={criu}"]

    def checkpoint(self, cid: str, criu: str, image_dir: Path, work_dir: Path, *,
                   pre_dump: bool = False, parent: str | None = None,
                   leave_running: bool = False) -> None:
        """Dump the container's processes to ``image_dir`` (CRIU images).

        Without ``pre_dump`` or ``leave_running`` the container is gone afterwards.
        ``pre_dump`` saves memory only, the container keeps running; ``parent`` (relative
        to ``image_dir``) names an earlier pre-dump so that only pages changed since are
        written. CRIU's own log is ``work_dir/dump.log``.
        """
        args = [*self.criu_args(criu), "checkpoint", f"--image-path={image_dir}",
                f"--work-path={work_dir}", "--file-locks", "--tcp-established"]
        if pre_dump:
            args.append("--pre-dump")
        if parent is not None:
            args.append(f"--parent-path={parent}")
        if leave_running:
            args.append("--leave-running")
        self._run_criu([*args, cid], work_dir / ("pre-dump.log" if pre_dump else "dump.log"))

    def _run_criu(self, args: list[str], log: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run([self.binary, *self.global_args(), *args], capture_output=True,
                                  text=True, timeout=CRIU_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise DriverError(f"{self.name} {args[1]} failed: {err}") from err
        if proc.returncode != 0:
            raise RuntimeToolError(self.name, args[1:2], proc.returncode,
                                   criu_error(proc.stderr, log))

    def exec_argv(
        self, cid: str, command: list[str], env: dict[str, str], cwd: str,
        pid_file: Path, tty: bool, user: tuple[int, int] | None = None,
    ) -> list[str]:
        """A foreground exec; with ``tty`` the runtime relays its own stdio to a new pty."""
        argv = [self.binary, *self.global_args(), "exec", "--cwd", cwd, "--pid-file", str(pid_file)]
        if user is not None:
            argv += ["--user", f"{user[0]}:{user[1]}"]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        if tty:
            argv.append("--tty")
        return [*argv, cid, *command]


def _read_exec_fifo(fifo: Path, pid: int) -> bool:
    """Open runc's exec fifo, read PID 1's byte until it execs (its end closes on exec),
    remove the fifo; False if that could not be done (runc start will say why)."""
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    got = b""
    deadline = time.monotonic() + TIMEOUT
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while time.monotonic() < deadline:
            # no event until PID 1 opened its end (then "0", then end of file at exec)
            if not poller.poll(100):
                if not procs.alive(pid):
                    return False
                continue
            try:
                chunk = os.read(fd, 16)
            except BlockingIOError:
                continue
            if not chunk:
                break
            got += chunk
        else:
            return False
    finally:
        os.close(fd)
    if not got:
        return False
    fifo.unlink(missing_ok=True)
    return True


def choose(preferred: str | None, default: str | None, runtime_dir: Path) -> OciRuntime:
    """The runtime the daemon was told to use, else the host probe's pick, else runc."""
    return OciRuntime(preferred or default or "runc", runtime_dir)


def criu_error(stderr: str, log: Path) -> str:
    """The first CRIU ``Error`` line of ``log`` (the cause), else the runtime's message.

    runc only says "criu failed: type NOTIFY errno 0"; the reason is in CRIU's log.
    Lines CRIU marks as errors but that do not stop it (RLIMIT_NOFILE) are skipped.
    """
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        if "Error (" in line and "RLIMIT_NOFILE" not in line:
            return "criu: " + line.split("): ", 1)[-1].strip() + f" (log: {log})"
    msgs = [m.group(1) for m in re.finditer(r'msg="([^"]*)"', stderr)]
    return "; ".join(msgs) or stderr.strip()
