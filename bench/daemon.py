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
from cumulo.errors import CumuloError
from cumulo.host import cgroups

BIN = Path(sys.executable).parent
START_WAIT = 120.0   # seconds for the daemon to answer (10 s was too short on a busy host)


@contextmanager
def bench_daemon(wrapper: list[str] | None = None, extra: list[str] | None = None
                 ) -> Iterator[tuple[Client, Path, str]]:
    """Yields (client, state dir, cgroup parent); removes everything afterwards.

    ``wrapper`` prefixes the daemon's command line (e.g. nsenter into a netns)."""
    tmp = Path(tempfile.mkdtemp(prefix="cumulo-bench-"))
    parent = f"cumulo-bench-{uuid.uuid4().hex[:6]}"
    sock = tmp / "cumulo.sock"
    with open(tmp / "cumulod.log", "wb") as log:
        proc = subprocess.Popen(
            [*(wrapper or []), str(BIN / "cumulod"), "--state-dir", str(tmp / "state"),
             "--socket", str(sock), "--cgroup-parent", parent, "--log-level", "warning",
             "--no-default-network", *(extra or [])],
            stdout=subprocess.DEVNULL, stderr=log)
    client = Client(socket=str(sock), timeout=120)
    try:
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
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
        else:
            raise RuntimeError(f"cumulod did not answer in {START_WAIT:.0f}s")
        yield client, tmp / "state", parent
    finally:
        failed: list[str] = []
        try:
            failed = delete_all(client)
            for net in client.networks():
                client.delete_network(net["name"])
        finally:
            client.close()
            proc.terminate()
            proc.wait(60)
            finish_cleanup(tmp, parent, failed)


def unpack(ref: str, into: str) -> str:
    """The ``src/`` of git commit ``ref``, unpacked ``into`` a directory and compiled (as
    an install compiles ours): the path to put first on ``sys.path``."""
    archive = subprocess.run(["git", "archive", ref, "src"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", f"{into}/src/cumulo"],
                   check=True, stdout=subprocess.DEVNULL)
    return f"{into}/src"


def daemon_of(src: str) -> list[str]:
    """A ``bench_daemon`` wrapper that runs the cumulod of ``src`` (from ``unpack``) with
    this interpreter, in place of ours."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {src!r}); "
            "sys.argv = sys.argv[1:]; from cumulo.daemon import main; main()"]


def delete_all(client: Client) -> list[str]:
    """Delete every instance (forced), going on past failures, in passes until none is
    left or a pass deletes nothing; returns one line per instance it could not delete."""
    errors: dict[str, str] = {}
    while left := client.instances():
        deleted = 0
        for inst in left:
            try:
                client.delete(inst["name"], force=True)
                deleted += 1
                errors.pop(inst["name"], None)
            except CumuloError as err:
                errors[inst["name"]] = str(err)
        if not deleted:
            break
    return [f"{name}: {err}" for name, err in errors.items()]


def finish_cleanup(top: Path, parent: str, failed: list[str]) -> bool:
    """Remove the bench's dir once nothing of it runs (True); else keep it (instances'
    roots are mounted in it) and say, on stderr, what is left and why (False)."""
    held = [str(m / parent) for m, _ in cgroups.hierarchies() if (m / parent).exists()]
    if not failed and not held:
        shutil.rmtree(top, ignore_errors=True)
        return True
    for line in failed:
        print(f"cleanup: cannot delete {line}", file=sys.stderr)
    if held:
        print(f"cleanup: cgroups left: {', '.join(held)}", file=sys.stderr)
    print(f"cleanup: kept {top} (its daemon's state and the instances' roots)",
          file=sys.stderr)
    return False
