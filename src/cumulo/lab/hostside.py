"""The host side of the lab's network: where instance-to-host servers run.

The lab's network is a bridge the daemon made in its own network namespace (a namespace
made for the run: scripts/lab-netns.sh, or a test's) or, without one, in the host's. An
instance-to-host server must listen on that bridge's gateway address, so it runs in the
daemon's network namespace: the daemon's pid comes from its unix socket (SO_PEERCRED),
and scripts run under ``nsenter --net=/proc/PID/ns/net`` when that is not our own.

Network safety: the only address a host-side server binds (and so the only one an
instance sends to) is the gateway of the network the lab created, and only after
``check_gateway`` saw it on that network's bridge in that namespace.
"""

from __future__ import annotations

import os
import shlex
import socket
import struct
import subprocess

from cumulo.client import Client
from cumulo.errors import DriverError
from cumulo.lab.platforms import Exec, Platform


def daemon_pid(client: Client) -> int:
    """The pid of the daemon behind a unix-socket client (its peer credentials)."""
    if not client.socket:
        raise DriverError("instance to host needs the daemon's unix socket (CUMULO_SOCKET), "
                          "not a URL: the lab must find the daemon's network namespace")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(client.socket)
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    return int(pid)


class HostSide(Platform):
    """Scripts run on the host, in the daemon's network namespace."""

    def __init__(self, pid: int) -> None:
        super().__init__("native")
        self.name = "host"
        ns = f"/proc/{pid}/ns/net"
        try:
            same = os.stat(ns).st_ino == os.stat("/proc/self/ns/net").st_ino
        except OSError as err:
            raise DriverError(f"cannot see the daemon's network namespace {ns}: "
                              f"{err.strerror} (instance to host needs root)") from err
        self.prefix = [] if same else ["nsenter", f"--net={ns}"]

    def run(self, script: str, *, stdin: str = "", env: dict[str, str] | None = None,
            timeout: float = 600) -> Exec:
        try:
            proc = subprocess.run([*self.prefix, "/bin/sh", "-c", script], input=stdin,
                                  text=True, capture_output=True, timeout=timeout, cwd="/tmp",
                                  env={**os.environ, **(env or {})})
        except subprocess.TimeoutExpired as err:
            raise DriverError(f"host: {script.split()[0]} ran over {timeout:.0f}s") from err
        return Exec(proc.returncode, proc.stdout, proc.stderr)

    def check_gateway(self, bridge: str, gateway: str) -> None:
        """Refuse unless ``gateway`` is an address of ``bridge`` here (the lab's network)."""
        r = self.run(f"ip -4 -o addr show dev {shlex.quote(bridge)}", timeout=30)
        if f"inet {gateway}/" not in r.stdout:
            raise DriverError(f"the gateway {gateway} is not on bridge {bridge} in the "
                              f"daemon's network namespace: no instance-to-host traffic")
