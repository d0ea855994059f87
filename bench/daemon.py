"""A throwaway cumulod for benchmarks: own state dir, socket and cgroup parent."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cumulo.client import Client

BIN = Path(sys.executable).parent


@contextmanager
def bench_daemon(wrapper: list[str] | None = None, extra: list[str] | None = None
                 ) -> Iterator[tuple[Client, Path, str]]:
    """Yields (client, state dir, cgroup parent); removes everything afterwards.

    ``wrapper`` prefixes the daemon's command line (e.g. nsenter into a netns)."""
    tmp = Path(tempfile.mkdtemp(prefix="cumulo-bench-"))
    parent = f"cumulo-bench-{uuid.uuid4().hex[:6]}"
    sock = tmp / "cumulo.sock"
    proc = subprocess.Popen(
        [*(wrapper or []), str(BIN / "cumulod"), "--state-dir", str(tmp / "state"),
         "--socket", str(sock), "--cgroup-parent", parent, "--log-level", "warning",
         "--no-default-network", *(extra or [])],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "cumulod.log", "wb"))  # noqa: SIM115
    client = Client(socket=str(sock), timeout=120)
    try:
        for _ in range(200):
            if not sock.exists():
                time.sleep(0.05)
                continue
            try:
                client.server()
                break
            except Exception:
                if proc.poll() is not None:
                    raise RuntimeError((tmp / "cumulod.log").read_text()) from None
                time.sleep(0.05)
        yield client, tmp / "state", parent
    finally:
        try:
            for inst in client.instances():
                client.delete(inst["name"], force=True)
            for net in client.networks():
                client.delete_network(net["name"])
        finally:
            client.close()
            proc.terminate()
            proc.wait(30)
            shutil.rmtree(tmp, ignore_errors=True)
