"""A container moves between two hosts (two cumulod in two network namespaces, as in
test_migration_cli.py): with its state (CRIU pre-dump, final dump, restore there) the
counter goes on from where it was; cold (``--stop-first``) it starts again there with
the files it wrote. Bad cases get one clear line; nothing stays on the source. A
container with a NIC is checkpointed and restored keeping a TCP connection open, then
migrates keeping its network, MAC and IP, and answers there.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import psutil
import pytest

from tests.helpers import checkpoint_skip_reason
from tests.system.clusterlib import poll
from tests.system.conftest import Daemon, counts, wait_count
from tests.system.test_migration_cli import hosts  # noqa: F401  (the two-host fixture)

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.criu]
if (_reason := checkpoint_skip_reason()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_reason))

COUNTER = 'i=0; while :; do i=$((i+1)); echo "count $i"; echo $i > /count; sleep 0.2; done'


def conmons(d: Daemon) -> list[int]:
    return [p.pid for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "conmon" and str(d.state_dir) in " ".join(p.info["cmdline"] or [])]


def test_container_migrates_with_its_state_and_cold(hosts: tuple[Daemon, Daemon]) -> None:  # noqa: F811
    a, b = hosts
    a.cli("image", "build", "busybox")
    token = b.cli("remote", "token", "--name", "from-a").stdout.strip()
    a.cli("remote", "add", "b", "https://10.77.0.2:8443", "--token", token)

    a.cli("launch", "busybox", "ct", "--", "sh", "-c", COUNTER)
    a.cli("exec", "ct", "--", "sh", "-c", "echo written-on-a > /etc/moved")

    # b lacks the image: it follows the instance (sent by a, with progress), same fingerprint
    fp = json.loads(a.cli("image", "info", "busybox", "--format", "json").stdout)["fingerprint"]
    assert json.loads(b.cli("image", "list", "--format", "json").stdout) == []
    before = wait_count(a, "ct", 5)

    r = a.cli("migrate", "ct", "--to", "b", timeout=180)
    m = re.search(r"total (\d+) ms, downtime (\d+) ms", r.stderr)
    assert m and ("2 pass(es)" in r.stderr or  # pre-dump, then the final dump
                  "1 pass(es)" in r.stderr and "CONFIG_MEM_SOFT_DIRTY" in r.stderr), r.stderr
    print(r.stderr)
    assert "Sent the image of ct to b" in r.stderr, r.stderr
    [image] = json.loads(b.cli("image", "list", "--format", "json").stdout)
    assert image["fingerprint"] == fp

    # on b the same PID 1 goes on counting: no restart (it would begin at 1 again)
    assert json.loads(b.cli("info", "ct", "--format", "json").stdout)["state"] == "running"
    first_on_b = int(b.cli("exec", "ct", "--", "cat", "/count").stdout)
    assert first_on_b >= before
    wait_count(b, "ct", 0)
    assert min(counts(b, "ct")) > before, counts(b, "ct")[:3]   # its log there starts later
    deadline = time.monotonic() + 30   # and counts on (every 0.2 s)
    while int(b.cli("exec", "ct", "--", "cat", "/count").stdout) <= first_on_b:
        assert time.monotonic() < deadline, "the counter stopped on b"
        time.sleep(0.1)
    assert b.cli("exec", "ct", "--", "cat", "/etc/moved").stdout == "written-on-a\n"
    assert json.loads(a.cli("list", "--format", "json").stdout) == []
    assert not conmons(a) and len(conmons(b)) == 1

    # bad cases: a clear line, nothing changes
    r = a.cli("migrate", "ct", "--to", "b", check=False)
    assert r.returncode == 1 and "not found" in r.stderr, r.stderr
    b.cli("stop", "ct", "--force")
    r = b.cli("migrate", "ct", "--to", "nowhere", "--stop-first", check=False)
    assert r.returncode == 1 and "not found" in r.stderr, r.stderr
    token_a = a.cli("remote", "token", "--name", "from-b").stdout.strip()
    b.cli("remote", "add", "a", "https://10.77.0.1:8443", "--token", token_a)
    r = b.cli("migrate", "ct", "--to", "a", check=False)
    assert r.returncode == 1 and "only a running container" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr

    # cold: stop, move the root's changes, start again there (processes restart)
    b.cli("start", "ct")
    wait_count(b, "ct", 0)
    r = b.cli("migrate", "ct", "--to", "a", "--stop-first", timeout=180)
    assert "stopped and started again" in r.stderr, r.stderr
    print(r.stderr)
    assert json.loads(a.cli("info", "ct", "--format", "json").stdout)["state"] == "running"
    assert a.cli("exec", "ct", "--", "cat", "/etc/moved").stdout == "written-on-a\n"
    wait_count(a, "ct", 0)
    assert min(counts(a, "ct")) == 1     # a new PID 1: the counter began again
    assert json.loads(b.cli("list", "--format", "json").stdout) == []
    assert not conmons(b)


# PID 1 counts into /www/count, served by httpd (port 8080) and by nc (7000, a line per line)
SERVER = ('mkdir -p /www; printf "while read l; do cat /www/count; done\\n" > /srv.sh;'
          ' nc -ll -p 7000 -e sh /srv.sh & httpd -p 8080 -h /www; i=0;'
          ' while :; do i=$((i+1)); echo "count $i"; echo $i > /www/c.tmp;'
          ' mv /www/c.tmp /www/count; sleep 0.2; done')


def fetch(d: Daemon, ip: str, timeout: float = 20) -> int:
    """The counter, over TCP from the daemon's own netns (the network's gateway side)."""
    deadline = time.monotonic() + timeout
    while True:
        try:   # (busybox 1.35's wget -T crashes: the timeout is ours)
            r = subprocess.run([*d.wrapper, "busybox", "wget", "-qO-", f"http://{ip}:8080/count"],
                               capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            r = subprocess.CompletedProcess([], 1, "", "timed out")
        if r.returncode == 0 and r.stdout.strip():
            return int(r.stdout)
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.2)


def nic_of(d: Daemon, name: str) -> tuple[str, str]:
    """(MAC, IP) of eth0 as the container sees it."""
    mac = d.cli("exec", name, "--", "cat", "/sys/class/net/eth0/address").stdout.strip()
    out = d.cli("exec", name, "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    return mac, out.split()[3].split("/")[0]


def test_container_with_a_nic_checkpoints_and_migrates(
        hosts: tuple[Daemon, Daemon]) -> None:  # noqa: F811
    a, b = hosts
    for d in (a, b):
        d.cli("image", "build", "busybox")
    token = b.cli("remote", "token", "--name", "from-a").stdout.strip()
    a.cli("remote", "add", "b", "https://10.77.0.2:8443", "--token", token)
    a.cli("network", "create", "blue", "--subnet", "10.92.0.0/24")
    a.cli("launch", "busybox", "web", "--network", "blue", "--", "sh", "-c", SERVER)
    mac, ip = nic_of(a, "web")
    assert ip.startswith("10.92.0.")
    first = fetch(a, ip)

    # checkpoint and restore on a: the same PID 1 answers at the same address, and a TCP
    # connection open across both goes on (the NICs are wired before CRIU restores sockets)
    with subprocess.Popen([*a.wrapper, "busybox", "nc", ip, "7000"], text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as client:
        assert client.stdin and client.stdout

        def ask() -> int:
            assert client.stdin and client.stdout
            client.stdin.write("x\n")
            client.stdin.flush()
            return int(client.stdout.readline())

        on_the_line = ask()
        a.cli("checkpoint", "web")
        with pytest.raises(AssertionError):   # nothing answers there meanwhile
            fetch(a, ip, timeout=1)
        a.cli("restore", "web")
        # it answers again and counts on (the restored loop may still be in the sleep it
        # was checkpointed in: the count moves on within a bounded wait)
        poll("the counter goes on", lambda: fetch(a, ip) > first, timeout=20)
        poll("the same connection answers", lambda: ask() > on_the_line, timeout=20)
        client.kill()
    assert nic_of(a, "web") == (mac, ip)
    seen = counts(a, "web")
    assert seen == list(range(1, len(seen) + 1)), seen[-5:]   # never started over
    assert "createRuntime" not in (a.state_dir / "instances" / "default_web" /
                                   "config.json").read_text()   # the restore's hook is gone
    time.sleep(0.5)   # the server side of the connection closes

    # live to b: same network (made there), MAC and IP; the counter goes on
    before = fetch(a, ip)
    r = a.cli("migrate", "web", "--to", "b", timeout=180)
    print(r.stderr)
    assert fetch(b, ip) > before
    assert nic_of(b, "web") == (mac, ip)
    assert min(counts(b, "web")) > before
    net = json.loads(b.cli("network", "list", "--format", "json").stdout)
    assert [(n["name"], n["subnet"]) for n in net] == [("blue", "10.92.0.0/24")]
    assert json.loads(a.cli("list", "--format", "json").stdout) == []

    # cold back to a (--stop-first): started again there, same MAC and IP
    token_a = a.cli("remote", "token", "--name", "from-b").stdout.strip()
    b.cli("remote", "add", "a", "https://10.77.0.1:8443", "--token", token_a)
    r = b.cli("migrate", "web", "--to", "a", "--stop-first", timeout=180)
    assert "stopped and started again" in r.stderr, r.stderr
    print(r.stderr)
    fetch(a, ip)
    assert nic_of(a, "web") == (mac, ip)
    assert min(counts(a, "web")) == 1
    assert json.loads(b.cli("list", "--format", "json").stdout) == []
    assert not conmons(b)
