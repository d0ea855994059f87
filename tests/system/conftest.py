"""System fixtures: a real cumulod on a temp state dir, driven through the real CLI."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cumulo.client import APIError, Client
from tests import zygote
from tests.costs import timed

BIN = Path(sys.executable).parent
START_WAIT = 60   # s: a loaded machine (tests in parallel) starts a daemon slowly
_RUNNING: dict[int, Daemon] = {}   # the daemons this worker started and has not stopped


@dataclass
class Daemon:
    state_dir: Path
    socket: Path
    cgroup_parent: str
    log: Path
    proc: subprocess.Popen[bytes] | zygote.Forked | None = None
    env: dict[str, str] = field(default_factory=dict)
    wrapper: list[str] = field(default_factory=list)  # e.g. ip netns exec NAME
    # no default network: it would be a bridge and NAT in the namespace the daemon runs in
    extra: list[str] = field(default_factory=lambda: ["--no-default-network"])
    start_timeout: float = START_WAIT   # until it answers

    def start(self) -> None:
        with timed("daemon start"):
            self._start()

    def _start(self) -> None:
        args = ["--state-dir", str(self.state_dir), "--socket", str(self.socket),
                "--cgroup-parent", self.cgroup_parent, "--log-level", "info", *self.extra]
        netns = self.wrapper[1].removeprefix("--net=") if self.wrapper[:1] == ["nsenter"] \
            and len(self.wrapper) == 2 and self.wrapper[1].startswith("--net=") else None
        with open(self.log, "ab") as log:
            if netns is not None or not self.wrapper:
                self.proc = zygote.spawn_daemon(args, log, netns)
            else:
                self.proc = subprocess.Popen([*self.wrapper, str(BIN / "cumulod"), *args],
                                             stdout=log, stderr=subprocess.STDOUT)
        _RUNNING[id(self)] = self
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cumulod exited: {self.log.read_text()[-2000:]}")
            if not can_connect(self.socket):  # httpcore leaks the socket of a failed connect
                time.sleep(0.05)
                continue
            try:
                with Client(socket=str(self.socket), timeout=2) as c:
                    c.server()
                return
            except Exception:
                time.sleep(0.05)
        self.stop(signal.SIGKILL)   # none left running behind a failed start
        raise RuntimeError(f"cumulod did not answer in {self.start_timeout:.0f}s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        with timed("daemon stop"):
            self._stop(sig)

    def _stop(self, sig: int) -> None:
        _RUNNING.pop(id(self), None)
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:   # killed, never left running behind
                self.proc.kill()
                self.proc.wait(30)
                raise AssertionError(f"cumulod did not stop on signal {sig} in 60s:"
                                     f" {self.log.read_text()[-1500:]}") from None

    def cli(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        with timed("cli call"):
            r = zygote.run(list(args), self.env, input=input, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"cumulo {' '.join(args)} -> {r.returncode}\n"
                                 f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def client(self) -> Client:
        return Client(socket=str(self.socket))

    def clear(self) -> None:
        """Delete every instance, security group and network of every project, and the
        projects but default, if the daemon still runs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with timed("daemon clear"), self.client() as c:
            for project in [p["name"] for p in c.projects()]:
                for inst in c.instances(project):
                    c.delete(inst["name"], force=True, project=project)
                for g in c.groups(project):
                    c.delete_group(g["name"], project)
                for n in c.networks(project):
                    c.delete_network(n["name"], project)
                if project != "default":
                    with contextlib.suppress(APIError):   # it keeps images of its own
                        c.delete_project(project)


def notable(log: Path, lines: int = 30, tail: int = 400_000) -> str:
    """The last warnings, errors and tracebacks of a daemon's log."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail))
            text = f.read().decode(errors="replace")
    except OSError as err:
        return f"({err})"
    keep = [line for line in text.splitlines()
            if not re.match(r"\d{4}-\d\d-\d\d [\d:,]+ (INFO|DEBUG) |INFO: ", line)]
    return "\n".join(keep[-lines:]) or "(no warnings or errors)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """A failed test's report shows what its daemons logged beyond INFO: in CI, where
    the temp dirs are gone, that is the only trace of what they saw."""
    report = yield
    if report.failed:
        for d in list(_RUNNING.values()):
            report.sections.append((f"cumulod {d.log}", notable(d.log)))
    return report


def can_connect(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def leftovers(cgroup_parent: str) -> list[str]:
    """Host objects a daemon with this cgroup parent might have left behind."""
    found = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{cgroup_parent}")]
    with open("/proc/self/mountinfo") as f:
        found += [line.split()[4] for line in f if cgroup_parent in line]
    return found


@contextmanager
def running_daemon(tmp_path: Path, extra: tuple[str, ...] = ()) -> Iterator[Daemon]:
    """A cumulod on ``tmp_path`` (``extra``: more flags); on exit every instance is deleted
    and nothing may be left."""
    tag = uuid.uuid4().hex[:8]
    d = Daemon(state_dir=tmp_path / "state", socket=tmp_path / "cumulo.sock",
               cgroup_parent=f"cumulo-systest-{tag}", log=tmp_path / "cumulod.log")
    d.extra += extra
    d.env = {**os.environ, "CUMULO_SOCKET": str(d.socket)}
    d.env.pop("CUMULO_URL", None)
    d.start()
    try:
        yield d
    finally:
        if d.proc is None or d.proc.poll() is not None:
            d.start()
        d.clear()
        d.stop()
        for cg in Path("/sys/fs/cgroup").glob(f"*/{d.cgroup_parent}"):
            cg.rmdir()  # the driver should have done this; the assert below says so
        assert not leftovers(d.cgroup_parent), leftovers(d.cgroup_parent)
        shutil.rmtree(d.state_dir, ignore_errors=True)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path) as d:
        yield d


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for a whole module: tests that share a booted VM."""
    with running_daemon(tmp_path_factory.mktemp("daemon")) as d:
        yield d


def counts(d: Daemon, name: str) -> list[int]:
    """The ``count N`` lines a counter PID 1 printed on the instance's console, in order."""
    return [int(n) for n in re.findall(r"count (\d+)", d.cli("logs", name).stdout)]


def wait_count(d: Daemon, name: str, above: int, timeout: float = 120) -> int:
    """The last count once it is above ``above``."""
    deadline = time.monotonic() + timeout
    while not (c := counts(d, name)) or c[-1] <= above:
        assert time.monotonic() < deadline, c[-5:]
        time.sleep(0.2)
    return c[-1]


@contextmanager
def netns_daemon(tmp_path: Path, prefix: str, extra: tuple[str, ...] = ()
                 ) -> Iterator[Daemon]:
    """A cumulod in a fresh network namespace of its own (its bridges, NICs and DHCP stay
    in there); on exit every instance is deleted and nothing may be left."""
    tag = uuid.uuid4().hex[:6]
    ns = f"cu-t-{prefix}{tag}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    d = Daemon(state_dir=tmp_path / "state", socket=tmp_path / "cumulo.sock",
               cgroup_parent=f"cumulo-{prefix}-{tag}", log=tmp_path / "cumulod.log",
               wrapper=["nsenter", f"--net=/run/netns/{ns}"])
    d.extra = [*d.extra, *extra]
    d.env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "CUMULO_SOCKET": str(d.socket)}
    try:
        d.start()
        yield d
    finally:
        try:
            d.clear()
        finally:
            d.stop()
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)
        assert not leftovers(d.cgroup_parent), leftovers(d.cgroup_parent)
