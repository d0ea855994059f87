"""Whether a process still runs, counting a zombie as dead.

QEMU, swtpm and conmon are daemonized, so init reaps them, and some inits (the
PID 1 of a CI sandbox, a minimal container init) reap late. A zombie has
already freed its memory, closed its files and left its cgroup; only its pid
entry waits for the reap. So "gone" here means exited, reaped or not, and
nothing waits on another process's init.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Any

POLL = 0.02


def alive(pid: int, comm: str | None = None) -> bool:
    """``pid`` exists and is not a zombie (and is called ``comm``, if given)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    name, _, rest = stat.partition("(")[2].rpartition(")")
    if comm is not None and name != comm:
        return False
    if rest.split()[:1] not in (["Z"], ["X"]):
        return True
    try:   # a zombie leader whose other threads are still exiting is not dead yet
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def wait_dead(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit; True once it has."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def kill_group(proc: subprocess.Popen[Any], wait: float = 10.0) -> None:
    """SIGTERM ``proc``'s process group (it leads one: ``start_new_session``), SIGKILL after
    ``wait`` seconds; always reaped."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
