"""What the cloud-init tests share: a key pair, ssh into a guest from its daemon's network
namespace, and the wait for cloud-init's end through exec (a VM's guest agent, a system
container's runtime)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.system.conftest import Daemon

# cloud-init's four stages each start Python in the guest: on TCG on a loaded 2-core host
# that alone took 80 s a stage (the whole first boot: 10+ minutes)
CLOUD_INIT_WAIT = 1500.0
USER_DATA = """#cloud-config
runcmd:
  - [sh, -c, "echo made-by-runcmd > /root/runcmd.txt"]
"""
SEED = "cidata.iso"


@dataclass
class Guest:
    d: Daemon
    name: str
    key: Path            # the private key; key.pub was given with --ssh-key
    ip: str
    netns: str           # nsenter's --net=... of the daemon's namespace
    tmp: Path


def ssh(g: Guest, user: str, *command: str) -> subprocess.CompletedProcess[str]:
    """ssh from the daemon's namespace (where the network's bridge is) with the key."""
    return subprocess.run(
        ["nsenter", g.netns, "ssh", "-i", str(g.key), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", f"{user}@{g.ip}", "--", *command],
        capture_output=True, text=True, timeout=120, check=False)


def keygen(key: Path) -> Path:
    """A new ed25519 key pair without a passphrase: ``key`` and ``key``.pub."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cumulo-test",
                    "-f", str(key)], check=True, timeout=60)
    return key


def cloud_init_done(d: Daemon, name: str, wait: float = CLOUD_INIT_WAIT,
                    pause: float = 3.0) -> str:
    """Poll `cloud-init status` through exec until it ended (bounded by ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    out = ""
    while time.monotonic() < deadline:
        r = d.cli("exec", name, "--", "cloud-init", "status", check=False, timeout=300)
        out = r.stdout + r.stderr
        if "status: done" in out or "status: error" in out:
            return out
        time.sleep(pause)
    raise AssertionError(f"cloud-init did not finish in {wait:.0f}s: {out}")
