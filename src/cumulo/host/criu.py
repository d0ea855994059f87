"""Where this host's CRIU is, how it locks the network, and why checkpoints may be refused.

Debian 12's criu 3.17 fails ``criu check`` on recent kernels, and 4.1.1 cannot dump inet
sockets on kernels >= 6.16; the install step puts Debian forky's 4.2.1 under
``/opt/cumulo/criu`` with a wrapper that runs it with its own loader and libraries.
Cumulo hands that path to the OCI runtime (``runc --criu``), so the right CRIU is used
whatever the daemon's PATH holds.

While it dumps a container with its own network namespace, CRIU blocks that namespace's
traffic ("network lock"). Its default does that with ``iptables-restore``, which a fresh
Debian 12 (nftables only) lacks; CRIU built with libnftables (forky's is) can lock with
nftables instead, so Cumulo asks for that (``NETWORK_LOCK_CONF``) and needs no iptables.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from cumulo.host.info import HostInfo

PRIVATE = Path("/opt/cumulo/criu/criu")
CHECK_TIMEOUT = 10.0
# runc reads extra CRIU options from the file this OCI annotation names (per container)
CONFIG_ANNOTATION = "org.criu.config"
IPTABLES = "iptables-restore"


def criu_binary() -> str | None:
    """The CRIU to use, or None if the host has none."""
    if PRIVATE.is_file() and os.access(PRIVATE, os.X_OK):
        return str(PRIVATE)
    return shutil.which("criu") or shutil.which("criu", path="/usr/local/sbin:/usr/sbin:/sbin")


def has_feature(criu: str, feature: str) -> bool:
    """``criu check --feature FEATURE`` passes (False if CRIU cannot even run)."""
    try:
        proc = subprocess.run([criu, "check", "--feature", feature], capture_output=True,
                              text=True, timeout=CHECK_TIMEOUT, stdin=subprocess.DEVNULL,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def network_lock(criu: str) -> str | None:
    """How this CRIU can lock a network namespace here: ``nftables`` (built with
    libnftables), else ``iptables`` (its default, if iptables-restore is installed),
    else None."""
    if has_feature(criu, "network_lock_nftables"):
        return "nftables"
    if shutil.which(IPTABLES) or shutil.which(IPTABLES, path="/usr/sbin:/sbin"):
        return "iptables"
    return None


def network_lock_conf(method: str) -> str:
    """The CRIU options file (CRIU's config syntax) runc passes for Cumulo's containers."""
    return ("# written by cumulod: CRIU options for its containers (runc: org.criu.config)\n"
            f"network-lock {method}\n")


def unavailable(host: HostInfo, path: str | None) -> str | None:
    """Why containers cannot be checkpointed here (one sentence), or None if they can."""
    if path is None or host.criu is None:
        return "criu is not installed (scripts/install.sh provides CRIU 4.x)"
    if not host.criu_check:
        return (f"criu {host.criu} fails `criu check` (CRIU 4.x is needed; see"
                " scripts/install.sh)")
    if host.criu_network_lock is None:
        return (f"criu {host.criu} cannot lock the network: it is built without nftables"
                f" and {IPTABLES} is missing (apt-get install iptables, or run"
                " scripts/install.sh for a CRIU with nftables)")
    return None
