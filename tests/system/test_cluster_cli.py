"""Three members, each a cumulod in its own network namespace (veths to a bridge the
test makes in a fourth), sharing one PostgreSQL over its unix socket: enable and join,
list across members, forwarded exec, --target, evacuate and restore of a running
container that keeps counting, a killed member going offline; bad input: an expired or
reused join token, an unknown or offline target, evacuating the last member, SQLite.
Traffic stays inside the namespaces the test made."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import checkpoint_skip_reason
from tests.system.clusterlib import (
    NAMES,
    listed,
    members,
    one_line_error,
    poll,
    three_members,
)
from tests.system.conftest import BIN, Daemon, wait_count

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime,
              pytest.mark.postgres]

COUNTER = 'i=0; while :; do i=$((i+1)); echo "count $i"; echo $i > /count; sleep 0.2; done'


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_server: object
            ) -> Iterator[tuple[list[Daemon], str]]:
    """Three members (tests/system/clusterlib.py)."""
    with three_members(tmp_path_factory.mktemp("cluster"), pg_server) as (daemons, url, _):
        yield daemons, url


def test_members_join_and_list(cluster: tuple[list[Daemon], str]) -> None:
    daemons, _ = cluster
    for d in daemons:   # every member answers for the whole cluster
        ms = members(d)
        assert sorted(ms) == list(NAMES)
        assert all(m["state"] == "online" for m in ms.values()), ms
        assert ms["m2"]["address"] == "10.78.0.2:8443"
        assert ms["m3"]["cpus"] >= 1 and ms["m3"]["memory"] > 0  # type: ignore[operator]
    out = daemons[1].cli("cluster", "list").stdout
    assert "10.78.0.3" in out and "online" in out, out
    assert "m2" in daemons[1].cli("cluster", "info").stdout


def test_launch_target_list_and_forwarded_exec(cluster: tuple[list[Daemon], str]) -> None:
    m1, m2, m3 = cluster[0]
    m1.cli("launch", "busybox", "on3", "--target", "m3", "--", "sleep", "1000")
    m2.cli("launch", "busybox", "spread", "--", "sleep", "1000")
    try:
        for d in (m1, m2, m3):
            seen = listed(d)
            assert seen["on3"]["location"] == "m3" and seen["on3"]["state"] == "running"
            assert seen["spread"]["state"] == "running"
        assert listed(m1)["spread"]["location"] in ("m1", "m2")  # not m3: it had one
        assert "LOCATION" in m1.cli("list").stdout
        # asked on m1, run on m3 (its hostname is the instance's; m3's conmon runs it)
        assert m1.cli("exec", "on3", "--", "cat", "/proc/1/cmdline").stdout.startswith("sleep")
        info = json.loads(m2.cli("info", "on3", "--format", "json").stdout)
        assert info["pid"] and info["location"] == "m3"
        m1.cli("stop", "on3", "--force")
        assert listed(m3)["on3"]["state"] == "stopped"
        m2.cli("start", "on3")
        assert listed(m1)["on3"]["state"] == "running"
    finally:
        m1.cli("delete", "on3", "--force")
        m1.cli("delete", "spread", "--force")
    assert listed(m3) == {}

    one_line_error(m1.cli("launch", "busybox", "x", "--target", "nowhere", check=False),
                   "member 'nowhere' not found")
    assert listed(m1) == {}


@pytest.mark.criu
@pytest.mark.skipif(checkpoint_skip_reason() is not None, reason=str(checkpoint_skip_reason()))
def test_evacuate_and_restore_keep_a_running_container(
        cluster: tuple[list[Daemon], str]) -> None:
    m1, m2, m3 = cluster[0]
    m1.cli("launch", "busybox", "ct", "--target", "m2", "--", "sh", "-c", COUNTER)
    try:
        before = wait_count(m2, "ct", 5)
        r = m1.cli("cluster", "evacuate", "m2", timeout=300)
        assert "ct ->" in r.stderr and "(live)" in r.stderr, r.stderr
        where = listed(m1)["ct"]["location"]
        assert where in ("m1", "m3")
        assert members(m3)["m2"]["state"] == "evacuated"
        # the same PID 1 counts on: a restart would begin at 1 again
        assert int(m3.cli("exec", "ct", "--", "cat", "/count").stdout) >= before
        # nothing new lands on an evacuated member
        m1.cli("launch", "busybox", "other", "--", "sleep", "1000")
        assert listed(m1)["other"]["location"] != "m2"
        m1.cli("delete", "other", "--force")

        r = m3.cli("cluster", "restore", "m2", timeout=300)
        assert "ct <-" in r.stderr, r.stderr
        assert listed(m1)["ct"]["location"] == "m2"
        assert members(m1)["m2"]["state"] == "online"
        now = int(m1.cli("exec", "ct", "--", "cat", "/count").stdout)
        assert now >= before
    finally:
        m1.cli("delete", "ct", "--force")


def join_fails(d: Daemon, tmp_path: Path, token: str) -> subprocess.CompletedProcess[str]:
    """A new cumulod with ``token`` next to member ``d`` (its namespace, another port);
    only its error line is kept of what it wrote (its log goes to stderr too)."""
    r = subprocess.run(
        [*d.wrapper, str(BIN / "cumulod"), "--state-dir", str(tmp_path / "new"), "--socket",
         str(tmp_path / "new.sock"), "--listen", f"{d.extra[d.extra.index('--listen') + 1]}"
         .replace(":8443", ":8999"), "--join", token, "--no-default-network"],
        capture_output=True, text=True, timeout=60)
    errors = [line for line in r.stderr.splitlines() if " INFO " not in line]
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout, "\n".join(errors))


def test_bad_join_tokens(cluster: tuple[list[Daemon], str], tmp_path: Path) -> None:
    daemons, _ = cluster
    m1 = daemons[0]
    token = m1.cli("cluster", "add", "late", "--ttl", "0.001").stdout.strip()
    time.sleep(0.1)   # (the token's lifetime, not a state we wait for)
    one_line_error(join_fails(m1, tmp_path, token), "this join token expired")
    one_line_error(join_fails(m1, tmp_path, daemons[1].join_token),  # type: ignore[attr-defined]
                   "this join token was already used")
    one_line_error(join_fails(m1, tmp_path, "cumulo-join:nonsense"), "not a join token")
    assert "late" not in members(m1)
    one_line_error(m1.cli("cluster", "add", "m2", check=False), "member 'm2' already exists")


def test_sqlite_host_cannot_enable(daemon: Daemon) -> None:
    one_line_error(daemon.cli("cluster", "enable", "solo", check=False),
                   "a cluster needs a store the members share")
    one_line_error(daemon.cli("launch", "busybox", "x", "--target", "m1", check=False),
                   "this host is in no cluster")


def test_killed_member_goes_offline(cluster: tuple[list[Daemon], str]) -> None:
    m1, m2, m3 = cluster[0]
    m1.cli("launch", "busybox", "lost", "--target", "m3", "--", "sleep", "1000")
    m1.cli("launch", "busybox", "cattle", "--target", "m3", "--ephemeral", "--", "sleep",
           "1000")
    m3.stop(signal.SIGKILL)   # its containers run on; nobody hears from m3
    try:
        poll("m3 offline", lambda: members(m1)["m3"]["state"] == "offline")
        assert listed(m2)["lost"]["state"] == "unreachable"   # not "stopped"
        # the ephemeral one comes back from its image on another member, after the grace
        poll("cattle recreated", lambda: listed(m2)["cattle"]["location"] != "m3"
             and listed(m2)["cattle"]["state"] == "running")
        assert listed(m1)["lost"]["location"] == "m3"   # the stateful one waits
        one_line_error(m1.cli("launch", "busybox", "x", "--target", "m3", check=False),
                       "member 'm3' is offline")
        one_line_error(m1.cli("exec", "lost", "--", "true", check=False), "offline")
        # with m3 away and m2 empty, m2 can go; then m1 is the last one and cannot
        m1.cli("cluster", "evacuate", "m2")
        one_line_error(m2.cli("cluster", "evacuate", "m1", check=False),
                       "no other member is online")
        m1.cli("cluster", "restore", "m2")
    finally:
        m3.start()
    poll("m3 online", lambda: members(m1)["m3"]["state"] == "online")
    assert listed(m1)["lost"]["state"] == "running"
    # m3's old copy of the ephemeral one is gone (it runs elsewhere); it answers there
    assert m3.cli("exec", "cattle", "--", "true").returncode == 0
    assert (m3.state_dir / "instances" / "default_lost").is_dir()
    assert not (m3.state_dir / "instances" / "default_cattle").exists()
    m1.cli("delete", "lost", "--force")
    m1.cli("delete", "cattle", "--force")


def over_https(d: Daemon, token: str, *args: str, check: bool = True
               ) -> subprocess.CompletedProcess[str]:
    """``cumulo ARGS`` as a client over HTTPS to member ``d`` (in its namespace), with
    its pinned fingerprint and ``token``."""
    ip = d.extra[d.extra.index("--listen") + 1]
    env = {"PATH": d.env["PATH"], "CUMULO_URL": f"https://{ip}", "CUMULO_TOKEN": token,
           "CUMULO_FINGERPRINT": d.cli("host", "fingerprint").stdout.strip()}
    r = subprocess.run([*d.wrapper, str(BIN / "cumulo"), *args], capture_output=True,
                       text=True, env=env, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_members_pin_certificates_and_forward_as_the_caller(
        cluster: tuple[list[Daemon], str]) -> None:
    """Each member's identity is of kind member and its fingerprint is in the shared
    members table; a client identity's request forwarded from m1 to m3 is authorized
    there as that identity (an operator may exec, a viewer may not), and nobody but a
    member may send the forwarding headers."""
    m1, m2, m3 = cluster[0]
    ms = members(m2)
    for name, d in zip(NAMES, (m1, m2, m3), strict=True):
        assert ms[name]["fingerprint"] == d.cli("host", "fingerprint").stdout.strip()
    kinds = {i["name"]: i["kind"] for i in json.loads(
        m1.cli("identity", "list", "--format", "json").stdout)}
    assert {n: kinds.get(f"member-{n}") for n in NAMES} == dict.fromkeys(NAMES, "member")
    ops = m1.cli("identity", "create", "fw-ops", "--role", "operator").stdout.strip()
    eve = m1.cli("identity", "create", "fw-eve", "--role", "viewer").stdout.strip()
    m1.cli("launch", "busybox", "fw", "--target", "m3", "--", "sleep", "1000")
    try:
        assert over_https(m1, ops, "exec", "fw", "--", "echo", "hi").stdout == "hi\n"
        assert listed(m3)["fw"]["state"] == "running"
        r = over_https(m1, eve, "stop", "fw", "--force", check=False)
        one_line_error(r, "identity 'fw-eve' (viewer in project 'default') may not do"
                          " this: it needs the right 'operate'")
        r = over_https(m2, eve, "exec", "fw", "--", "echo", "hi", check=False)
        assert r.returncode != 0 and "'operate'" in r.stderr, r.stderr
        assert listed(m3)["fw"]["state"] == "running"
        # a client that says it was forwarded is refused (m3 would answer for itself)
        code = ("import sys; from cumulo.client import Client\n"
                "c = Client(url=sys.argv[1], token=sys.argv[2], fingerprint=sys.argv[3])\n"
                "c.headers.update({'X-Cumulo-Forwarded': 'm1',"
                " 'X-Cumulo-On-Behalf-Of': 'fw-ops'})\n"
                "c.request('DELETE', '/instances/fw')\n")
        fp = m3.cli("host", "fingerprint").stdout.strip()
        r = subprocess.run([*m3.wrapper, str(BIN / "python"), "-c", code,
                            "https://10.78.0.3:8443", eve, fp], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode != 0 and "only cluster members forward requests" in r.stderr, \
            r.stderr
        assert listed(m1)["fw"]["state"] == "running"
        # each request once in the audit log, by the identity, not the member
        audit = [(e["identity"], e["action"], e["result"]) for e in json.loads(
            m1.cli("audit", "list", "--format", "json").stdout) if "/fw" in e["object"]]
        assert audit.count(("fw-ops", "WS /instances/{name}/exec-ws", 101)) == 1, audit
        assert ("fw-eve", "DELETE /instances/{name}", 403) in audit, audit
        assert not [e for e in audit if e[0].startswith("member-")], audit
    finally:
        m1.cli("delete", "fw", "--force")
        for name in ("fw-ops", "fw-eve"):
            m1.cli("identity", "revoke", name)


def test_a_strict_spread_placement_group_keeps_replicas_apart(
        cluster: tuple[list[Daemon], str]) -> None:
    """Three replicas in a strict spread group land on three members; a fourth has
    nowhere to go and is refused in one line, leaving nothing behind; deleting one frees
    its member for the next."""
    m1, m2, m3 = cluster[0]
    m1.cli("placement-group", "create", "reps", "--policy", "spread", "--strict")
    names = ["r1", "r2", "r3"]
    try:
        for i, name in enumerate(names):
            (m1, m2, m3)[i].cli("launch", "busybox", name, "--placement-group", "reps",
                                "--", "sleep", "1000")
        seen = listed(m2)
        assert sorted(str(seen[n]["location"]) for n in names) == list(NAMES), seen
        r = m3.cli("launch", "busybox", "r4", "--placement-group", "reps", "--", "sleep",
                   "1000", check=False)
        one_line_error(r, "no member can host")
        assert "r4" not in listed(m1)
        freed = str(seen["r2"]["location"])
        m1.cli("delete", "r2", "--force")
        names.remove("r2")
        m1.cli("launch", "busybox", "r4", "--placement-group", "reps", "--", "sleep", "1000")
        names.append("r4")
        assert listed(m3)["r4"]["location"] == freed
    finally:
        for name in names:
            m1.cli("delete", name, "--force", check=False)
        m1.cli("placement-group", "delete", "reps")
    assert listed(m1) == {}
