"""The OCI runtime (runc or crun) command lines; the only module that knows them.

Each daemon uses a private state directory (``--root <runtime_dir>/<runtime>``),
so several daemons, or test runs, can share a host without seeing each other.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from cumulo.errors import DriverError, RuntimeToolError, UnsupportedError

KNOWN = ("runc", "crun")
TIMEOUT = 30.0


class OciRuntime:
    """One runtime binary plus the state root it keeps its containers in."""

    def __init__(self, name: str, runtime_dir: Path) -> None:
        if name not in KNOWN:
            raise UnsupportedError(f"unknown OCI runtime {name!r}: use {' or '.join(KNOWN)}")
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if found is None:
            raise UnsupportedError(f"OCI runtime {name!r} is not installed on this host")
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

    def start(self, cid: str) -> None:
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

    def delete(self, cid: str) -> None:
        """Forget the container (killing it if alive); no error if it is unknown."""
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

    def exec_argv(
        self, cid: str, command: list[str], env: dict[str, str], cwd: str,
        pid_file: Path, tty: bool,
    ) -> list[str]:
        """A foreground exec; with ``tty`` the runtime relays its own stdio to a new pty."""
        argv = [self.binary, *self.global_args(), "exec", "--cwd", cwd, "--pid-file", str(pid_file)]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        if tty:
            argv.append("--tty")
        return [*argv, cid, *command]


def choose(preferred: str | None, default: str | None, runtime_dir: Path) -> OciRuntime:
    """The runtime the daemon was told to use, else the host probe's pick, else runc."""
    return OciRuntime(preferred or default or "runc", runtime_dir)
