"""Where this host's CRIU is: the 4.x that scripts/install.sh unpacks, else the one on PATH.

Debian 12's criu 3.17 fails ``criu check`` on recent kernels, and 4.1.1 cannot dump inet
sockets on kernels >= 6.16; the install step puts Debian forky's 4.2.1 under
``/opt/cumulo/criu`` with a wrapper that runs it with its own loader and libraries.
Cumulo hands that path to the OCI runtime (``runc --criu``), so the right CRIU is used
whatever the daemon's PATH holds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PRIVATE = Path("/opt/cumulo/criu/criu")


def criu_binary() -> str | None:
    """The CRIU to use, or None if the host has none."""
    if PRIVATE.is_file() and os.access(PRIVATE, os.X_OK):
        return str(PRIVATE)
    return shutil.which("criu") or shutil.which("criu", path="/usr/local/sbin:/usr/sbin:/sbin")
