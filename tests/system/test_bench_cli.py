"""`cumulo bench` against a real daemon: a quick native + container run, its report,
an interrupted run, and bad arguments refused before anything is launched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cumulo.lab import report, schema, stats
from tests.system.conftest import BIN, Daemon, leftovers

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime]


def nothing_left(daemon: Daemon) -> None:
    assert json.loads(daemon.cli("list", "--format", "json").stdout) == []
    assert json.loads(daemon.cli("image", "list", "--format", "json").stdout) == []


@pytest.mark.slow
def test_quick_run_native_and_container_then_report(daemon: Daemon, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    r = daemon.cli("bench", "run", "--quick", "--repeat", "2", "--platforms",
                   "native,container", "--suites", "cpu,memory,footprint", "--output", str(out),
                   timeout=110)   # the CI budget: well under two minutes
    assert "container: ready in" in r.stderr and "wrote" in r.stderr, r.stderr
    nothing_left(daemon)   # its instance and the image it built are gone

    res = schema.load(out)
    assert res.environment.host["cpus"] >= 1 and res.environment.accel in ("kvm", "tcg")
    assert res.environment.tools["sysbench"].startswith("1.")
    for platform in ("native", "container"):
        for suite, metric, x in [("cpu", "sysbench_cpu", None), ("cpu", "hpl", 800),
                                 ("memory", "sysbench_memory_write", None)]:
            s = res.find(platform, suite, metric, x)
            assert s is not None and len(s.samples) == 2 and min(s.samples) > 0, (platform, s)
        triad = [s for s in res.series if s.platform == platform and s.metric == "stream_triad"]
        assert len(triad) == 1 and len(triad[0].samples) == 2 and triad[0].x
    pss = res.find("container", "footprint", "pss")
    assert pss is not None and all(2**20 // 4 < v < 256 * 2**20 for v in pss.samples)
    assert res.find("native", "footprint", "pss") is None

    html = tmp_path / "report.html"
    md = tmp_path / "report.md"
    r = daemon.cli("bench", "report", str(out), "--html", str(html), "--markdown", str(md))
    for name in ("hpl", "stream", "cpu-ratio", "memory-ratio", "footprint"):
        png = tmp_path / f"report-{name}.png"
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG", name
        assert f'src="report-{name}.png"' in html.read_text()
        assert f"(report-{name}.png)" in md.read_text()
    # the printed ratio is the one computed from the raw samples
    native = res.find("native", "cpu", "sysbench_cpu")
    cont = res.find("container", "cpu", "sysbench_cpu")
    assert native and cont
    expected = stats.ratio(cont.samples, native.samples)
    assert report.ratio_text(expected) in r.stdout
    assert "closest to native" in r.stdout and "Against the published findings" in r.stdout

    r = daemon.cli("bench", "compare", str(out), str(out))
    assert "sysbench_cpu" in r.stdout and "1.000" in r.stdout


@pytest.mark.slow
def test_interrupted_run_leaves_no_instance(daemon: Daemon, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    in_tmp = set(Path("/tmp").iterdir())   # the native side's temp files go with it
    # far more repetitions than the test waits for: the run cannot end before the Ctrl-C
    with subprocess.Popen(
            [str(BIN / "cumulo"), "bench", "run", "--quick", "--repeat", "1000", "--platforms",
             "native,container", "--suites", "cpu", "--output", str(out)],
            env=daemon.env, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(proc.stderr or ()), daemon=True)
        reader.start()
        # half-way: native runs its second repetition while the container waits paused
        deadline = time.monotonic() + 180
        with daemon.client() as c:
            while not (any("native [2/1000] sysbench cpu" in line for line in seen)
                       and [i["state"] for i in c.instances()] == ["paused"]):
                assert time.monotonic() < deadline and proc.poll() is None, seen
                time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130, seen
        reader.join(30)
    assert "interrupted: cleaning up" in "".join(seen), seen
    nothing_left(daemon)
    assert not out.exists()
    assert [p for p in set(Path("/tmp").iterdir()) - in_tmp   # (hpcc's was left once)
            if p.name.startswith("cumulo-lab-native-") or (p / "hpccinf.txt").exists()] == []


@pytest.mark.parametrize(("args", "message"), [
    (["--platforms", "native,lxc"], "unknown platform 'lxc': choose from native, container"),
    (["--suites", "cpu,gpu"], "unknown suite 'gpu'"),
    (["--suites", " , "], "no suites given"),
    (["--repeat", "0"], "--repeat must be at least 1"),
    (["--output", "/proc/cumulo-nope/r.json"], "cannot write the output"),
    (["--output", "/nonexistent-dir/r.json"], "cannot write the output"),
])
def test_bad_arguments_fail_before_launching(module_daemon: Daemon, tmp_path: Path,
                                             args: list[str], message: str) -> None:
    daemon = module_daemon   # one daemon for all the cases: none may leave anything
    argv = ["bench", "run", "--platforms", "container", "--quick", "--output",
            str(tmp_path / "r.json")]
    r = daemon.cli(*argv, *args, check=False)
    assert r.returncode == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], r.stderr
    nothing_left(daemon)
    assert not (tmp_path / "r.json").exists()


def test_report_of_a_bad_file_is_one_line(module_daemon: Daemon, tmp_path: Path) -> None:
    daemon = module_daemon
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "cumulo-bench", "version": 7}')
    r = daemon.cli("bench", "report", str(bad), check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and "version 7" in r.stderr
    r = daemon.cli("bench", "report", str(tmp_path / "missing.json"), check=False)
    assert r.returncode == 1 and "cannot read" in r.stderr


@pytest.mark.qemu
@pytest.mark.slow
def test_vm_boot(daemon: Daemon, tmp_path: Path) -> None:
    """One VM boot: launch-to-ready and idle footprint of a VM beside a container, and a
    report that says when the VM figures are emulation figures."""
    out = tmp_path / "vm.json"
    daemon.cli("bench", "run", "--repeat", "1", "--platforms", "container,vm", "--suites",
               "boot,footprint", "--output", str(out), timeout=240)
    nothing_left(daemon)
    res = schema.load(out)
    pss = {p: res.find(p, "footprint", "pss") for p in ("container", "vm")}
    boot = {p: res.find(p, "boot", "launch_to_ready") for p in ("container", "vm")}
    assert all(s is not None and len(s.samples) == 1
               for s in [*pss.values(), *boot.values()]), (res.notes, pss, boot)
    assert pss["vm"].samples[0] > 10 * pss["container"].samples[0]  # type: ignore[union-attr]
    assert boot["vm"].samples[0] > boot["container"].samples[0]  # type: ignore[union-attr]
    text = daemon.cli("bench", "report", str(out)).stdout
    assert "Containers have a smaller footprint than VMs: AGREES" in text
    if res.environment.accel == "tcg":
        assert "vm (TCG emulation, no usable KVM)" in text


@pytest.mark.qemu
@pytest.mark.slow
# the first run on a machine builds kernel/app (or waits for test_appvm_kernel.py's build
# in another worker, under the cache's lock): tens of minutes on a busy 2-core host
@pytest.mark.timeout(3600)
def test_app_vm_on_the_kernel_built_for_it_is_footprint_only(module_daemon: Daemon,
                                                             tmp_path: Path) -> None:
    """A real app VM (busybox-static as PID 1 on kernel/app, a cache hit once built on
    the machine): boot to its first line and footprint measured, the cpu suite skipped
    with a note, and its kernel and app images gone with it."""
    daemon = module_daemon   # (nothing is left on it at the end)
    out = tmp_path / "app.json"
    r = daemon.cli("bench", "run", "--repeat", "1", "--platforms", "appvm-app", "--suites",
                   "cpu,boot,footprint", "--output", str(out), timeout=3500)
    assert "appvm-app: cpu skipped" in r.stderr, r.stderr
    nothing_left(daemon)
    res = schema.load(out)
    assert [n.suite for n in res.notes] == ["cpu"], res.notes
    pss, first, ready = (res.find("appvm-app", suite, metric) for suite, metric in (
        ("footprint", "pss"), ("boot", "qemu_to_first_line"), ("boot", "launch_to_ready")))
    assert pss and 8 * 2**20 < pss.samples[0] < 64 * 2**20 + 2**27, pss
    assert first and ready and 0 < first.samples[0] < ready.samples[0], (first, ready)
    image = res.find("appvm-app", "footprint", "image_bytes")
    assert image and 2**19 < image.samples[0] < 8 * 2**20, image   # bzImage + initramfs
    assert res.find("appvm-app", "cpu", "sysbench_cpu") is None


@pytest.fixture
def netns_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon inside a network namespace made for the test: its bridge and the traffic
    between instances stay in there (native traffic uses the host's loopback only)."""
    tag = uuid.uuid4().hex[:8]
    ns = f"cu-tb-{tag}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    state = Path(tempfile.mkdtemp(prefix="cumulo-bench-"))
    os.chmod(state, 0o711)   # dnsmasq drops to its own user and must reach its files
    d = Daemon(state_dir=state / "state", socket=tmp_path / "cumulo.sock",
               cgroup_parent=f"cumulo-benchtest-{tag}", log=tmp_path / "cumulod.log",
               wrapper=["nsenter", f"--net=/run/netns/{ns}"])
    d.env = {**os.environ, "CUMULO_SOCKET": str(d.socket)}
    d.env.pop("CUMULO_URL", None)
    try:
        d.start()
        yield d
    finally:
        try:
            try:
                d.clear()
            finally:
                d.stop()
        finally:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
            shutil.rmtree(state, ignore_errors=True)
        assert not leftovers(d.cgroup_parent), leftovers(d.cgroup_parent)


def servers_in(daemon: Daemon) -> list[str]:
    """iperf3/qperf processes left in the daemon's network namespace."""
    assert daemon.proc is not None
    ns = os.stat(f"/proc/{daemon.proc.pid}/ns/net").st_ino
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            if cmd.endswith((b"iperf3", b"qperf")) and \
                    os.stat(f"/proc/{pid}/ns/net").st_ino == ns:
                out.append(f"{pid} {cmd.decode()}")
        except OSError:   # gone meanwhile
            continue
    return out


@pytest.mark.slow
def test_network_suite_native_loopback_and_container_pair(netns_daemon: Daemon,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "net.json"
    # one repetition: that --repeat gives as many samples is test_quick_run_...'s
    r = netns_daemon.cli("bench", "run", "--quick", "--repeat", "1", "--platforms",
                         "native,container", "--suites", "network", "--output", str(out),
                         timeout=150)
    assert "peer bench-" in r.stderr and "iperf3 TCP" in r.stderr, r.stderr
    nothing_left(netns_daemon)
    assert json.loads(netns_daemon.cli("network", "list", "--format", "json").stdout) == []
    assert "to host " in r.stderr, r.stderr   # the lab network's gateway
    assert not servers_in(netns_daemon), servers_in(netns_daemon)   # host side: all killed
    res = schema.load(out)
    assert not res.notes, res.notes
    for platform, suffix in (("native", ""), ("container", ""), ("container", "_to_host")):
        for metric in ("iperf3_tcp", "iperf3_udp"):
            s = res.find(platform, "network", metric + suffix)
            assert s is not None and s.unit == "Gbit/s" and s.higher_is_better, (metric, s)
            assert len(s.samples) == 1 and min(s.samples) > 0.01, s
        loss = res.find(platform, "network", "iperf3_udp_loss" + suffix)
        assert loss is not None and not loss.higher_is_better and loss.unit == "%", loss
        assert all(0 <= v < 100 for v in loss.samples), loss
        for test in ("tcp_lat", "udp_lat"):
            lat = res.find(platform, "network", test + suffix)
            assert lat is not None and not lat.higher_is_better
            assert all(0 < v < 100_000 for v in lat.samples), lat   # microseconds
    assert res.find("native", "network", "iperf3_tcp_to_host") is None
    text = netns_daemon.cli("bench", "report", str(out)).stdout
    assert "network: container is closest to native" in text


@pytest.mark.slow
def test_disk_suite_native_and_container(daemon: Daemon, tmp_path: Path) -> None:
    out = tmp_path / "disk.json"
    daemon.cli("bench", "run", "--quick", "--repeat", "1", "--platforms", "native,container",
               "--suites", "disk", "--output", str(out), timeout=110)
    nothing_left(daemon)
    res = schema.load(out)
    for platform in ("native", "container"):
        for metric, unit in [("rand_read_4k", "IOPS"), ("rand_write_4k", "IOPS"),
                             ("seq_read_1m", "MiB/s"), ("seq_write_1m", "MiB/s")]:
            s = res.find(platform, "disk", metric)
            assert s is not None and s.unit == unit and s.samples[0] > 1, (platform, metric)
    assert not list(Path("/var/tmp").glob("cumulo-bench-fio.*"))   # native files removed


@pytest.mark.slow
def test_density_is_measured_and_cleaned_up(daemon: Daemon, tmp_path: Path) -> None:
    out = tmp_path / "density.json"
    r = daemon.cli("bench", "run", "--quick", "--repeat", "2", "--platforms", "container",
                   "--suites", "density", "--output", str(out), timeout=110)
    assert "density: 5 idle" in r.stderr, r.stderr
    nothing_left(daemon)
    res = schema.load(out)
    totals = sorted((s for s in res.series if s.metric == "total_pss"), key=lambda s: s.x or 0)
    assert [s.x for s in totals] == [1, 2, 3, 4, 5]
    assert all(a.samples[0] < b.samples[0] for a, b in zip(totals, totals[1:], strict=False))
    per_gib = res.find("container", "density", "idle_per_gib")
    assert per_gib is not None and len(per_gib.samples) == 2
    # the figure is the measured total, not one instance's PSS scaled
    assert per_gib.samples[0] == pytest.approx(5 * 2**30 / totals[-1].samples[0], rel=0.2)
    assert 50 < per_gib.samples[0] < 20_000
    assert any("stopped: count 5 reached" in n.message for n in res.notes)


@pytest.mark.qemu
@pytest.mark.slow
def test_vm_network_and_disk_quick(netns_daemon: Daemon, tmp_path: Path) -> None:
    """One VM on the lab's network: qperf/iperf3 against a container peer, fio on its
    ext4 root disk (the tools come with the image's root disk, no copy)."""
    out = tmp_path / "vm.json"
    r = netns_daemon.cli("bench", "run", "--quick", "--repeat", "1", "--platforms", "vm",
                         "--suites", "network,disk", "--output", str(out), timeout=400)
    assert "tools copied" not in r.stderr and "fio (O_DIRECT" in r.stderr, r.stderr
    nothing_left(netns_daemon)
    assert json.loads(netns_daemon.cli("network", "list", "--format", "json").stdout) == []
    res = schema.load(out)
    assert not res.notes, res.notes
    for suffix in ("", "_to_host"):   # to the container peer, to the network's gateway
        for metric in ("iperf3_tcp", "iperf3_udp"):
            s = res.find("vm", "network", metric + suffix)
            assert s is not None and s.samples[0] > 0.001, (metric, s)
        loss = res.find("vm", "network", "iperf3_udp_loss" + suffix)
        assert loss is not None and 0 <= loss.samples[0] < 100, loss
        for test in ("tcp_lat", "udp_lat"):
            lat = res.find("vm", "network", test + suffix)
            assert lat is not None and 0 < lat.samples[0] < 1_000_000
    assert not servers_in(netns_daemon), servers_in(netns_daemon)
    for metric, unit in [("rand_read_4k", "IOPS"), ("rand_write_4k", "IOPS"),
                         ("seq_read_1m", "MiB/s"), ("seq_write_1m", "MiB/s")]:
        s = res.find("vm", "disk", metric)
        assert s is not None and s.unit == unit and s.samples[0] > 1, (metric, s)


def test_lab_netns_script_keeps_the_network_in_its_namespace_and_leaves_nothing() -> None:
    """scripts/lab-netns.sh: the command reaches a daemon in a namespace made for it; a
    network that daemon creates is not on the host; at the end the namespace, the state
    dir and the daemon are gone, and the command's exit status is the script's."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "lab-netns.sh"
    env = {k: v for k, v in os.environ.items() if k not in ("CUMULO_SOCKET", "CUMULO_URL")}
    r = subprocess.run(
        [str(script), "sh", "-c", "cumulo network create labnet >/dev/null && "
         "cumulo network list --format json && ls /sys/class/net && exit 3"],
        capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 3, r
    assert '"labnet"' in r.stdout and "cumulod in network namespace cu-lab-" in r.stderr, r
    bridge = json.loads(r.stdout[:r.stdout.rindex("]") + 1])[0]["bridge"]
    assert bridge not in r.stdout.split("]")[-1].split(), r.stdout   # not on the host
    state = r.stderr.split("(state ")[1].split(")")[0]
    ns = r.stderr.split("network namespace ")[1].split()[0]
    assert not Path(state).exists()
    assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                    timeout=30).stdout
    # (other tests may run beside this one: the whole run checks the host's links at its end)
    assert not (Path("/sys/class/net") / bridge).exists()
