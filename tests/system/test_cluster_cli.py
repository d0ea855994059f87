"""Three members, each a cumulod in its own network namespace (veths to a bridge the
test makes in a fourth), sharing one PostgreSQL over its unix socket: enable and join,
list across members, forwarded exec, --target, evacuate and restore of a running
container and VM that keep their state, per-instance evacuation modes (stop in place, a
stopped container moved cold), a killed member going offline (its stateful instance
not recoverable elsewhere: snapshots are local), 20 parallel
launches filling the members' declared memory, rebalance (asked and automatic), a
running host joining with `cumulo cluster join` and a member removed; bad input: an
expired or reused join token, an unknown or offline target, a placement nobody can
satisfy, evacuating the last member, removing a member with instances, SQLite.
Traffic stays inside the namespaces the test made."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import uuid
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
from tests.system.conftest import BIN, Daemon, counts, leftovers, wait_count

# (the three members' teardown counts in the last test's time: 600 s on a busy machine)
pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime,
              pytest.mark.postgres, pytest.mark.timeout(600)]

COUNTER = 'i=0; while :; do i=$((i+1)); echo "count $i"; echo $i > /count; sleep 0.2; done'


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_server: object
            ) -> Iterator[tuple[list[Daemon], str]]:
    """Three members (tests/system/clusterlib.py)."""
    with three_members(tmp_path_factory.mktemp("cluster"), pg_server, offline_after="5"
                       ) as (daemons, url, _):
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


def test_a_project_quota_counts_every_member(cluster: tuple[list[Daemon], str]) -> None:
    """Projects and their quotas are the cluster's: two instances of a project limited
    to two, launched on different members from different members, fill it everywhere."""
    m1, m2, m3 = cluster[0]
    m1.cli("project", "create", "qt", "-c", "limits.instances=2")
    try:
        m1.cli("--project", "qt", "launch", "busybox", "q1", "--target", "m2", "--",
               "sleep", "1000")
        m2.cli("--project", "qt", "launch", "busybox", "q2", "--target", "m3", "--",
               "sleep", "1000")
        for d, target in ((m3, "m1"), (m1, None), (m2, "m2")):
            one_line_error(d.cli("--project", "qt", "launch", "busybox", "q3",
                                 *(["--target", target] if target else []), check=False),
                           "project 'qt' is over quota: limits.instances=2, in use 2, this"
                           " needs 1 more")
        seen = {i["name"]: i["location"] for i in json.loads(m3.cli(
            "--project", "qt", "list", "--format", "json").stdout)}
        assert seen == {"q1": "m2", "q2": "m3"}, seen
        m3.cli("--project", "qt", "delete", "q1", "--force")   # room again, anywhere
        m3.cli("--project", "qt", "launch", "busybox", "q3", "--target", "m1", "--",
               "sleep", "1000")
    finally:
        for name in ("q1", "q2", "q3"):
            m1.cli("--project", "qt", "delete", name, "--force", check=False)
        m1.cli("project", "delete", "qt")


def test_member_groups_and_the_compact_strategy(cluster: tuple[list[Daemon], str]) -> None:
    """`cumulo cluster group assign` puts members in groups, `--target @GROUP` places
    among them (spread); `placement.strategy compact` fills one member before the next."""
    m1, m2, m3 = cluster[0]
    m1.cli("cluster", "group", "assign", "m2", "fast,ssd")
    m2.cli("cluster", "group", "assign", "m3", "fast")
    try:
        assert {n: m["groups"] for n, m in members(m3).items()} == {
            "m1": [], "m2": ["fast", "ssd"], "m3": ["fast"]}
        groups = json.loads(m1.cli("cluster", "group", "list", "--format", "json").stdout)
        assert groups == [{"name": "fast", "members": "m2, m3"},
                          {"name": "ssd", "members": "m2"}], groups
        for i in range(2):
            m1.cli("launch", "busybox", f"g{i}", "--target", "@fast", "--", "sleep", "1000")
        m3.cli("launch", "busybox", "g2", "--target", "@ssd", "--", "sleep", "1000")
        seen = listed(m2)
        assert sorted(str(seen[f"g{i}"]["location"]) for i in range(2)) == ["m2", "m3"]
        assert seen["g2"]["location"] == "m2"
        one_line_error(m1.cli("launch", "busybox", "x", "--target", "@slow", check=False),
                       "member group 'slow' not found")
        one_line_error(m1.cli("cluster", "group", "assign", "m1", "Bad_Name", check=False),
                       "invalid member group name 'Bad_Name'")
        for name in ("g0", "g1", "g2"):
            m1.cli("delete", name, "--force")

        # compact: both go where one already is (spread would put the second elsewhere)
        m1.cli("cluster", "config", "set", "placement.strategy", "compact")
        assert json.loads(m2.cli("cluster", "config", "show", "--format", "json").stdout
                          )[0] == {"key": "placement.strategy", "value": "compact"}
        for i, d in enumerate((m1, m2, m3)):
            d.cli("launch", "busybox", f"c{i}", "--", "sleep", "1000")
        where = {str(i["location"]) for i in listed(m1).values()}
        assert len(where) == 1, listed(m1)
        m1.cli("cluster", "config", "unset", "placement.strategy")
        m2.cli("launch", "busybox", "c3", "--", "sleep", "1000")
        assert listed(m1)["c3"]["location"] not in where
        one_line_error(m1.cli("cluster", "config", "set", "placement.strategy", "pack",
                              check=False),
                       "placement.strategy must be one of spread, compact, not 'pack'")
    finally:
        for name in NAMES:
            m1.cli("cluster", "group", "assign", name, "")
        m1.cli("cluster", "config", "unset", "placement.strategy")
        for name in listed(m1):
            m1.cli("delete", name, "--force")


def test_an_image_follows_a_launch_to_a_member_without_it(
        cluster: tuple[list[Daemon], str]) -> None:
    """An image published on m1 (its files there only; the images table is shared): a
    launch asked of m2 for m3 gets m3 the files from m1 first, with progress, and the
    instance runs the image's content there."""
    m1, m2, m3 = cluster[0]
    m1.cli("launch", "busybox", "src", "--target", "m1", "--", "sleep", "1000")
    try:
        m1.cli("exec", "src", "--", "sh", "-c", "echo marked > /marker")
        m1.cli("stop", "src", "--force")
        m1.cli("publish", "src", "--alias", "marked", timeout=300)
        m1.cli("delete", "src")
        fp = json.loads(m2.cli("image", "info", "marked", "--format", "json").stdout
                        )["fingerprint"]
        assert (m1.state_dir / "images" / fp).is_dir()
        assert not (m3.state_dir / "images" / fp).exists()
        before = subscribers(m3)
        watch = subprocess.Popen([str(BIN / "cumulo"), "monitor", "--type", "operation",
                                  "--type", "lifecycle", "--format", "json"], env=m3.env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            listening(m3, before)
            m3.cli("launch", "busybox", "ready", "--target", "m3", "--", "sleep", "1000")
            events(watch, "instance-created", 1)
            m2.cli("launch", "marked", "follows", "--target", "m3", "--", "sleep", "1000",
                   timeout=300)
        finally:
            watch.terminate()
            out, _ = watch.communicate(timeout=30)
        assert listed(m1)["follows"]["location"] == "m3"
        assert m1.cli("exec", "follows", "--", "cat", "/marker").stdout == "marked\n"
        assert (m3.state_dir / "images" / fp).is_dir()
        assert "image marked fetched from member m1" in m3.log.read_text()
        messages = [json.loads(line)["metadata"].get("message") or "" for line in
                    out.splitlines()]
        assert any(m.startswith("fetching image marked from m1: ") for m in messages), \
            messages
    finally:
        for name in ("src", "follows", "ready"):
            m1.cli("delete", name, "--force", check=False)
        m1.cli("image", "delete", "marked", check=False)


VM_COUNTER = 'i=0; while :; do i=$((i+1)); echo "count $i"; sleep 1; done'


@pytest.mark.criu
@pytest.mark.qemu
@pytest.mark.skipif(checkpoint_skip_reason() is not None, reason=str(checkpoint_skip_reason()))
def test_evacuate_and_restore_keep_a_running_container_and_vm(
        cluster: tuple[list[Daemon], str]) -> None:
    """A container (CRIU) and a VM (QEMU, TCG) running on m2 move live to the members the
    placement engine picks and back: the same processes count on, and a file written in
    each before survives both moves."""
    m1, m2, m3 = cluster[0]
    m1.cli("launch", "busybox", "ct", "--target", "m2", "--", "sh", "-c", COUNTER)
    m1.cli("launch", "busybox", "vm", "--target", "m2", "--type", "vm", "--machine", "pc",
           "--memory", "128MiB", "--", "sh", "-c", VM_COUNTER)
    try:
        before = wait_count(m2, "ct", 5)
        vm_before = wait_count(m2, "vm", 2, timeout=300)
        m1.cli("exec", "ct", "--", "sh", "-c", "echo kept > /kept")
        m1.cli("exec", "vm", "--", "sh", "-c", "echo kept > /etc/kept; sync")

        def vm_moved() -> None:
            """The guest went on where it was: its console there shows no boot, its
            counter went on, and the file is on that member's disk (not a cache)."""
            assert wait_count(m1, "vm", vm_before) > vm_before
            assert "CUMULO-READY" not in m1.cli("logs", "vm").stdout
            assert min(counts(m1, "vm")) > 1
            m1.cli("exec", "vm", "--", "sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches")
            assert m1.cli("exec", "vm", "--", "cat", "/etc/kept").stdout == "kept\n"

        r = m1.cli("cluster", "evacuate", "m2", timeout=600)
        assert "ct ->" in r.stderr and "vm ->" in r.stderr, r.stderr
        assert r.stderr.count("(live)") == 2, r.stderr
        seen = listed(m1)
        assert {seen["ct"]["location"], seen["vm"]["location"]} <= {"m1", "m3"}, seen
        assert seen["vm"]["state"] == "running", seen
        assert members(m3)["m2"]["state"] == "evacuated"
        # the same PID 1 counts on: a restart would begin at 1 again
        assert int(m3.cli("exec", "ct", "--", "cat", "/count").stdout) >= before
        assert m3.cli("exec", "ct", "--", "cat", "/kept").stdout == "kept\n"
        vm_moved()
        # nothing new lands on an evacuated member
        m1.cli("launch", "busybox", "other", "--", "sleep", "1000")
        assert listed(m1)["other"]["location"] != "m2"
        m1.cli("delete", "other", "--force")

        r = m3.cli("cluster", "restore", "m2", timeout=600)
        assert "ct <-" in r.stderr and "vm <-" in r.stderr, r.stderr
        seen = listed(m1)
        assert seen["ct"]["location"] == seen["vm"]["location"] == "m2", seen
        assert members(m1)["m2"]["state"] == "online"
        assert int(m1.cli("exec", "ct", "--", "cat", "/count").stdout) >= before
        assert wait_count(m2, "vm", vm_before) > vm_before
        for name, path in (("ct", "/kept"), ("vm", "/etc/kept")):
            assert m1.cli("exec", name, "--", "cat", path).stdout == "kept\n"
    finally:
        m1.cli("delete", "ct", "--force")
        m1.cli("delete", "vm", "--force")


def test_evacuate_modes_stop_in_place_and_move_a_stopped_one_cold(
        cluster: tuple[list[Daemon], str]) -> None:
    """``--evacuate stop``: stopped on the evacuated member, started by restore; a stopped
    container marked ``migrate`` (with `cumulo config set`) moves cold and back, stopped."""
    m1, m2, _m3 = cluster[0]
    m1.cli("launch", "busybox", "held", "--target", "m2", "--evacuate", "stop", "--",
           "sleep", "1000")
    m1.cli("launch", "busybox", "parked", "--target", "m2", "--", "sleep", "1000")
    try:
        m1.cli("stop", "parked", "--force")
        m2.cli("config", "set", "parked", "cluster.evacuate", "migrate")
        assert json.loads(m1.cli("info", "parked", "--format", "json").stdout)[
            "options"] == {"cluster.evacuate": "migrate"}
        one_line_error(m1.cli("config", "set", "parked", "cluster.evacuate", "later",
                              check=False), "invalid cluster.evacuate 'later'")
        r = m1.cli("cluster", "evacuate", "m2", timeout=300)
        assert "held stopped on m2" in r.stderr and "parked ->" in r.stderr, r.stderr
        seen = listed(m1)
        assert seen["held"]["location"] == "m2" and seen["held"]["state"] == "stopped", seen
        assert seen["parked"]["location"] in ("m1", "m3"), seen
        assert seen["parked"]["state"] == "stopped", seen
        r = m1.cli("cluster", "restore", "m2", timeout=300)
        assert "held started again on m2" in r.stderr and "parked <-" in r.stderr, r.stderr
        seen = listed(m1)
        assert seen["held"]["state"] == "running" and seen["parked"]["location"] == "m2", seen
        assert seen["parked"]["state"] == "stopped", seen
    finally:
        m1.cli("delete", "held", "--force")
        m1.cli("delete", "parked", "--force")


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


def link(ns: str, state: str) -> None:
    """The underlay veth of the member in namespace ``ns`` up or down."""
    subprocess.run(["ip", "-n", ns, "link", "set", "eth0", state], check=True,
                   capture_output=True, timeout=30)


def test_killed_member_goes_offline(cluster: tuple[list[Daemon], str]) -> None:
    m1, m2, m3 = cluster[0]
    m1.cli("launch", "busybox", "lost", "--target", "m3", "--", "sleep", "1000")
    m1.cli("launch", "busybox", "cattle", "--target", "m3", "--ephemeral", "--", "sleep",
           "1000")
    # its daemon stopped and its namespace cut off: its containers run on, nobody hears
    # from m3 and nothing reaches it (its underlay veth down)
    ns = m3.wrapper[1].removeprefix("--net=/run/netns/")
    m3.stop(signal.SIGKILL)
    link(ns, "down")
    try:
        # m3's address does not even refuse a connection: nothing answers there
        r = subprocess.run([*m1.wrapper, "python3", "-c", "import socket; socket."
                            "create_connection(('10.78.0.3', 8443), 2)"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "refused" not in r.stderr, r.stderr
        poll("m3 offline", lambda: members(m1)["m3"]["state"] == "offline")
        assert listed(m2)["lost"]["state"] == "unreachable"   # not "stopped"
        # the ephemeral one comes back from its image on another member, after the grace
        poll("cattle recreated", lambda: listed(m2)["cattle"]["location"] != "m3"
             and listed(m2)["cattle"]["state"] == "running")
        assert listed(m1)["lost"]["location"] == "m3"   # the stateful one waits
        one_line_error(m1.cli("launch", "busybox", "x", "--target", "m3", check=False),
                       "member 'm3' is offline")
        one_line_error(m1.cli("exec", "lost", "--", "true", check=False), "offline")
        # its snapshots are in m3's own pools: recovering it elsewhere is refused
        one_line_error(m2.cli("cluster", "recover", "lost", "--target", "m1", check=False),
                       "cannot recover 'lost' from a snapshot: its snapshots are in the"
                       " storage pools of m3")
        one_line_error(m2.cli("cluster", "recover", "cattle", check=False),
                       "not offline: nothing to recover")
        # with m3 away and m2 empty, m2 can go; then m1 is the last one and cannot
        m1.cli("cluster", "evacuate", "m2")
        one_line_error(m2.cli("cluster", "evacuate", "m1", check=False),
                       "no other member is online")
        m1.cli("cluster", "restore", "m2")
    finally:
        link(ns, "up")
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
        one_line_error(r, "no member can host this instance: 3 already host one of"
                          " placement group reps (strict spread)")
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


@pytest.fixture
def small_members(cluster: tuple[list[Daemon], str]) -> Iterator[list[Daemon]]:
    """Each member declares 512 MiB of memory (its host's figure again afterwards)."""
    daemons = cluster[0]
    old = {n: m["memory"] for n, m in members(daemons[0]).items()}
    for name in NAMES:
        daemons[0].cli("cluster", "set", name, "memory", "512MiB")
    try:
        yield daemons
    finally:
        gone = [subprocess.Popen([str(BIN / "cumulo"), "delete", name, "--force"],
                                 env=daemons[i % 3].env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
                for i, name in enumerate(listed(daemons[0]))]   # at once: quicker
        for p in gone:
            _, err = p.communicate(timeout=300)
            if p.returncode:
                print("parallel delete:", p.args[2], err)
        for name in listed(daemons[0]):   # what a parallel delete left
            daemons[0].cli("delete", name, "--force")
        for name, memory in old.items():
            daemons[0].cli("cluster", "set", name, "memory", str(memory))
        daemons[0].cli("cluster", "config", "unset", "rebalance.interval")


def test_parallel_launches_fill_the_members_without_overcommit(
        small_members: list[Daemon]) -> None:
    """20 launches of 96 MiB at once, asked of the three members in turn: five fit on
    each member's 512 MiB, the other five are refused in one line naming the filter;
    no member holds more than it declares."""
    daemons = small_members
    procs = [subprocess.Popen(
        [str(BIN / "cumulo"), "launch", "busybox", f"p{i}", "--memory", "96MiB", "--",
         "sleep", "1000"], env=daemons[i % 3].env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(20)]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()
    refused = [err for code, err in results if code != 0]
    assert len(refused) == 5, results
    for err in refused:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "no member can host this instance: 3 lack memory" \
            " (needs 96.0MiB)" in lines[0], err
    seen = listed(daemons[1])
    assert len(seen) == 15 and all(i["state"] == "running" for i in seen.values()), seen
    where = [str(i["location"]) for i in seen.values()]
    assert sorted(where.count(n) for n in NAMES) == [5, 5, 5], where
    for name, m in members(daemons[2]).items():
        assert m["instances"] == 5 and m["declared_memory"] <= m["memory"], (name, m)


@pytest.mark.criu
@pytest.mark.skipif(checkpoint_skip_reason() is not None, reason=str(checkpoint_skip_reason()))
def test_rebalance_moves_the_fewest_instances(small_members: list[Daemon]) -> None:
    """Three 128 MiB instances on m1, none elsewhere: the dry run proposes two moves (one
    to each other member: no fewer can even them out) and moves nothing; the rebalance
    makes them live. Then the automatic mode, one move per round, moves one of two
    extra ones and stops: no move can lower the score further."""
    m1, m2, m3 = small_members
    # every member's lifecycle events, as they come (a round publishes on its member)
    before = [subscribers(d) for d in small_members]
    watch = [subprocess.Popen([str(BIN / "cumulo"), "monitor", "--type", "lifecycle",
                               "--format", "json"], env=d.env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for d in small_members]
    try:
        for d, n in zip(small_members, before, strict=True):
            listening(d, n)
        rebalance_asked_and_automatic(small_members, watch)
    finally:
        for p in watch:
            p.terminate()
            p.wait(timeout=30)
            if p.stdout:
                p.stdout.close()


def subscribers(d: Daemon) -> float:
    """How many event streams ``d`` serves now (its metrics)."""
    with d.client() as c:
        m = re.search(r"^cumulo_event_subscribers (\S+)$", c.metrics(), re.M)
    assert m, "no cumulo_event_subscribers in the metrics"
    return float(m.group(1))


def listening(d: Daemon, before: float, timeout: float = 60) -> None:
    """Once the `cumulo monitor` started for ``d`` (which served ``before`` streams then) is
    subscribed: a CLI that starts faster than the monitor must not act before it listens."""
    deadline = time.monotonic() + timeout
    while subscribers(d) <= before:
        assert time.monotonic() < deadline, "the monitor did not subscribe"
        time.sleep(0.1)


def events(p: subprocess.Popen[str], action: str, count: int) -> list[dict[str, object]]:
    """The next ``count`` lifecycle events ``action`` that monitor ``p`` printed (others
    are skipped), their metadata."""
    found: list[dict[str, object]] = []
    assert p.stdout is not None
    while len(found) < count:
        line = p.stdout.readline()   # (the test's timeout bounds a stream that stops)
        assert line, f"monitor ended before {count} {action}: {found}"
        meta = json.loads(line)["metadata"]
        if meta.get("action") == action:
            found.append(meta)
    return found


def rebalance_asked_and_automatic(small_members: list[Daemon],
                                  watch: list[subprocess.Popen[str]]) -> None:
    m1, m2, m3 = small_members
    for i in range(3):
        m1.cli("launch", "busybox", f"b{i}", "--target", "m1", "--memory", "128MiB", "--",
               "sleep", "1000")
    events(watch[0], "instance-created", 3)   # (m1's monitor listens: so do the others)
    r = m2.cli("cluster", "rebalance", "--dry-run")
    assert "imbalance 0.3536 -> 0.0000 with 2 move(s) (dry run)" in r.stderr, r.stderr
    assert r.stdout.count(" m1 ") == 2 and " m2 " in r.stdout and " m3 " in r.stdout, \
        r.stdout
    assert {str(i["location"]) for i in listed(m1).values()} == {"m1"}
    r = m2.cli("cluster", "rebalance", "--dry-run", "--max-moves", "1")
    assert "with 1 move(s) (dry run)" in r.stderr, r.stderr

    r = m3.cli("cluster", "rebalance", timeout=300)
    assert r.stderr.count("(live), imbalance") == 2, r.stderr
    assert "imbalance 0.3536 -> 0.0000 with 2 move(s)" in r.stderr, r.stderr
    # published by m3, which ran the round: the plan, each move with its scores, the end
    (planned,) = events(watch[2], "cluster-rebalance-planned", 1)
    assert planned["context"] == {"mode": "asked", "before": 0.353553, "after": 0.0,
                                  "moves": 2}, planned
    first, second = events(watch[2], "instance-rebalanced", 2)
    for e in (first, second):
        c = e["context"]
        assert isinstance(c, dict) and c["source"] == "m1" and c["how"] == "live", e
        assert c["mode"] == "asked" and c["score_before"] > c["score_after"], e
    assert first["context"]["score_before"] == 0.353553, first  # type: ignore[index]
    assert first["context"]["score_after"] == 0.204124, first  # type: ignore[index]
    assert second["context"]["score_after"] == 0.0, second  # type: ignore[index]
    assert {first["context"]["target"], second["context"]["target"]} == {  # type: ignore[index]
        "m2", "m3"}
    (done,) = events(watch[2], "cluster-rebalance-done", 1)
    assert done["context"] == {"mode": "asked", "before": 0.353553, "after": 0.0,
                               "moves": 2}, done
    text = m3.log.read_text()
    assert "rebalance (asked): moved b" in text and "imbalance 0.3536 -> 0.0000 with 2" \
        " move(s)" in text
    where = sorted(str(i["location"]) for i in listed(m1).values())
    assert where == ["m1", "m2", "m3"], where
    r = m1.cli("cluster", "rebalance")
    assert "nothing to move" in r.stderr, r.stderr

    # the automatic mode: 2 more on m2 (1/3/1): one move gives 2/2/1, then none helps
    for i in (3, 4):
        m1.cli("launch", "busybox", f"b{i}", "--target", "m2", "--memory", "128MiB", "--",
               "sleep", "1000")
    for key, value in (("rebalance.threshold", "0.05"), ("rebalance.batch", "1"),
                       ("rebalance.cooldown", "0"), ("rebalance.interval", "0.5")):
        m2.cli("cluster", "config", "set", key, value)

    def spread() -> list[int]:
        where = [str(i["location"]) for i in listed(m1).values()]
        return sorted(where.count(n) for n in NAMES)

    poll("one automatic move", lambda: spread() == [1, 2, 2], timeout=120)
    # the first online member by name runs the round (m1, or another if m1 missed
    # beats); its log line comes just after the move is in the store
    poll("the automatic move logged", lambda: any(
        "rebalance (automatic): moved b" in d.log.read_text() for d in small_members),
        timeout=30)
    # 1/3/1 of 512 MiB each, then 2/2/1: the scores it logs and publishes
    (ran,) = [i for i, d in enumerate(small_members)
              if "rebalance (automatic): moved b" in d.log.read_text()]
    moved = re.search(r"rebalance \(automatic\): moved (b\d) from m2 to (m\d) \(live\):"
                      r" imbalance ([\d.]+) -> ([\d.]+)", small_members[ran].log.read_text())
    assert moved and moved[2] in ("m1", "m3"), small_members[ran].log.read_text()
    assert (moved[3], moved[4]) == ("0.2357", "0.1179"), moved[0]
    (e,) = events(watch[ran], "instance-rebalanced", 1)
    assert e["name"] == moved[1] and e["context"] == {
        "source": "m2", "target": moved[2], "how": "live", "score_before": 0.235702,
        "score_after": 0.117851, "mode": "automatic"}, e
    m2.cli("cluster", "config", "unset", "rebalance.interval")
    assert spread() == [1, 2, 2]
    for key, value, words in (("rebalance.batch", "0", "rebalance.batch must be at least 1"),
                              ("rebalance.speed", "1", "unknown cluster setting")):
        one_line_error(m1.cli("cluster", "config", "set", key, value, check=False), words)


def test_a_running_host_joins_and_a_member_is_removed(
        cluster: tuple[list[Daemon], str], tmp_path: Path) -> None:
    """A fourth host, a running cumulod on its own store (in m1's namespace, another
    port), joins with `cumulo cluster join TOKEN` and restarts as member m4; it cannot be
    removed while it has an instance (Incus' words), then it can: it notices, leaves
    the cluster, and starts again as a single host."""
    m1, m2, _m3 = cluster[0]
    m4 = Daemon(state_dir=tmp_path / "state", socket=tmp_path / "cumulo.sock",
                cgroup_parent=f"cumulo-cl-m4-{uuid.uuid4().hex[:6]}", log=tmp_path / "log",
                wrapper=m1.wrapper)
    m4.extra = [*m4.extra, "--listen", "10.78.0.1:8444", "--heartbeat", "0.5"]
    m4.env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "CUMULO_SOCKET": str(m4.socket)}
    m4.start()
    try:
        pid = m4.proc.pid if m4.proc else 0
        token = m1.cli("cluster", "add", "m4").stdout.strip()
        r = m4.cli("cluster", "join", token, "--timeout", "180", timeout=240)
        assert "Joined the cluster as member m4" in r.stderr, r.stderr
        assert m4.proc is not None and m4.proc.pid == pid and m4.proc.poll() is None
        assert members(m2)["m4"]["state"] == "online"
        assert sorted(members(m4)) == [*NAMES, "m4"]
        one_line_error(m4.cli("cluster", "join", token, check=False), "already member 'm4'")
        m4.cli("image", "import", str(m1.state_dir.parent.parent / "busybox.tar.gz"),
               "--alias", "busybox")
        m1.cli("launch", "busybox", "x4", "--target", "m4", "--", "sleep", "1000")

        for args, words in [
            (("m4",), "member 'm4' still has the following instances: x4: evacuate it"),
            (("m1",), "member 'm1' is the one answering"),
            (("nowhere",), "member 'nowhere' not found"),
        ]:
            one_line_error(m1.cli("cluster", "remove", *args, check=False), words)
        m2.cli("delete", "x4", "--force")
        assert "Member m4 removed" in m1.cli("cluster", "remove", "m4").stderr
        assert "m4" not in members(m2)
        poll("m4 left", lambda: not (m4.state_dir / "cluster.json").exists())
        one_line_error(m1.cli("cluster", "remove", "m4", check=False), "not found")
        m4.stop()
        m4.start()   # a single host again, on its own store
        assert "in no cluster" in m4.cli("cluster", "info").stderr
        assert listed(m4) == {}
    finally:
        m1.cli("cluster", "remove", "m4", "--force", check=False)
        m4.stop()
        for cg in Path("/sys/fs/cgroup").glob(f"*/{m4.cgroup_parent}"):
            cg.rmdir()
    assert not leftovers(m4.cgroup_parent)
