"""The few kernel switches networks need, in the daemon's own network namespace."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cumulo.errors import DriverError, UnsupportedError
from cumulo.host.tools import not_installed

PROC = Path("/proc/sys")


def enable(key: str, module: str | None = None, value: str = "1") -> None:
    """Set ``/proc/sys/<key>`` to ``value`` (loading ``module`` first if the key is missing)."""
    path = PROC / key
    if not path.exists() and module is not None:
        try:
            subprocess.run(["modprobe", module], capture_output=True, check=False, timeout=30)
        except FileNotFoundError:
            raise not_installed("modprobe", f"load the kernel module {module}") from None
        except (OSError, subprocess.SubprocessError):
            pass   # the check below says what is missing
    if not path.exists():
        raise UnsupportedError(f"this kernel has no {key.replace('/', '.')}"
                               + (f" (module {module})" if module else ""))
    try:
        if path.read_text().strip() != value:
            path.write_text(f"{value}\n")
    except OSError as err:
        raise DriverError(f"cannot set {key.replace('/', '.')} = {value}: {err}") from err


def enable_in(netns: Path, key: str) -> None:
    """Set ``key`` (``net/ipv4/ip_forward``) to 1 inside the namespace ``netns``: /proc/sys/net
    shows the namespace of whoever opens it, so a process in there writes it."""
    try:
        r = subprocess.run(["nsenter", f"--net={netns}", "sysctl", "-qw",
                            f"{key.replace('/', '.')}=1"],
                           capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        raise DriverError(f"cannot set {key.replace('/', '.')} in {netns}: {err}") from err
    if r.returncode != 0:
        raise DriverError(f"cannot set {key.replace('/', '.')} in {netns}: "
                          f"{r.stderr.strip() or r.returncode}")
