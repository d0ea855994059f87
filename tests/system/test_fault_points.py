"""cumulod killed at each named fault point (``cumulo.faults``), then restarted: every
instance is in a true state and nothing is left on the host that the store does not know.

One daemon for the module, in its own network namespace, on a network of its own;
each test arms one point (``CUMULO_FAULT``), runs the operation that reaches it (the
daemon exits 137 there, as if SIGKILLed), restarts the daemon unarmed and compares the
store with the host: cgroups, mounts, runtime and instance files, conmon and dnsmasq
processes, network namespaces, links (bridges, veth, taps), qdiscs, the nftables table
with its rules and sets, QEMU and swtpm processes, loop devices (``bench.host_objects``).
Busybox containers: the cheapest real instances. The migration points are in
test_migration_faults.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from bench.host_objects import host_objects as bench_host_objects
from bench.host_objects import procs

from cumulo import faults
from tests.helpers import checkpoint_skip_reason
from tests.system.conftest import Daemon, can_connect, leftovers

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime]


def sh(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True,
                          timeout=30).stdout


@pytest.fixture(scope="module")
def fd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    top = tmp_path_factory.mktemp("faults")
    ns = f"cu-t-f{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    d = Daemon(state_dir=top / "state", socket=top / "cumulo.sock",
               cgroup_parent=f"cumulo-faults-{uuid.uuid4().hex[:8]}", log=top / "cumulod.log",
               wrapper=["nsenter", f"--net=/run/netns/{ns}"])
    d.env = {**os.environ, "CUMULO_SOCKET": str(d.socket)}
    d.env.pop("CUMULO_URL", None)
    try:
        start(d)
        d.cli("image", "build", "busybox")
        d.cli("network", "create", "fnet", "--subnet", "10.123.0.0/24")
        yield d
        clear(d)
        d.cli("network", "delete", "fnet")
        assert_true_state(d)
    finally:
        d.stop()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        for cg in Path("/sys/fs/cgroup").glob(f"*/{d.cgroup_parent}"):
            cg.rmdir()
    assert not leftovers(d.cgroup_parent)


def ns_of(d: Daemon) -> str:
    return d.wrapper[-1].rsplit("/", 1)[-1]


def clear(d: Daemon) -> None:
    """Everything but the network fnet goes (instances, volumes, other networks)."""
    with d.client() as c:
        for inst in c.instances():
            c.delete(inst["name"], force=True)
    for v in json.loads(d.cli("volume", "list", "--format", "json").stdout):
        d.cli("volume", "delete", v["name"])
    for n in json.loads(d.cli("network", "list", "--format", "json").stdout):
        if n["name"] != "fnet":
            d.cli("network", "delete", n["name"])


def start(d: Daemon, timeout: float = 180) -> None:
    """``d.start()`` with a bound for a loaded machine (reconciliation runs first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            d.start()
            return
        except RuntimeError as err:
            if "did not answer" not in str(err) or time.monotonic() > deadline:
                raise
        # still starting: wait for this one rather than start another
        while time.monotonic() < deadline and d.proc is not None and d.proc.poll() is None:
            if can_connect(d.socket):
                try:
                    with d.client() as c:
                        c.server()
                    return
                except Exception:
                    pass
            time.sleep(0.2)
        assert time.monotonic() < deadline, "cumulod did not answer"


def restart(d: Daemon, monkeypatch: pytest.MonkeyPatch, fault: str | None
            ) -> tuple[int, str]:
    """SIGKILL (what the points stand for, and quick on a loaded machine), then start;
    returns what the start's reconciliation logged (``reconciled``)."""
    d.stop(signal.SIGKILL)
    if fault:
        monkeypatch.setenv(faults.ENV, fault)
    else:
        monkeypatch.delenv(faults.ENV, raising=False)
    logged = d.log.stat().st_size
    start(d)
    return reconciled(d, logged)


def reconciled(d: Daemon, offset: int, timeout: float = 120) -> tuple[int, str]:
    """The start's reconciliation line (one pass, one line: ``N instance(s) ...: what it
    fixed``), waited for within a bound; N is every instance the store holds (a half-made
    one included)."""
    found: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while not (found := re.findall(r"reconciled (\d+) instance\(s\) with the host: (.*)",
                                   d.log.read_bytes()[offset:].decode(errors="replace"))):
        assert time.monotonic() < deadline, f"no reconciliation logged in {timeout:.0f}s"
        time.sleep(0.2)
    return int(found[-1][0]), found[-1][1]   # (a start retried on a loaded host: the last)


def procs_in(d: Daemon, name: str) -> list[psutil.Process]:
    return procs(name, d.state_dir, d.cgroup_parent)


def host_objects(d: Daemon) -> dict[str, set[str]]:
    """What the host holds for this daemon, by kind (``bench.host_objects.KINDS``)."""
    return bench_host_objects(d.state_dir, d.cgroup_parent, ns_of(d))


def every_network(d: Daemon) -> list[dict[str, Any]]:
    with d.client() as c:
        return [n for p in c.projects() for n in c.networks(p["name"])]


def assert_true_state(d: Daemon) -> dict[str, dict[str, Any]]:
    """The store's view (through the CLI) matches the host; returns the instances by name."""
    insts = {i["name"]: i for i in json.loads(d.cli("list", "--format", "json").stdout)}
    nets = every_network(d)
    host = host_objects(d)
    ids = {f"default_{n}" for n in insts}
    running = {f"default_{n}" for n, i in insts.items() if i["state"] in ("running", "paused")}
    problems = []
    if not host["instance dirs"] <= ids:
        problems.append(f"instance dirs unknown to the store: {host['instance dirs'] - ids}")
    if not host["container records"] <= ids:
        problems.append(f"driver records unknown: {host['container records'] - ids}")
    if not host["cgroups"] <= running:
        problems.append(f"cgroups of no running instance: {host['cgroups'] - running}")
    stray = {m for m in host["mounts"] if not any(f"/{i}/" in m + "/" for i in ids)}
    if stray:
        problems.append(f"mounts of no instance: {stray}")
    vms = {f"default_{n}" for n, i in insts.items() if i["type"] == "vm"}
    if len(host["conmon"]) != len(running - vms):
        problems.append(f"{len(host['conmon'])} conmon for {len(running - vms)} running")
    if len(host["dnsmasq"]) != len(nets):
        problems.append(f"{len(host['dnsmasq'])} dnsmasq for {len(nets)} networks")
    if host["bridges"] != {n["bridge"] for n in nets if "bridge" in n} and \
            len(host["bridges"]) != len(nets):
        problems.append(f"bridges {host['bridges']} for networks {[n['name'] for n in nets]}")
    # every instance here has one NIC: a veth for a running container, a tap for a VM
    if len(host["veth"]) != len(running - vms):
        problems.append(f"veth {host['veth']} for {len(running - vms)} running containers")
    for kind in ("qemu", "swtpm", "tap"):   # the VMs here have a vTPM and a NIC each
        if len(host[kind]) != len(running & vms):
            problems.append(f"{kind} {host[kind]} for {len(running & vms)} running VMs")
    for kind in ("nft tables", "nft rules"):   # the daemon's table is there while a
        if bool(host[kind]) != bool(nets):      # network is, and only then
            problems.append(f"{kind} {sorted(host[kind])[:5]} for {len(nets)} networks")
    if not nets and (host["nft sets"] or host["nft elements"]):
        problems.append(f"nft sets {host['nft sets']} for no network")
    # one netns each for the running containers, none for a stopped or deleted one
    if len(host["netns"]) != len(running - vms):
        problems.append(f"netns {host['netns']} for {len(running - vms)} running")
    for kind in ("loop", "qdiscs"):
        if host[kind]:
            problems.append(f"{kind} left: {host[kind]}")
    # a network whose subnet another project has too: a namespace and two legs each
    apart = [n for n in nets if n.get("own_netns")]
    if len(host["network netns"]) != len(apart) or len(host["legs"]) != 2 * len(apart):
        problems.append(f"namespaces {host['network netns']}, legs {host['legs']} for"
                        f" networks {[n['name'] for n in apart]} with their own")
    for name, inst in insts.items():   # what the store says runs, runs
        if inst["state"] == "running":
            r = d.cli("exec", name, "--", "true", check=False, timeout=60)
            if r.returncode != 0:
                problems.append(f"{name} is listed running but exec fails: {r.stderr}")
    assert not problems, "\n".join(problems) + "\n" + d.log.read_text()[-3000:]
    return insts


# point -> (what to make before arming, the command that reaches the point, the state the
# victim must be in after the restart: None = gone)
LAUNCH = ("launch", "busybox", "v", "--network", "fnet", "--", "sleep", "3600")
VM_LAUNCH = ("launch", "busybox", "v", "--type", "vm", "--tpm", "--network", "fnet", "--",
             "sleep", "3600")
VM_POINTS = {"vm.start.after_swtpm", "vm.start.after_qemu"}
CASES: dict[str, tuple[list[tuple[str, ...]], tuple[str, ...], str | None]] = {
    "create.after_record": ([], LAUNCH, None),
    "create.after_rootfs": ([], LAUNCH, None),
    "create.after_driver": ([], LAUNCH, None),
    "start.after_conmon": ([LAUNCH, ("stop", "v", "--force")], ("start", "v"), "stopped"),
    "start.after_driver": ([LAUNCH, ("stop", "v", "--force")], ("start", "v"), "running"),
    "stop.after_driver": ([LAUNCH], ("stop", "v", "--force"), "stopped"),
    "delete.after_driver": ([LAUNCH], ("delete", "v", "--force"), "error"),
    "snapshot.after_create": ([LAUNCH, ("stop", "v", "--force")],
                              ("snapshot", "create", "v", "s1"), "stopped"),
    "checkpoint.after_save": ([LAUNCH], ("checkpoint", "v"), "stopped"),
    "restore.after_driver": ([LAUNCH, ("checkpoint", "v")], ("restore", "v"), "running"),
    "volume.attach.before_record": ([LAUNCH, ("volume", "create", "vol", "--size", "16MiB")],
                                    ("volume", "attach", "vol", "v", "/data"),
                                    "running"),
    # a VM with a vTPM and a NIC: its swtpm and tap are made before QEMU starts
    "vm.start.after_swtpm": ([VM_LAUNCH, ("stop", "v", "--force")], ("start", "v"), "stopped"),
    "vm.start.after_qemu": ([VM_LAUNCH, ("stop", "v", "--force")], ("start", "v"), "running"),
    "network.create.after_bridge": ([], ("network", "create", "n2"), None),
    "network.delete.after_record": ([("network", "create", "n2")], ("network", "delete", "n2"),
                                    None),
}
CRIU_POINTS = {"checkpoint.after_save", "restore.after_driver"}


def test_every_point_is_placed_and_tested() -> None:
    src = Path(faults.__file__).parent
    placed = set(re.findall(r'faults\.point\("([^"]+)"\)',
                            "".join(p.read_text() for p in src.rglob("*.py"))))
    assert placed == set(faults.POINTS)
    migration = {p for p in faults.POINTS if p.startswith("migrate.")}
    assert set(CASES) == set(faults.POINTS) - migration


@pytest.mark.parametrize("point", sorted(CASES))
def test_killed_at(point: str, fd: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    if point in CRIU_POINTS and (reason := checkpoint_skip_reason()) is not None:
        pytest.skip(reason)
    if point in VM_POINTS and not Path("/dev/net/tun").exists():
        pytest.skip("no /dev/net/tun for a VM's tap")
    before, command, want = CASES[point]
    for args in before:
        fd.cli(*args, timeout=180)
    restart(fd, monkeypatch, point)
    r = fd.cli(*command, check=False, timeout=180)
    assert fd.proc is not None and fd.proc.wait(60) == faults.EXIT_CODE, (r, point)
    assert r.returncode != 0
    seen, fixed = restart(fd, monkeypatch, None)
    try:
        # the restart's reconciliation saw the one instance the store held, and said what
        # it fixed: a half-made instance removed, a state put right (or nothing)
        assert seen == (0 if point.startswith("network.") else 1), (seen, fixed)
        if want is None and not point.startswith("network."):
            assert "v: half-created, removed" in fixed, fixed
        elif point in ("stop.after_driver", "checkpoint.after_save"):
            assert "v: running -> stopped" in fixed, fixed
        insts = assert_true_state(fd)
        nets = {n["name"] for n in json.loads(fd.cli("network", "list", "--format",
                                                     "json").stdout)}
        if point.startswith("network.create"):
            assert "n2" in nets   # recorded first, so finished by the restart
        elif point.startswith("network."):
            assert "n2" not in nets
        elif want is None:
            assert "v" not in insts, insts
            assert "removing half-created instance default_v" in fd.log.read_text()
        else:
            assert insts["v"]["state"] == want, insts["v"]
            if want == "stopped":   # and it starts again
                fd.cli("start", "v", timeout=120)
                assert_true_state(fd)
    finally:
        clear(fd)
    assert_true_state(fd)


@pytest.mark.parametrize("point", ["network.create.after_bridge",
                                   "network.delete.after_record"])
def test_killed_at_with_a_namespace_of_its_own(point: str, fd: Daemon,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A network whose subnet is another project's (its gateway in a namespace of its
    own): killed while it is made or deleted, the restart leaves its namespace, legs,
    dnsmasq and table exactly as the store says; its delete then leaves none."""
    with fd.client() as c:
        if "o" not in {p["name"] for p in c.projects()}:
            fd.cli("project", "create", "o")
    make = ("--project", "o", "network", "create", "n3", "--subnet", "10.123.0.0/24",
            "--nat")
    if point == "network.delete.after_record":
        fd.cli(*make)
    restart(fd, monkeypatch, point)
    r = fd.cli(*(make if point.startswith("network.create") else
                 ("--project", "o", "network", "delete", "n3")), check=False, timeout=180)
    assert fd.proc is not None and fd.proc.wait(60) == faults.EXIT_CODE, (r, point)
    restart(fd, monkeypatch, None)
    try:
        assert_true_state(fd)
        there = {n["name"] for n in json.loads(fd.cli("--project", "o", "network", "list",
                                                      "--format", "json").stdout)}
        assert there == ({"n3"} if point.startswith("network.create") else set())
    finally:
        fd.cli("--project", "o", "network", "delete", "n3", check=False)
    assert_true_state(fd)
    assert not host_objects(fd)["netns"]


# --- children that die on their own (services/watchdog.py) ---------------------------
def wait_for(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f}s"
        time.sleep(0.5)
    return found


def wait_true_state(d: Daemon, timeout: float = 60) -> None:
    """``assert_true_state`` once the watchdog's next round has cleared up (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert_true_state(d)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def info(d: Daemon, name: str) -> dict[str, Any]:
    return json.loads(d.cli("info", name, "--format", "json").stdout)  # type: ignore[no-any-return]


@contextmanager
def lifecycle_events(d: Daemon) -> Iterator[list[dict[str, Any]]]:
    """The daemon's lifecycle events while the block runs, as they come (a thread reads)."""
    got: list[dict[str, Any]] = []
    with d.client() as c:
        ws = c.events(["lifecycle"])

        def read() -> None:
            try:
                for msg in ws:
                    got.append(json.loads(msg)["metadata"])
            except Exception:   # the socket closed under it: the block is over
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            yield got
        finally:
            ws.close_socket()
            reader.join(10)


def event(events: list[dict[str, Any]], action: str, name: str) -> dict[str, Any]:
    """The first ``action`` event about ``name``, waited for (bounded)."""
    return wait_for(f"{action} event for {name}", lambda: next(  # type: ignore[no-any-return]
        (e for e in events if e["action"] == action and e["name"] == name), None))


def child_of(d: Daemon, name: str, host_id: str) -> psutil.Process:
    [p] = [p for p in procs_in(d, name) if host_id in " ".join(p.cmdline())]
    return p


def test_dead_children_are_noticed_and_cleared(fd: Daemon) -> None:
    with lifecycle_events(fd) as events:
        dead_children(fd, events)


def dead_children(fd: Daemon, events: list[dict[str, Any]]) -> None:
    # conmon killed: the container can no longer be supervised: stopped, and said why
    fd.cli(*LAUNCH, timeout=180)
    child_of(fd, "conmon", "default_v").kill()
    i = wait_for("stop after conmon died", lambda: (i := info(fd, "v"))["state"] == "stopped"
                 and i)
    assert "its conmon died" in i["last_error"], i
    died = event(events, "instance-died", "v")
    assert died["context"]["reason"] == i["last_error"], died
    wait_true_state(fd)
    fd.cli("start", "v", timeout=120)   # and it starts again
    wait_true_state(fd)

    # PID 1 killed: stopped with its exit status, what it left cleared
    [pid1] = [c for c in child_of(fd, "conmon", "default_v").children(recursive=True)
              if c.name() == "sleep"]
    pid1.kill()
    i = wait_for("stop after PID 1 died", lambda: (i := info(fd, "v"))["state"] == "stopped"
                 and i)
    assert i["exit_code"] == 137, i
    event(events, "instance-stopped", "v")   # an exit with a status is no death
    assert [e for e in events if e["action"] == "instance-died"] == [died], events
    wait_true_state(fd)

    # the network's dnsmasq killed: started again
    [old] = procs_in(fd, "dnsmasq")
    old.kill()
    wait_for("new dnsmasq", lambda: [p for p in procs_in(fd, "dnsmasq") if p.pid != old.pid])
    assert "the dnsmasq of network fnet had died: started again" in fd.log.read_text()
    event(events, "network-dns-restarted", "fnet")
    wait_true_state(fd)
    clear(fd)


@pytest.mark.qemu
def test_dead_qemu_and_swtpm_are_noticed_and_cleared(fd: Daemon) -> None:
    fd.cli("launch", "busybox", "vm", "--type", "vm", "--tpm", "--", "sleep", "3600",
           timeout=300)
    try:
        with lifecycle_events(fd) as events:
            dead_qemu_and_swtpm(fd, events)
    finally:
        clear(fd)
    assert_true_state(fd)


def dead_qemu_and_swtpm(fd: Daemon, events: list[dict[str, Any]]) -> None:
    # swtpm killed: the VM has lost its TPM: stopped, and said why
    child_of(fd, "swtpm", "default_vm").kill()
    i = wait_for("stop after swtpm died",
                 lambda: (i := info(fd, "vm"))["state"] == "stopped" and i)
    assert "its swtpm died" in i["last_error"], i
    assert event(events, "instance-died", "vm")["context"]["reason"] == i["last_error"]
    assert not procs_in(fd, "qemu-system-x86_64") and not procs_in(fd, "swtpm")

    # QEMU killed: stopped with no exit status, its swtpm and cgroup gone
    fd.cli("start", "vm", timeout=300)
    child_of(fd, "qemu-system-x86_64", "default_vm").kill()
    i = wait_for("stop after QEMU died",
                 lambda: (i := info(fd, "vm"))["state"] == "stopped" and i)
    assert "no exit status" in i["last_error"], i
    died = wait_for("a second instance-died event", lambda: [
        e for e in events if e["action"] == "instance-died" and e["name"] == "vm"][1:])
    assert died[0]["context"]["reason"] == i["last_error"], died
    wait_for("swtpm gone", lambda: not procs_in(fd, "swtpm"))
    wait_for("VM cgroup gone", lambda: not [
        p for p in Path("/sys/fs/cgroup/pids").glob(f"{fd.cgroup_parent}/*") if p.is_dir()])
    assert "instance vm died" in fd.log.read_text()
