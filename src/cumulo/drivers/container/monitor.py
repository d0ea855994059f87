"""conmon, the per-container supervisor: its command line and its start.

conmon daemonizes, runs ``<runtime> create``, reports PID 1's host pid on a sync
pipe, keeps PID 1's console in a k8s-file log, and writes the exit code to
``exit_dir/<id>`` and ``persist_dir/exit`` when PID 1 ends. Because it outlives
the daemon, every fact about a container is read back from these files.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cumulo.drivers.container.runtime import OciRuntime
from cumulo.errors import DriverError, RuntimeToolError
from cumulo.host import keys, procs
from cumulo.host.tools import not_installed

log = logging.getLogger(__name__)

SYNC_TIMEOUT = 30.0
# what ``runtime restore`` needs besides the images: the same options the dump used
RESTORE_OPTS = ("--file-locks", "--tcp-established")


@dataclass(frozen=True)
class ConmonPaths:
    """Where conmon keeps what it knows about one container."""

    run_dir: Path       # volatile: pid files, exit dir, attach socket
    persist_dir: Path   # persistent: ``exit``
    log_path: Path      # PID 1's console, k8s-file format

    @property
    def exit_dir(self) -> Path:
        return self.run_dir / "exits"

    @property
    def socket_dir(self) -> Path:
        return self.run_dir / "sock"

    @property
    def conmon_pidfile(self) -> Path:
        return self.run_dir / "conmon.pid"

    @property
    def exit_file(self) -> Path:
        return self.persist_dir / "exit"


def conmon_binary() -> str:
    found = shutil.which("conmon") or shutil.which("conmon", path="/usr/bin:/usr/libexec/podman")
    if found is None:
        raise not_installed("conmon", "supervise containers")
    return found


def command_line(runtime: OciRuntime, cid: str, bundle: Path, paths: ConmonPaths,
                 restore: Path | None = None, runtime_args: tuple[str, ...] = (),
                 stdio: tuple[bool, bool] = (False, False)) -> list[str]:
    """conmon's argv; with ``restore`` (a CRIU image dir) conmon runs ``<runtime> restore
    --detach --image-path restore --work-path bundle`` instead of ``create``."""
    argv = [
        conmon_binary(), "--api-version", "1", "-c", cid, "-u", cid,
        "-r", runtime.binary, "-b", str(bundle), "-p", str(bundle / "pidfile"), "-n", cid,
        "--exit-dir", str(paths.exit_dir), "--persist-dir", str(paths.persist_dir),
        "-l", f"k8s-file:{paths.log_path}", "--log-level", "info",
        "--conmon-pidfile", str(paths.conmon_pidfile),
        "--socket-dir-path", str(paths.socket_dir), "--syslog",
    ]
    for arg in (*runtime.global_args(), *runtime_args):
        argv += ["--runtime-arg", arg]
    stdin, terminal = stdio   # PID 1's stdin open for attach clients; on a pty
    argv += ["--stdin"] if stdin else []
    argv += ["--terminal"] if terminal else []
    if restore is not None:
        argv += ["--restore", str(restore)]
        for opt in RESTORE_OPTS:
            argv += ["--runtime-opt", opt]
    return argv


def _read_sync(fd: int, deadline: float) -> dict[str, object]:
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        try:
            msg: dict[str, object] = json.loads(buf)
            return msg
        except ValueError:
            continue
    raise DriverError(f"conmon gave no pid on its sync pipe (got {buf[:200]!r})")


class Pending:
    """A conmon started early, blocked on its start pipe before it forks or runs anything
    (``_OCI_STARTPIPE``, as Podman uses it): its exec and dynamic linking (~3 ms) overlap
    the caller's last preparations. ``go`` lets it run ``create``; ``cancel`` kills it.

    If the daemon dies before ``go``, conmon reads end-of-file and goes on: ``create``
    fails without the bundle's ``config.json`` (written last), or makes the container that
    the restart removes with the rest of the half-created instance."""

    def __init__(self, runtime: OciRuntime, cid: str, bundle: Path, paths: ConmonPaths,
                 restore: Path | None = None, runtime_args: tuple[str, ...] = (),
                 stdio: tuple[bool, bool] = (False, False)) -> None:
        self.runtime, self.bundle, self.restore = runtime, bundle, restore
        for d in (paths.exit_dir, paths.socket_dir, paths.persist_dir, runtime.root):
            d.mkdir(parents=True, exist_ok=True)
        self.argv = command_line(runtime, cid, bundle, paths, restore, runtime_args, stdio)
        self.cid = cid
        start_r, self._start = os.pipe()
        self._sync, sync_w = os.pipe()
        env = {**os.environ, "_OCI_STARTPIPE": str(start_r), "_OCI_SYNCPIPE": str(sync_w)}
        try:
            self.proc = subprocess.Popen(
                # cwd: conmon writes a relative "oom" file there after an OOM kill
                self.argv, env=env, pass_fds=(start_r, sync_w), stdin=subprocess.DEVNULL,
                cwd=bundle, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as err:
            os.close(self._start)
            os.close(self._sync)
            raise DriverError(f"conmon failed to start: {err}") from err
        finally:   # conmon has its own ends now
            os.close(start_r)
            os.close(sync_w)

    def go(self) -> int:
        """Let conmon run ``create`` (or ``restore``): PID 1's host pid once it is made."""
        try:
            try:
                os.write(self._start, b"0")
            except OSError as err:   # conmon died waiting (its error is on its stderr)
                log.debug("conmon's start pipe: %s", err)
            os.close(self._start)
            self._start = -1
            try:
                _out, err_text = self.proc.communicate(timeout=SYNC_TIMEOUT)
            except subprocess.TimeoutExpired as err:
                self.proc.kill()
                self.proc.communicate()
                raise DriverError(f"conmon failed to start: {err}") from err
            if self.proc.returncode != 0:
                raise RuntimeToolError("conmon", self.argv[1:], self.proc.returncode, err_text)
            msg = _read_sync(self._sync, time.monotonic() + SYNC_TIMEOUT)
        finally:
            self._close()
        pid = msg.get("data")
        if not isinstance(pid, int) or pid <= 0:
            detail = str(msg.get("message") or msg).removeprefix(
                f"{self.runtime.name} create failed: ")
            if keys.is_quota_error(detail):
                raise DriverError(f"cannot start {self.cid!r}: "
                                  f"{keys.quota_message(root_uid(self.bundle))}")
            raise RuntimeToolError(self.runtime.name, [
                "restore" if self.restore else "create", self.cid], 1, detail)
        return pid

    def cancel(self) -> None:
        """Kill the conmon that never went (it had not forked: nothing else to undo)."""
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.communicate()
        self._close()

    def _close(self) -> None:
        for fd in (self._start, self._sync):
            if fd >= 0:
                os.close(fd)
        self._start = self._sync = -1


def start_conmon(runtime: OciRuntime, cid: str, bundle: Path, paths: ConmonPaths,
                 restore: Path | None = None, runtime_args: tuple[str, ...] = (),
                 stdio: tuple[bool, bool] = (False, False)) -> int:
    """Run conmon (which runs ``create``); PID 1's host pid, created but not started.

    With ``restore`` the runtime restores the CRIU images there instead: PID 1 is
    running, where it was, when this returns.
    """
    return Pending(runtime, cid, bundle, paths, restore, runtime_args, stdio).go()


def root_uid(bundle: Path) -> int:
    """The host uid of the container's root: its id map's base, or 0 without a user
    namespace (privileged)."""
    try:
        linux = json.loads((bundle / "config.json").read_text()).get("linux") or {}
    except (OSError, ValueError):
        return 0
    for m in linux.get("uidMappings") or ():
        if m.get("containerID") == 0:
            return int(m["hostID"])
    return 0


def container_pid(bundle: Path) -> int | None:
    """PID 1's host pid from the pid file conmon's runtime wrote, if it is alive."""
    try:
        pid = int((bundle / "pidfile").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if procs.alive(pid) else None


def conmon_pid(paths: ConmonPaths) -> int | None:
    """The pid of the conmon supervising this container, if it is still alive."""
    try:
        pid = int(paths.conmon_pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    # not a recycled pid, and not a zombie that the host's init has yet to reap
    # (conmon daemonizes, so init is its parent)
    return pid if procs.alive(pid, "conmon") else None


LogRecord = tuple[bytes, bytes, bool, bytes]   # time, stream, partial, payload


def read_records(log_path: Path, offset: int) -> tuple[list[LogRecord], int]:
    """The complete k8s-file records from byte ``offset`` on, and the next offset.

    A record is ``<time> <stream> <F|P> <payload>\\n``; ``P`` (partial) payloads are
    continued by the next record of the stream, ``F`` ends a line.
    """
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            raw = f.read()
    except FileNotFoundError:
        return [], offset
    except OSError as err:
        raise DriverError(f"cannot read console log {log_path}: {err}") from err
    end = raw.rfind(b"\n")
    if end < 0:
        return [], offset
    out: list[LogRecord] = []
    for record in raw[:end].split(b"\n"):
        parts = record.split(b" ", 3)
        if len(parts) < 3:
            continue
        out.append((parts[0], parts[1], parts[2] == b"P", parts[3] if len(parts) == 4 else b""))
    return out, offset + end + 1


def read_log(log_path: Path, offset: int) -> tuple[bytes, int]:
    """Payload bytes (every stream, lines joined) from byte ``offset`` on, and the next
    offset to read from."""
    records, new_offset = read_records(log_path, offset)
    return b"".join(p if partial else p + b"\n" for _t, _s, partial, p in records), new_offset
