"""The few kernel switches networks need, in the daemon's own network namespace."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cumulo.errors import DriverError, UnsupportedError
from cumulo.host.tools import not_installed

PROC = Path("/proc/sys")


def enable(key: str, module: str | None = None) -> None:
    """Set ``/proc/sys/<key>`` to 1 (loading ``module`` first if the key is missing)."""
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
        if path.read_text().strip() != "1":
            path.write_text("1\n")
    except OSError as err:
        raise DriverError(f"cannot set {key.replace('/', '.')} = 1: {err}") from err
