"""Two hosts on one machine: two cumulod, each in its own network namespace with its own
state dir, joined by a veth (10.77.0.1 and 10.77.0.2). A VM migrates live from one to
the other and keeps counting; nothing of it stays on the source. Traffic stays inside
the namespaces the test made.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.system.conftest import BIN, Daemon, leftovers

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow]

COUNTER = 'i=0; while :; do i=$((i+1)); echo "count $i"; sleep 1; done'


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=30)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    tag = uuid.uuid4().hex[:6]
    names = [f"cu-t-ha{tag}", f"cu-t-hb{tag}"]
    daemons: list[Daemon] = []
    try:
        for ns in names:
            sh("ip", "netns", "add", ns)
        sh("ip", "-n", names[0], "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
           "netns", names[1])
        for i, ns in enumerate(names, start=1):
            sh("ip", "-n", ns, "addr", "add", f"10.77.0.{i}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            top = tmp_path / f"h{i}"
            top.mkdir()
            d = Daemon(state_dir=top / "state", socket=top / "cumulo.sock",
                       cgroup_parent=f"cumulo-mig{i}-{tag}", log=top / "cumulod.log",
                       wrapper=["nsenter", f"--net=/run/netns/{ns}"])
            d.extra = [*d.extra, "--listen", f"10.77.0.{i}:8443"]
            d.env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "CUMULO_SOCKET": str(d.socket)}
            d.start()
            daemons.append(d)
        yield daemons[0], daemons[1]
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                with d.client() as c:
                    for inst in c.instances():
                        c.delete(inst["name"], force=True)
            d.stop()
            for cg in Path("/sys/fs/cgroup").glob(f"*/{d.cgroup_parent}"):
                cg.rmdir()
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    for d in daemons:
        assert not leftovers(d.cgroup_parent)
        assert not qemus(d.state_dir)
        shutil.rmtree(d.state_dir, ignore_errors=True)


def qemus(state_dir: Path) -> list[int]:
    return [p.pid for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] and "qemu" in p.info["name"]
            and str(state_dir) in " ".join(p.info["cmdline"] or [])]


def counts(d: Daemon, name: str) -> list[int]:
    return [int(n) for n in re.findall(r"count (\d+)", d.cli("logs", name).stdout)]


def wait_count(d: Daemon, name: str, above: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while not (c := counts(d, name)) or c[-1] <= above:
        assert time.monotonic() < deadline, c[-5:]
        time.sleep(0.5)
    return c[-1]


def test_live_migration_between_two_hosts(hosts: tuple[Daemon, Daemon]) -> None:
    a, b = hosts
    for d in (a, b):
        d.cli("image", "build", "busybox")
    token = b.cli("remote", "token", "--name", "from-a").stdout.strip()

    # bad remotes: a clear one-line error, nothing stored
    for args, words in [
        (("remote", "add", "b", "http://10.77.0.2:8443", "--token", "wrong"), "needs a token"),
        (("remote", "add", "b", "http://10.77.0.9:8443", "--token", token), "cannot reach"),
        (("remote", "add", "b", "ftp://10.77.0.2", "--token", token), "invalid remote URL"),
    ]:
        r = a.cli(*args, check=False, timeout=60)
        assert r.returncode == 1 and words in r.stderr, (args, r.stderr)
    assert json.loads(a.cli("remote", "list", "--format", "json").stdout) == []
    a.cli("remote", "add", "b", "http://10.77.0.2:8443", "--token", token)

    a.cli("launch", "busybox", "vm", "--type", "vm", "--machine", "pc", "--memory", "128MiB",
          "--", "sh", "-c", COUNTER)
    wait_count(a, "vm", 2)
    # a file on the VM's root disk (not shared storage): it must reach b's disk
    a.cli("exec", "vm", "--", "sh", "-c", "echo on-the-disk > /etc/moved; sync")

    # the destination dies half-way (a slow stream, then its QEMU is killed): the source
    # keeps running, untouched, and the instance exists only there
    slow = subprocess.Popen([str(BIN / "cumulo"), "migrate", "vm", "--to", "b",
                             "--bandwidth", "1MiB"], env=a.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not qemus(b.state_dir):
        assert time.monotonic() < deadline and slow.poll() is None, slow.communicate()
        time.sleep(0.1)
    time.sleep(1.5)  # the stream is under way
    for pid in qemus(b.state_dir):
        psutil.Process(pid).kill()
    _, err = slow.communicate(timeout=120)
    assert slow.returncode == 1 and "migration failed" in err, err
    assert json.loads(a.cli("info", "vm", "--format", "json").stdout)["state"] == "running"
    assert json.loads(b.cli("list", "--format", "json").stdout) == []
    before = wait_count(a, "vm", counts(a, "vm")[-1])  # still counting here

    r = a.cli("migrate", "vm", "--to", "b", timeout=300)
    m = re.search(r"total (\d+) ms, downtime (\d+) ms", r.stderr)
    assert m, r.stderr
    total, downtime = int(m.group(1)), int(m.group(2))
    print(f"live migration on TCG: total {total} ms, downtime {downtime} ms")
    assert downtime < 1000

    # the guest continues on b: no second boot, the counter goes on from where it was
    info = json.loads(b.cli("info", "vm", "--format", "json").stdout)
    assert info["state"] == "running"
    after = wait_count(b, "vm", before)
    assert "CUMULO-READY" not in b.cli("logs", "vm").stdout
    assert after > before and min(counts(b, "vm")) > 1
    assert json.loads(a.cli("list", "--format", "json").stdout) == []
    assert not qemus(a.state_dir)
    assert b.cli("exec", "vm", "--", "hostname").stdout == "vm\n"
    # read from b's disk, not from the page cache that came along with the RAM
    b.cli("exec", "vm", "--", "sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches")
    assert b.cli("exec", "vm", "--", "cat", "/etc/moved").stdout == "on-the-disk\n"

    r = a.cli("migrate", "vm", "--to", "b", check=False)
    assert r.returncode == 1 and "not found" in r.stderr
    b.cli("launch", "busybox", "ct")
    r = b.cli("migrate", "ct", "--to", "nowhere", check=False)
    assert r.returncode == 1 and "not found" in r.stderr
