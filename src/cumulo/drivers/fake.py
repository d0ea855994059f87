"""A driver for tests of the layers above drivers: the instance is a host process group.

It keeps the contract (tests/contract) so services and the API can be tested
without root. It isolates nothing and enforces no limit: never use it for real.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from cumulo.domain.limits import Limits
from cumulo.drivers.base import (
    ExecRequest,
    ExecSession,
    InstanceSpec,
    RunState,
    RunStatus,
    Usage,
    require,
)
from cumulo.drivers.process_session import ProcessSession, exit_status
from cumulo.drivers.registry import DriverContext
from cumulo.errors import DriverError, InvalidStateError, NotFoundError


@dataclass
class _Fake:
    spec: InstanceSpec
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    exit_code: int | None = None


class FakeDriver:
    kind = "fake"
    option_choices: dict[str, tuple[str, ...]] = {}

    def __init__(self, ctx: DriverContext) -> None:
        self.ctx = ctx
        self._items: dict[str, _Fake] = {}
        self._lock = threading.Lock()

    def _get(self, host_id: str) -> _Fake:
        try:
            return self._items[host_id]
        except KeyError:
            raise NotFoundError("instance", host_id) from None

    def _running(self, item: _Fake) -> bool:
        return item.proc is not None and item.proc.poll() is None

    def create(self, spec: InstanceSpec) -> None:
        if not spec.rootfs.is_dir():
            raise DriverError(f"root filesystem {spec.rootfs} does not exist")
        spec.instance_dir.mkdir(parents=True, exist_ok=True)
        (spec.instance_dir / "console.log").touch()
        with self._lock:
            self._items[spec.host_id] = _Fake(spec)

    def start(self, spec: InstanceSpec) -> RunState:
        item = self._get(spec.host_id)
        if self._running(item):
            raise InvalidStateError(spec.hostname, "running", "start")
        item.spec, item.exit_code, item.paused = spec, None, False
        with open(spec.instance_dir / "console.log", "ab") as console:
            try:
                item.proc = subprocess.Popen(
                    spec.command, stdout=console, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, cwd=spec.instance_dir, start_new_session=True,
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                         "HOSTNAME": spec.hostname, **spec.env})
            except OSError as err:
                raise DriverError(f"cannot start {spec.command[0]}: {err.strerror}") from err
        if spec.on_created is not None:
            spec.on_created(item.proc.pid)
        # like the real driver: it was running, even if it exits before anyone looks
        return RunState(RunStatus.RUNNING, pid=item.proc.pid)

    def _signal(self, item: _Fake, sig: signal.Signals) -> None:
        if item.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(item.proc.pid, sig)

    def stop(self, host_id: str, timeout: float, force: bool) -> RunState:
        item = self._get(host_id)
        if item.proc is not None and item.proc.poll() is None:
            self._signal(item, signal.SIGCONT)
            self._signal(item, signal.SIGKILL if force else signal.SIGTERM)
            try:
                item.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(item, signal.SIGKILL)
                item.proc.wait(10)
        return self.state(host_id)

    def pause(self, host_id: str) -> None:
        require(self.state(host_id), host_id, "pause", RunStatus.RUNNING)
        item = self._get(host_id)
        self._signal(item, signal.SIGSTOP)
        item.paused = True

    def resume(self, host_id: str) -> None:
        require(self.state(host_id), host_id, "resume", RunStatus.PAUSED)
        item = self._get(host_id)
        self._signal(item, signal.SIGCONT)
        item.paused = False

    def delete(self, host_id: str, instance_dir: Path) -> None:
        item = self._items.get(host_id)
        if item is not None and self._running(item):
            self.stop(host_id, 0, force=True)
        with self._lock:
            self._items.pop(host_id, None)
        shutil.rmtree(instance_dir, ignore_errors=True)

    def state(self, host_id: str) -> RunState:
        item = self._items.get(host_id)
        if item is None:
            return RunState(RunStatus.MISSING)
        if self._running(item) and item.proc is not None:
            status = RunStatus.PAUSED if item.paused else RunStatus.RUNNING
            return RunState(status, pid=item.proc.pid)
        if item.proc is not None and item.exit_code is None:
            item.exit_code = exit_status(item.proc.returncode)
        return RunState(RunStatus.STOPPED, exit_code=item.exit_code)

    def update_limits(self, host_id: str, limits: Limits) -> None:
        item = self._get(host_id)
        item.spec = InstanceSpec(**{**item.spec.__dict__, "limits": limits})

    def usage(self, host_id: str) -> Usage:
        item = self._get(host_id)
        if not self._running(item) or item.proc is None:
            return Usage()
        try:
            root = psutil.Process(item.proc.pid)
            procs = [root, *root.children(recursive=True)]
            cpu = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
            rss = sum(p.memory_info().rss for p in procs)
            io = [p.io_counters() for p in procs]
        except psutil.Error:
            return Usage()
        return Usage(cpu_time_ns=int(cpu * 1e9), memory_bytes=rss, memory_peak_bytes=rss,
                     pids=len(procs), io_read_bytes=sum(i.read_bytes for i in io),
                     io_write_bytes=sum(i.write_bytes for i in io))

    def exec(self, host_id: str, request: ExecRequest) -> ExecSession:
        item = self._get(host_id)
        if not self._running(item) or item.paused:
            raise InvalidStateError(item.spec.hostname, "not running", "exec")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm",
               **request.env}
        return ProcessSession(request.command, tty=request.tty, rows=request.rows,
                              cols=request.cols, env=env, cwd=str(item.spec.instance_dir))

    def read_console(self, host_id: str, offset: int) -> tuple[bytes, int]:
        item = self._get(host_id)
        path = item.spec.instance_dir / "console.log"
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return b"", offset
        return data, offset + len(data)

    def list_host_ids(self) -> list[str]:
        return sorted(self._items)

    def wait_exit(self, host_id: str, timeout: float) -> None:
        """Test helper: block until PID 1 exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._running(self._get(host_id)):
            time.sleep(0.02)
