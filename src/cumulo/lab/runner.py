"""`cumulo bench run`: validate the plan, launch what it needs, run, collect, clean up.

Validation (platforms, suites, output path) happens before anything is launched. Every
instance the lab asks for is recorded before the request, and ``Lab.cleanup`` deletes
all of them (and the bench image if the lab built it): the CLI calls it in a ``finally``
with SIGINT ignored, so Ctrl-C or a failure leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import psutil

from cumulo.client import APIError, Client
from cumulo.errors import CumuloError, DriverError, InvalidInputError
from cumulo.lab import density, footprint, hostside, workloads
from cumulo.lab.hostside import HostSide
from cumulo.lab.platforms import (
    APP_KERNEL,
    BENCH_IMAGE,
    KINDS,
    AppVMPlatform,
    InstancePlatform,
    Platform,
    VMPlatform,
)
from cumulo.lab.schema import PLATFORMS, SUITES, Environment, Results, Settings

IMPLEMENTED_SUITES = ("cpu", "memory", "network", "disk", "boot", "footprint", "density")
WORKLOAD_SUITES = ("cpu", "memory", "network", "disk")   # they need an exec
BUSYBOX = Path("/bin/busybox")   # busybox-static: the app VMs' program
GIB = 1 << 30
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    platforms: list[str]
    suites: list[str]
    repeat: int
    quick: bool
    output: Path


def parse_list(text: str, known: tuple[str, ...], what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise InvalidInputError(f"no {what} given")
    for item in items:
        if item not in known:
            raise InvalidInputError(f"unknown {what[:-1]} {item!r}: choose from "
                                    f"{', '.join(known)}")
    return list(dict.fromkeys(items))


def check_output(path: Path) -> Path:
    """The results file must be creatable: try it in its directory, leave nothing."""
    path = path.expanduser()
    if path.is_dir():
        raise InvalidInputError(f"output {path} is a directory, give a file name")
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent or Path("."), prefix=".cumulo-bench-"):
            pass
    except OSError as err:
        raise InvalidInputError(f"cannot write the output {path}: {err.strerror}") from err
    return path


def make_plan(platforms: str, suites: str, repeat: int, quick: bool, output: Path) -> Plan:
    plats = parse_list(platforms, PLATFORMS, "platforms")
    suite_list = parse_list(suites, SUITES, "suites")
    todo = [s for s in suite_list if s not in IMPLEMENTED_SUITES]
    if todo:
        raise InvalidInputError(f"suite {todo[0]!r} is not implemented yet (implemented: "
                                f"{', '.join(IMPLEMENTED_SUITES)})")
    missing = hosttools_missing("network" in suite_list, "disk" in suite_list)
    if "native" in plats and missing:
        raise InvalidInputError(f"native runs need {' and '.join(missing)} on this host: "
                                f"apt-get install {' '.join(missing)}")
    if repeat < 1:
        raise InvalidInputError(f"--repeat must be at least 1, not {repeat}")
    return Plan(plats, suite_list, repeat, quick, check_output(output))


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def environment(client: Client) -> Environment:
    host = client.host_info()
    tools = {
        "cumulo": package_version("cumulo"),
        "sysbench": _tool_version(["sysbench", "--version"]).removeprefix("sysbench "),
        "fio": _tool_version(["fio", "--version"]).removeprefix("fio-"),
        "hpcc": _tool_version(["dpkg-query", "-W", "-f", "${Version}\n", "hpcc"]),
        "iperf3": _tool_version(["iperf3", "--version"]).removeprefix("iperf "),
        "qperf": _tool_version(["qperf", "--version"]).removeprefix("qperf "),
        "qemu": str(host.get("qemu")), "runc": str((host.get("oci_runtimes") or {}).get("runc")),
    }
    return Environment(host=host, tools=tools, accel="kvm" if host.get("kvm_usable") else "tcg")


class Lab:
    def __init__(self, client: Client, plan: Plan, progress: Progress) -> None:
        self.client, self.plan, self.progress = client, plan, progress
        self.tag = uuid.uuid4().hex[:6]
        self.launched: list[str] = []
        self.hosts: list[Platform] = []   # bare-host platforms made: their temp dirs
        self.built_image = False
        self.app_image: str | None = None      # the app VMs' app image (busybox-static)
        self.built_app = False                 # ... imported by the lab (deleted at the end)
        self.built_kernel = False              # the lab built kernel/app (deleted at the end)
        self.network: str | None = None        # the network the lab made for its instances
        self.peers: dict[str, InstancePlatform] = {}   # platform -> its network client
        self._host: tuple[HostSide, str] | None = None   # instance-to-host server side
        self.results = Results(
            created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            settings=Settings(platforms=plan.platforms, suites=plan.suites,
                              repeat=plan.repeat, quick=plan.quick))

    # the run
    def run(self) -> Results:
        """Launch each platform alone (boot time, idle footprint, tools), pause it; then
        run the workloads repetition by repetition, platform by platform, with every other
        instance paused, so slow drift of the host spreads over all platforms alike."""
        self.results.environment = environment(self.client)
        suites = set(self.plan.suites)
        workers = [p for p in self.plan.platforms if KINDS[p].type and KINDS[p].runs_workloads]
        if workers:
            self.ensure_image()
        if "network" in suites and workers:
            self.network = f"bench-{self.tag}"
            self.progress(f"creating network {self.network} (instance-to-instance traffic)")
            self.client.create_network(self.network)
        ready: list[Platform] = []
        for name in self.plan.platforms:
            p = self.platform(name)
            try:
                self.start_platform(p)
                self.set_paused(p, True)
                ready.append(p)
            except (CumuloError, OSError) as err:   # one broken platform: note it, go on
                self.failed(p, err)
        if suites & {"cpu", "memory", "network", "disk"}:
            for rep in range(self.plan.repeat):
                for p in [q for q in ready if q.kind.runs_workloads]:
                    try:
                        self.set_paused(p, False)
                        self.run_workloads(p, rep)
                        self.set_paused(p, True)
                    except (CumuloError, OSError) as err:
                        ready.remove(p)
                        self.failed(p, err)
        for p in ready:
            p.teardown()
        for peer in self.peers.values():
            peer.teardown()
        if "density" in suites:
            for p in ready:
                if isinstance(p, InstancePlatform):
                    try:
                        self.measure_density(p.name)
                    except (CumuloError, OSError) as err:
                        self.progress(f"{p.name}: density FAILED: {err}")
                        self.results.note(p.name, "density", f"failed: {err}")
        if "boot" in suites:
            for p in ready:
                if isinstance(p, InstancePlatform):
                    try:
                        self.boot_repeats(p.name)
                    except (CumuloError, OSError) as err:
                        self.progress(f"{p.name}: boot repetition FAILED: {err}")
                        self.results.note(p.name, "boot", f"failed: {err}")
        return self.results

    def failed(self, p: Platform, err: Exception) -> None:
        self.progress(f"{p.name}: FAILED: {err}")
        self.results.note(p.name, "*", f"failed: {err}")
        p.teardown()
        peer = self.peers.pop(p.name, None)
        if peer:
            peer.teardown()

    def set_paused(self, p: Platform, paused: bool) -> None:
        peer = self.peers.get(p.name)
        for q in (p, peer):
            if isinstance(q, InstancePlatform):
                self.client.set_state(q.instance, "pause" if paused else "resume")

    def ensure_image(self) -> None:
        try:
            self.client.image(BENCH_IMAGE)
            return
        except APIError as err:
            if err.status != 404:
                raise
        self.progress("building the bench image (busybox + sysbench, hpcc, iperf3, qperf, "
                      "fio from the host)")
        self.built_image = True
        self.client.build_image("bench", BENCH_IMAGE)

    def appvm_refs(self, name: str) -> tuple[str, str]:
        """The app image and the kernel (fingerprint or ``generic``) of an app VM
        platform: busybox-static imported as an app image, the kernel built for app VMs
        (a cache hit once built on this machine) unless the daemon has one already."""
        if self.app_image is None:
            if not BUSYBOX.is_file():
                raise DriverError(f"app VMs in the lab run {BUSYBOX}, which is missing: "
                                  "apt-get install busybox-static")
            before = {i["fingerprint"] for i in self.client.images()}
            fp = str(self.client.import_app("busybox", BUSYBOX.read_bytes())["fingerprint"])
            self.built_app, self.app_image = fp not in before, fp
        kernel = KINDS[name].options["kernel"]
        return self.app_image, self.app_kernel() if kernel == APP_KERNEL else kernel

    def app_kernel(self) -> str:
        try:
            return str(self.client.image(APP_KERNEL)["fingerprint"])
        except APIError as err:
            if err.status != 404:
                raise
        self.progress("building the kernel for app VMs (image build kernel --profile app: "
                      "seconds from its cache once built on this machine, minutes before)")
        t0 = time.perf_counter()
        self.built_kernel = True   # before the request: an interrupted build is cleaned up
        self.client.build_image("kernel", profile="app")
        self.progress(f"kernel for app VMs ready in {time.perf_counter() - t0:.1f}s")
        return str(self.client.image(APP_KERNEL)["fingerprint"])

    def instance_name(self, platform: str, n: int | str) -> str:
        """Short (a VM's QEMU sockets live under the daemon's state dir, and a unix
        socket path must stay under 108 bytes): bench-TAG-ct0, -vm1, -app0, -emu0."""
        short = {"container": "ct", "vm": "vm", "appvm": "app", "vm-emulated-io": "emu",
                 "appvm-app": "aa", "appvm-generic": "ag"}
        return f"bench-{self.tag}-{short.get(platform, platform)}{n}"

    def instance(self, name: str, n: int | str) -> InstancePlatform:
        """A new instance of platform ``name`` (not on any network)."""
        if KINDS[name].type == "appvm":
            return AppVMPlatform(name, self.client, self.instance_name(name, n),
                                 self.launched, lambda: self.appvm_refs(name))
        make = VMPlatform if KINDS[name].type == "vm" else InstancePlatform
        return make(name, self.client, self.instance_name(name, n), self.launched)

    def platform(self, name: str, n: int | str = 0) -> Platform:
        """The platform's instance (on the lab's network when the network suite runs)."""
        if KINDS[name].type is None:
            self.hosts.append(Platform(name))
            return self.hosts[-1]
        q = self.instance(name, n)
        if self.network and q.kind.runs_workloads:
            q.networks = [{"network": self.network, "ip": None}]
        return q

    def peer(self, name: str) -> InstancePlatform:
        """The client side of ``name``'s network runs: a container on the lab's network
        (for every platform alike, so only the server side differs)."""
        q = InstancePlatform("container", self.client, self.instance_name(name, "p"),
                             self.launched)
        q.networks = [{"network": str(self.network), "ip": None}]
        return q

    def start_platform(self, p: Platform) -> None:
        suites, r, name = set(self.plan.suites), self.results, p.name
        used_before = self._pool_used()
        self.progress(f"{name}: {'launching' if p.kind.type else 'on the host'}"
                      f"{' (' + p.kind.description + ')' if p.kind.description else ''}")
        p.setup()
        if isinstance(p, InstancePlatform):
            self.progress(f"{name}: ready in {p.launch_seconds:.2f}s" + (
                f" (QEMU start to the app's first line {p.first_line_seconds:.2f}s)"
                if isinstance(p, AppVMPlatform) else ""))
            if "boot" in suites:
                self.record_boot(p)
            if "footprint" in suites:
                self.measure_footprint(p, used_before)
        elif suites & {"footprint", "density", "boot"}:
            r.note(name, "footprint", "native has no instance: no footprint or boot time")
        if not p.kind.runs_workloads:
            for suite in (s for s in WORKLOAD_SUITES if s in suites):
                why = ("skipped: an app VM runs one program as PID 1 and has no exec to run "
                       "workloads in (boot, footprint and density only)")
                r.note(name, suite, why)
                self.progress(f"{name}: {suite} {why}")
            return
        if "network" in suites and isinstance(p, InstancePlatform):
            peer = self.peer(name)
            self.peers[name] = peer
            peer.setup()
            if isinstance(p, VMPlatform):
                p.wait_address()
            self.progress(f"{name}: peer {peer.instance} ready; server at {p.ip()}")
        if suites & {"cpu", "memory", "network", "disk"}:
            p.prepare()
            if isinstance(p, VMPlatform) and p.copied:
                self.progress(f"{name}: tools copied into the guest in {p.copy_seconds:.1f}s")

    def boot_repeats(self, name: str) -> None:
        """More launch-to-ready samples, each instance alone on the host."""
        for n in range(1, self.plan.repeat):
            q = self.instance(name, n)
            try:
                q.setup()
            finally:
                q.teardown()
            self.record_boot(q)
            self.progress(f"{name}: boot {n + 1}/{self.plan.repeat}: {q.launch_seconds:.2f}s")

    def record_boot(self, p: InstancePlatform) -> None:
        self.results.add(p.name, "boot", "launch_to_ready", "s", p.launch_seconds,
                         higher_is_better=False)
        if isinstance(p, AppVMPlatform) and p.first_line_seconds:
            self.results.add(p.name, "boot", "qemu_to_first_line", "s", p.first_line_seconds,
                             higher_is_better=False)

    def run_workloads(self, p: Platform, rep: int) -> None:
        suites, r, quick = set(self.plan.suites), self.results, self.plan.quick
        step = f"{p.name} [{rep + 1}/{self.plan.repeat}]"
        if "cpu" in suites:
            v = workloads.parse_sysbench_cpu(self._ok(p, workloads.sysbench_cpu(quick)))
            r.add(p.name, "cpu", "sysbench_cpu", "events/s", v)
            self.progress(f"{step} sysbench cpu: {v:.1f} events/s")
        if "memory" in suites:
            v = workloads.parse_sysbench_memory(self._ok(p, workloads.sysbench_memory(quick)))
            r.add(p.name, "memory", "sysbench_memory_write", "MiB/s", v)
            self.progress(f"{step} sysbench memory (64 MiB blocks, write): {v:.0f} MiB/s")
        if "network" in suites:
            self.run_network(p, step)
        if "disk" in suites:
            self.run_disk(p, step)
        if suites & {"cpu", "memory"}:
            sizes = workloads.HPL_SIZES[quick]
            h = workloads.parse_hpcc(self._ok(p, workloads.hpcc_script(),
                                              stdin=workloads.hpcc_input(sizes),
                                              env=workloads.HPCC_ENV))
            if "cpu" in suites:
                for n, gf in sorted(h.hpl_gflops.items()):
                    r.add(p.name, "cpu", "hpl", "GFLOPS", gf, x=n, x_label="N")
                self.progress(f"{step} hpcc HPL: " + ", ".join(
                    f"N={n} {gf:.2f}" for n, gf in sorted(h.hpl_gflops.items())) + " GFLOPS")
            if "memory" in suites:
                for kernel, gbs in h.stream_gbs.items():
                    r.add(p.name, "memory", f"stream_{kernel.lower()}", "GB/s", gbs,
                          x=h.stream_vector, x_label="doubles per array")
                self.progress(f"{step} hpcc STREAM: " + ", ".join(
                    f"{k} {v:.1f}" for k, v in h.stream_gbs.items()) + " GB/s")
                if h.stream_untimed:
                    why = (f"STREAM {', '.join(h.stream_untimed)} not timed in repetition "
                           f"{rep + 1} (hpcc printed " + ", ".join(
                               f"{v:g}" for v in h.stream_untimed.values())
                           + " GB/s: the clock stepped back during the kernel)")
                    r.note(p.name, "memory", why)
                    self.progress(f"{step} {why}")

    def run_disk(self, p: Platform, step: str) -> None:
        """fio on the instance's root disk: a container's /tmp (its root in the pool), a
        VM's /var/tmp (its ext4 root disk); the host's /var/tmp natively."""
        base = "/tmp" if type(p) is InstancePlatform else "/var/tmp"
        got = workloads.parse_fio(self._ok(p, workloads.fio(base, self.plan.quick)))
        for metric, (value, unit) in got.items():
            self.results.add(p.name, "disk", metric, unit, value)
        self.progress(f"{step} fio (O_DIRECT, psync): " + ", ".join(
            f"{m} {v:.0f} {u}" for m, (v, u) in got.items()))

    def run_network(self, p: Platform, step: str) -> None:
        """Server in ``p``, client in its peer instance (native: both on loopback); then,
        for an instance, client in it and server on the host side of the lab's network."""
        peer = self.peers.get(p.name)
        client: Platform = peer if peer else p
        if isinstance(p, InstancePlatform):   # its own netns: the tools' default ports
            ip, iport, qport = p.ip(), workloads.IPERF_PORT, workloads.QPERF_PORT
        else:   # the host's loopback, shared with whatever else runs here
            ip, iport, qport = "127.0.0.1", workloads.free_port(), workloads.free_port()
        got = self.net_pair(p, client, ip, iport, qport)
        self.record_network(p.name, got, "")
        self.progress(f"{step} {network_text(got)}")
        if isinstance(p, InstancePlatform):
            try:
                host, gateway = self.host_side()
                got = self.net_pair(host, p, gateway, workloads.free_port(),
                                    workloads.free_port())
            except (CumuloError, OSError) as err:   # the other figures stand
                self.results.note(p.name, "network", f"instance to host not measured: {err}")
                self.progress(f"{step} instance to host FAILED: {err}")
                return
            self.record_network(p.name, got, TO_HOST)
            self.progress(f"{step} to host {gateway}: {network_text(got)}")

    def host_side(self) -> tuple[HostSide, str]:
        """The daemon's network namespace and the gateway of the lab's network, checked
        to be on that network's bridge there (the only host address the lab sends to)."""
        if self._host is None:
            net = self.client.network(str(self.network))
            host = HostSide(hostside.daemon_pid(self.client))
            host.check_gateway(str(net["bridge"]), str(net["gateway"]))
            self._host = (host, str(net["gateway"]).split("/")[0])
        return self._host

    def net_pair(self, server: Platform, client: Platform, ip: str, iport: int,
                 qport: int) -> dict[str, float]:
        """iperf3 TCP, iperf3 UDP, qperf tcp_lat/udp_lat from ``client`` to a server in
        ``server`` listening on ``ip``; every server is killed before returning."""
        quick, got = self.plan.quick, {}
        bounded = not isinstance(server, InstancePlatform)   # the host has timeout(1)
        for udp in (False, True):
            pid = int(self._ok(server, workloads.iperf3_server(ip, iport)).split()[-1])
            try:
                out = self._ok(client, workloads.iperf3_client(ip, quick, iport, udp=udp))
            finally:
                server.run(workloads.stop_server(pid), timeout=30)
            if udp:
                got["iperf3_udp"], got["iperf3_udp_loss"] = workloads.parse_iperf3_udp(out)
            else:
                got["iperf3_tcp"] = workloads.parse_iperf3(out)
        pid = int(self._ok(server, workloads.qperf_server(qport, bounded)).split()[-1])
        try:
            got.update(workloads.parse_qperf(self._ok(client, workloads.qperf_client(
                ip, quick, qport))))
        finally:
            server.run(workloads.stop_server(pid), timeout=30)
        return got

    def record_network(self, platform: str, got: dict[str, float], suffix: str) -> None:
        for metric, value in got.items():
            unit, higher = NETWORK_UNITS.get(metric, ("us", False))
            self.results.add(platform, "network", metric + suffix, unit, value,
                             higher_is_better=higher)

    def measure_footprint(self, p: InstancePlatform, used_before: int | None) -> None:
        r = self.results
        image_bytes = self.image_bytes(p)
        used_after = self._pool_used()
        for i in range(self.plan.repeat):
            if i:
                time.sleep(0.2)
            pid = p.info().get("pid")
            if not pid:
                raise DriverError(f"{p.instance} has no pid: cannot measure its footprint")
            f = footprint.measure(int(pid))
            r.add(p.name, "footprint", "pss", "bytes", f.pss_bytes, higher_is_better=False)
            r.add(p.name, "footprint", "threads", "threads", f.threads, higher_is_better=False)
            r.add(p.name, "footprint", "processes", "processes", f.processes,
                  higher_is_better=False)
            r.add(p.name, "footprint", "listening_ports", "ports", f.listening_ports,
                  higher_is_better=False)
        if image_bytes is not None:
            r.add(p.name, "footprint", "image_bytes", "bytes", image_bytes,
                  higher_is_better=False)
        if used_before is not None and used_after is not None:
            r.add(p.name, "footprint", "instance_disk_bytes", "bytes",
                  max(0, used_after - used_before), higher_is_better=False)
        self.progress(f"{p.name}: idle footprint PSS {f.pss_bytes / 2**20:.1f} MiB, "
                      f"{f.threads} threads, {f.processes} processes, "
                      f"{f.listening_ports} listening ports")

    def image_bytes(self, p: InstancePlatform) -> int | None:
        """What the instance is made from: the bench image; for an app VM what it boots,
        its compressed kernel (bzImage; Debian's vmlinuz) and its initramfs."""
        if not isinstance(p, AppVMPlatform):
            return int(self.client.image(BENCH_IMAGE)["size"])
        initrd = (p.info().get("details") or {}).get("initramfs_bytes")
        try:
            if p.kernel == "generic":
                from cumulo.drivers.vm.initramfs import find_kernel

                path = find_kernel().vmlinuz
            else:
                from cumulo.images.kernel_build import CACHE

                key = self.client.image(p.kernel)["properties"]["config_key"]
                path = CACHE / key / "result" / "bzImage"
            return path.stat().st_size + int(initrd) if initrd else None
        except (OSError, KeyError, CumuloError) as err:
            self.results.note(p.name, "footprint", f"image size not measured: {err}")
            return None

    def measure_density(self, name: str) -> None:
        """Idle instances of ``name`` launched one by one until a bound (density.limits);
        total PSS after each launch; instances per GiB and the marginal cost at the end.
        All of them are deleted before returning (also on failure or Ctrl-C: they are in
        ``launched`` before they are asked for)."""
        r = self.results
        lim = density.limits(KINDS[name].type in ("vm", "appvm"), self.plan.quick,
                             psutil.virtual_memory().available)
        self.progress(f"{name}: density: launching idle instances (at most {lim.max_count}, "
                      f"{lim.budget_bytes / GIB:.2f} GiB of PSS, {lim.seconds:.0f}s)")
        insts: list[InstancePlatform] = []
        points: list[tuple[int, int]] = []
        t0, total = time.monotonic(), 0
        try:
            while (reason := density.stop_reason(
                    len(insts), total, time.monotonic() - t0,
                    psutil.virtual_memory().available, lim)) is None:
                q = self.instance(name, f"d{len(insts)}")
                insts.append(q)
                q.setup()
                total = self._total_pss(insts)
                points.append((len(insts), total))
                r.add(name, "density", "total_pss", "bytes", total, higher_is_better=False,
                      x=len(insts), x_label="instances")
                self.progress(f"{name}: density: {len(insts)} idle, total PSS "
                              f"{total / 2**20:.1f} MiB")
            if not insts:   # stopped before the first launch (host memory already low)
                raise DriverError(f"no instance launched: {reason}")
            for i in range(self.plan.repeat):   # the final measurement, repeated
                if i:
                    time.sleep(0.2)
                r.add(name, "density", "idle_per_gib", "instances/GiB",
                      density.per_gib(len(insts), self._total_pss(insts)))
            cost = density.marginal(points)
            r.add(name, "density", "marginal_pss", "bytes", cost, higher_is_better=False)
            r.note(name, "density", f"{len(insts)} idle instances measured; stopped: {reason}")
            self.progress(f"{name}: density: {len(insts)} idle instances, "
                          f"{density.per_gib(len(insts), total):.1f} per GiB measured, one "
                          f"more costs {cost / 2**20:.1f} MiB; stopped: {reason}")
        finally:
            for q in insts:
                q.teardown()

    def _total_pss(self, insts: list[InstancePlatform]) -> int:
        total = 0
        for q in insts:
            pid = q.info().get("pid")
            if not pid:
                raise DriverError(f"{q.instance} has no pid: cannot measure its memory")
            total += footprint.measure(int(pid)).pss_bytes
        return total

    def _pool_used(self) -> int | None:
        try:
            return int(self.client.pool("default")["used"])
        except (APIError, KeyError):
            return None

    def _ok(self, p: Platform, script: str, *, stdin: str = "",
            env: dict[str, str] | None = None) -> str:
        res = p.run(script, stdin=stdin, env=env, timeout=1800)
        if res.exit_code != 0:
            raise DriverError(f"{p.name}: `{script.split()[0]}` exited {res.exit_code}: "
                              f"{(res.stderr or res.stdout).strip()[-300:]}")
        return res.stdout

    # cleanup
    def cleanup(self) -> list[str]:
        """Delete every instance launched (and the images it built or imported); returns
        what failed."""
        from cumulo.lab.platforms import delete_instance

        failed = []
        for host in self.hosts:   # (an interrupted run skipped their teardown)
            host.teardown()
        for name in list(self.launched):
            try:
                delete_instance(self.client, name)
                self.launched.remove(name)
            except CumuloError as err:
                failed.append(f"{name}: {err}")
        if self.network:
            try:
                self.client.delete_network(self.network)
                self.network = None
            except CumuloError as err:
                if not _gone(err):   # its create never happened
                    failed.append(f"network {self.network}: {err}")
        for flag, ref in (("built_app", self.app_image), ("built_kernel", APP_KERNEL),
                          ("built_image", BENCH_IMAGE)):
            if getattr(self, flag) and ref:
                try:
                    self.client.delete_image(ref)
                    setattr(self, flag, False)
                except CumuloError as err:
                    if not _gone(err):   # interrupted before the build finished
                        failed.append(f"image {ref}: {err}")
        return failed


TO_HOST = "_to_host"   # metric suffix: client in the instance, server on the host side
NETWORK_UNITS = {"iperf3_tcp": ("Gbit/s", True), "iperf3_udp": ("Gbit/s", True),
                 "iperf3_udp_loss": ("%", False)}   # else a qperf latency, us


def network_text(got: dict[str, float]) -> str:
    return (f"iperf3 TCP {got['iperf3_tcp']:.2f} Gbit/s, UDP {got['iperf3_udp']:.2f} Gbit/s "
            f"received ({got['iperf3_udp_loss']:.1f}% lost); qperf " + ", ".join(
                f"{k} {v:.1f} us" for k, v in got.items() if k.endswith("_lat")))


def _gone(err: CumuloError) -> bool:
    return isinstance(err, APIError) and err.status == 404


def hosttools_missing(network: bool = False, disk: bool = False) -> list[str]:
    """The benchmark tools this host lacks (native runs use them directly)."""
    tools = ("sysbench", "hpcc", *(("iperf3", "qperf") if network else ()),
             *(("fio",) if disk else ()))
    return [t for t in tools if shutil.which(t) is None]
