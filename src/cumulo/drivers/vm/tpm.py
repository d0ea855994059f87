"""vTPM: one ``swtpm socket --tpm2`` per VM, QEMU's TPM emulator backend talks to it.

The TPM's state lives in the instance dir (``tpm/``), so it goes with the VM's delete;
the control socket and pid file live in the VM's runtime dir. swtpm runs with
``--terminate``: it exits on its own when QEMU closes the control connection, and
``stop`` makes sure of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil

from cumulo.errors import DriverError, RuntimeToolError, UnsupportedError
from cumulo.host import procs

SWTPM = "swtpm"
START_TIMEOUT = 10.0
STOP_WAIT = 5.0


# microvm's ACPI tables describe no TPM: the guest kernel probes the TIS at its fixed
# address (0xfed40000) when forced, polling since no IRQ is described either
MICROVM_APPEND = "tpm_tis.force=1 tpm_tis.interrupts=0"


def ctrl_socket(run_dir: Path) -> Path:
    return run_dir / "swtpm.sock"


def _pidfile(run_dir: Path) -> Path:
    return run_dir / "swtpm.pid"


def qemu_args(ctrl: Path) -> list[str]:
    """QEMU's side: the emulator backend on the control socket, a TIS TPM 2.0 device."""
    return ["-chardev", f"socket,id=chrtpm,path={ctrl}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", "tpm-tis,tpmdev=tpm0"]


def pid(run_dir: Path) -> int | None:
    """swtpm's pid if it runs for this VM (its cmdline names our control socket)."""
    try:
        p = int(_pidfile(run_dir).read_text().strip())
        if not procs.alive(p) or \
                not any(str(ctrl_socket(run_dir)) in a for a in psutil.Process(p).cmdline()):
            return None
    except (OSError, ValueError, psutil.Error):
        return None
    return p


def start(state_dir: Path, run_dir: Path, log: Path, swtpm: str = SWTPM,
          prefix: list[str] | None = None) -> int:
    """Start a daemonized swtpm; returns its pid once its control socket exists.
    ``prefix``: an argv prefix to run it with (the VM's cgroup, see host/cgroup_limits)."""
    binary = shutil.which(swtpm) or swtpm
    if not Path(binary).is_file():
        raise UnsupportedError("swtpm is not installed: run scripts/install.sh"
                               " (apt-get install swtpm swtpm-tools)")
    ctrl = ctrl_socket(run_dir)
    stop(run_dir)
    ctrl.unlink(missing_ok=True)
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DriverError(f"cannot create the TPM state dir {state_dir}: {err}") from err
    argv = [*(prefix or []), binary, "socket", "--tpm2", "--tpmstate", f"dir={state_dir}",
            "--ctrl", f"type=unixio,path={ctrl}", "--pid", f"file={_pidfile(run_dir)}",
            "--log", f"file={log},level=1", "--terminate", "--daemon"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        stop(run_dir)
        raise DriverError(f"cannot start swtpm: {err}") from err
    if res.returncode != 0:
        stop(run_dir)
        raise RuntimeToolError(SWTPM, argv[argv.index(binary) + 1:], res.returncode,
                               res.stderr or res.stdout)
    deadline = time.monotonic() + START_TIMEOUT
    while (p := pid(run_dir)) is None or not ctrl.exists():
        if time.monotonic() >= deadline:
            stop(run_dir)
            raise DriverError(f"swtpm did not come up (control socket {ctrl}); see {log}")
        time.sleep(0.02)
    return p


def stop(run_dir: Path) -> None:
    """SIGTERM, then SIGKILL; returns once swtpm is gone. Safe when it is not running."""
    p = pid(run_dir)
    if p is not None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(OSError):
                os.kill(p, sig)
            if procs.wait_dead(p, STOP_WAIT):
                break
        else:
            raise DriverError(f"swtpm pid {p} did not die after SIGKILL")
    _pidfile(run_dir).unlink(missing_ok=True)
    ctrl_socket(run_dir).unlink(missing_ok=True)
