"""RuntimeExecSession on pipes, with a stand-in for ``runc exec``: no root needed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cumulo.api.exec_ws import run_collect
from cumulo.drivers.container.exec_session import RuntimeExecSession
from cumulo.host import procs

SHOW_IDS = ("import os; p = os.getpid(); s = os.getsid(0);"
            " print(os.getpgid(0) == p, s == p, s == os.getsid(os.getppid()))")


def test_runtime_runs_in_its_own_group_not_its_own_session(tmp_path: Path) -> None:
    """Its own process group keeps terminal signals meant for the daemon away; its own
    session would make ``runc exec`` about three times slower (~50 ms against ~16)."""
    session = RuntimeExecSession(lambda _pid, _tty: [sys.executable, "-c", SHOW_IDS],
                                 tmp_path, tty=False, rows=24, cols=80)
    code, out, err = run_collect(session, b"", 30)
    assert (code, err) == (0, b"")
    own_group, own_session, daemons_session = out.decode().split()
    assert own_group == "True"
    assert own_session == "False" and daemons_session == "True"
    assert os.listdir(tmp_path) == []   # its work dir is gone


# a stand-in runtime that, like runc, passes on no SIGKILL: it starts the process,
# whose first output comes before the runtime has written the pid file
LATE_PID_FILE = """
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "60"], start_new_session=True)
print("started", child.pid, flush=True)
time.sleep(0.5)
with open(sys.argv[1], "w") as f:
    f.write(str(child.pid))
child.wait()
"""


def test_kill_ends_a_process_whose_pid_file_came_after_its_output(tmp_path: Path) -> None:
    session = RuntimeExecSession(
        lambda pid_file, _tty: [sys.executable, "-c", LATE_PID_FILE, str(pid_file)],
        tmp_path, tty=False, rows=24, cols=80)
    line = b""
    while not line.endswith(b"\n"):
        line += os.read(session.stdout_fd, 100)
    child = int(line.split()[1])
    session.kill()   # before the runtime wrote the pid file
    assert not procs.alive(child), "the process in the instance outlived its session"
