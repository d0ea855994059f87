"""Where workloads run: on the bare host (native) or in an instance launched through the
public API (container, vm, appvm, vm-emulated-io); and real app VMs (appvm-app on the
kernel built for app VMs, appvm-generic on Debian's), which are measured but run no
workload: one static program is their PID 1 and there is no exec into them.

Every platform that runs workloads runs the same ``sh -c`` scripts (workloads.py). An
instance platform records the name of its instance *before* asking for it, so a cleanup
after Ctrl-C or a failure can delete an instance whose create was still in flight.

VM platforms run on whatever accelerator the host gives (on a host without usable KVM
that is TCG: their figures measure emulation, and the report says so).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cumulo.client import APIError, Client
from cumulo.errors import DriverError
from cumulo.host.procs import kill_group

# how long the daemon waits for a booting VM's guest agent before it answers an exec
# (drivers/vm/qga.py READY_TIMEOUT)
AGENT_WAIT = 90.0

BENCH_IMAGE = "bench"


@dataclass
class Exec:
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Kind:
    """How a platform's instance is made (None: native, no instance)."""
    type: str | None
    options: dict[str, str] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def runs_workloads(self) -> bool:
        """False for an app VM: no exec, so only boot, footprint and density."""
        return self.type != "appvm"


APP_KERNEL = "kernel/app"   # the alias `cumulo image build kernel --profile app` gives


KINDS: dict[str, Kind] = {
    "native": Kind(None, description="the bare host"),
    "container": Kind("container", description="runc container (namespaces + cgroups)"),
    "vm": Kind("vm", {"machine": "pc", "io": "paravirt"}, {"memory": "512MiB"},
               "QEMU VM, pc machine, virtio devices"),
    "appvm": Kind("vm", {"machine": "microvm", "io": "paravirt"}, {"memory": "256MiB"},
                  "minimal VM (QEMU microvm, no firmware or PCI, the bench image and its "
                  "guest agent; the real app VMs are appvm-app and appvm-generic)"),
    "vm-emulated-io": Kind("vm", {"machine": "pc", "io": "emulated"}, {"memory": "512MiB"},
                           "QEMU VM with emulated hardware (IDE disk, e1000 NIC)"),
    "appvm-app": Kind("appvm", {"kernel": APP_KERNEL}, description=(
        "app VM (--type appvm, microvm): busybox-static as PID 1 on the kernel built for "
        "app VMs (image build kernel --profile app), 64 MiB; no exec: boot, footprint, "
        "density only")),
    "appvm-generic": Kind("appvm", {"kernel": "generic"}, description=(
        "app VM (--type appvm, microvm): busybox-static as PID 1 on Debian's generic "
        "kernel, 128 MiB; no exec: boot, footprint, density only")),
}


class Platform:
    """The bare host: scripts run with /bin/sh in the lab's own process tree, each in a
    process group of its own (an interrupted or timed-out run ends all of it, not just
    the shell), with a temp dir of the platform's own as TMPDIR (what a killed script
    leaves there goes at teardown)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind = KINDS[name]
        self._tmp: str | None = None

    def setup(self) -> None:
        pass

    def prepare(self) -> None:
        """After setup (and after the idle footprint is taken): make the tools runnable."""

    def teardown(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def run(self, script: str, *, stdin: str = "", env: dict[str, str] | None = None,
            timeout: float = 600) -> Exec:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="cumulo-lab-native-")
        with subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd="/tmp", start_new_session=True,
                              env={**os.environ, **(env or {}), "TMPDIR": self._tmp}) as proc:
            try:
                out, err = proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                kill_group(proc, wait=5.0)
                raise DriverError(f"native: {script.split()[0]} ran over {timeout:.0f}s"
                                  ) from exc
            except BaseException:   # interrupted (Ctrl-C): the script's processes go too
                kill_group(proc, wait=5.0)
                raise
        return Exec(proc.returncode, out, err)


class InstancePlatform(Platform):
    """An instance of the bench image, launched and deleted through the public API."""

    def __init__(self, name: str, client: Client, instance: str,
                 launched: list[str]) -> None:
        super().__init__(name)
        self.client, self.instance, self.launched = client, instance, launched
        self.launch_seconds = 0.0
        self.networks: list[dict[str, Any]] = []   # NICs to create it with

    def ip(self) -> str:
        """The address of its first NIC."""
        nics = self.info().get("nics") or []
        if not nics or not nics[0].get("ip"):
            raise DriverError(f"{self.instance} has no NIC address")
        return str(nics[0]["ip"]).split("/")[0]

    def setup(self) -> None:
        assert self.kind.type is not None
        self.launched.append(self.instance)   # before the request: cleanup must know it
        t0 = time.perf_counter()
        self.client.create(self.instance, BENCH_IMAGE, type=self.kind.type,
                           options=dict(self.kind.options), limits=dict(self.kind.limits),
                           networks=list(self.networks), start=True)
        self.wait_ready()
        self.launch_seconds = time.perf_counter() - t0

    def wait_ready(self, timeout: float = 300) -> None:
        """Until an exec answers (a VM's guest agent starts after its kernel boots)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                # the request's own bound (exec timeout + 10 s) outlasts the daemon's wait
                # for a booting guest's agent: else a slow boot read as a dead daemon
                if self.client.exec(self.instance, ["true"],
                                    timeout=AGENT_WAIT + 20)["exit_code"] == 0:
                    return
            except APIError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise DriverError(f"{self.instance} did not answer an exec in {timeout:.0f}s")
            time.sleep(0.5)

    def teardown(self) -> None:
        delete_instance(self.client, self.instance)
        if self.instance in self.launched:
            self.launched.remove(self.instance)

    def run(self, script: str, *, stdin: str = "", env: dict[str, str] | None = None,
            timeout: float = 600) -> Exec:
        r = self.client.exec(self.instance, ["/bin/sh", "-c", script], stdin=stdin.encode(),
                             env=env, cwd="/tmp", timeout=timeout)
        return Exec(int(r["exit_code"]), r.get("stdout") or "", r.get("stderr") or "")

    def info(self) -> dict[str, Any]:
        return self.client.instance(self.instance)


class AppVMPlatform(InstancePlatform):
    """A real app VM: an app image (busybox-static) as PID 1 on a kernel (a kernel image's
    fingerprint or ``generic``), both from ``refs`` at setup (the lab imports or builds
    them on first use), at the driver's default memory for that kernel. The app prints a
    line, then sleeps: ready is that line on its console. There is no exec: ``run``
    refuses."""

    READY = "cumulo-lab-app-up"
    POLL = 0.02

    def __init__(self, name: str, client: Client, instance: str, launched: list[str],
                 refs: Callable[[], tuple[str, str]]) -> None:
        super().__init__(name, client, instance, launched)
        self.refs = refs
        self.app = self.kernel = ""
        self.first_line_seconds = 0.0   # from QEMU's start to the app's first line
        self.seen_boot = 0.0            # CLOCK_BOOTTIME when the line was seen

    def setup(self) -> None:
        self.app, self.kernel = self.refs()
        self.launched.append(self.instance)   # before the request: cleanup must know it
        t0 = time.perf_counter()
        op = self.client.create(
            self.instance, self.app, type="appvm", options={"kernel": self.kernel},
            command=["busybox", "sh", "-c", f"echo {self.READY}; exec /busybox sleep 86400"],
            start=True, wait=False)
        seen = self.wait_line(op)
        self.launch_seconds = seen - t0
        self.client.wait(op)
        pid = self.info().get("pid")
        if pid:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.first_line_seconds = self.seen_boot - started_since_boot(int(pid))

    def wait_line(self, op: dict[str, Any], timeout: float = 300) -> float:
        """Poll the console until the app's line (perf_counter when seen); a failed
        create or an app VM that stopped first is an error with its console's end."""
        deadline, checked = time.monotonic() + timeout, time.monotonic()
        while time.monotonic() < deadline:
            try:
                data, _ = self.client.console(self.instance)
            except APIError as err:
                if err.status != 404:
                    raise
                data = b""
            if self.READY.encode() in data:
                self.seen_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
                return time.perf_counter()
            if time.monotonic() - checked > 0.5:   # has the create failed meanwhile?
                checked = time.monotonic()
                op = self.client.get(f"/operations/{op['id']}", params={"wait": 0})
                if op["status"] == "failure":
                    self.client.wait(op)   # raises its error
                if op["status"] == "success" and self.info()["state"] != "running":
                    raise DriverError(f"{self.instance} stopped before its app printed: "
                                      f"{data.decode(errors='replace').strip()[-300:]}")
            time.sleep(self.POLL)
        raise DriverError(f"{self.instance}: no line from its app in {timeout:.0f}s")

    def wait_ready(self, timeout: float = 300) -> None:
        raise DriverError(f"{self.name}: an app VM has no exec to wait for")

    def run(self, script: str, *, stdin: str = "", env: dict[str, str] | None = None,
            timeout: float = 600) -> Exec:
        raise DriverError(f"{self.name}: an app VM runs only its program, no workload")


def started_since_boot(pid: int) -> float:
    """When a process started, in seconds of CLOCK_BOOTTIME (/proc/PID/stat's starttime,
    in clock ticks: 10 ms steps; psutil's create_time adds the boot time in whole
    seconds, too coarse here)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


class VMPlatform(InstancePlatform):
    """A VM of the bench image. Its root disk is made from the image's rootfs (an ext4
    qcow2 in the storage pool), so the tools are already in the guest. Without a storage
    pool the VM driver boots its busybox initramfs alone; then the lab copies the bench
    image's tools into the guest's RAM root through exec (a gzipped tar in chunks under
    the agent's stdin cap; the agent reads a byte at a time, so that costs minutes on TCG)."""

    CHUNK = 600 * 1024   # raw bytes per exec: base64 of it stays under the 1 MiB stdin cap
    TOOLS_CHECK = "sysbench --version && fio --version && which hpcc iperf3 qperf"

    copy_seconds = 0.0
    copied = False

    def wait_address(self, timeout: float = 120) -> None:
        """Until the guest's eth0 has the address the network gave it (DHCP in /init)."""
        want, deadline = self.ip(), time.monotonic() + timeout
        while True:
            r = self.run("ip -4 -o addr show eth0", timeout=60)
            if f"inet {want}/" in r.stdout:
                return
            if time.monotonic() > deadline:
                raise DriverError(f"{self.instance}: eth0 did not get {want} in {timeout:.0f}s")
            time.sleep(1)

    def prepare(self) -> None:
        if self.run(self.TOOLS_CHECK, timeout=120).exit_code == 0:
            return   # the root disk carries them
        t0 = time.perf_counter()
        data = tools_tarball()
        self.run("rm -f /tmp/bench-tools.tgz", timeout=60)
        for i in range(0, len(data), self.CHUNK):
            chunk = base64.b64encode(data[i:i + self.CHUNK]).decode()
            r = self.run("base64 -d >> /tmp/bench-tools.tgz", stdin=chunk, timeout=120)
            if r.exit_code != 0:
                raise DriverError(f"{self.instance}: copying the tools failed: {r.stderr}")
        r = self.run("tar -xzf /tmp/bench-tools.tgz -C / && rm /tmp/bench-tools.tgz && "
                     f"mkdir -p /tmp /dev/shm && {self.TOOLS_CHECK}", timeout=300)
        if r.exit_code != 0:
            raise DriverError(f"{self.instance}: unpacking the tools failed: "
                              f"{(r.stderr or r.stdout).strip()[-300:]}")
        self.copy_seconds = time.perf_counter() - t0
        self.copied = True

    def run(self, script: str, *, stdin: str = "", env: dict[str, str] | None = None,
            timeout: float = 600) -> Exec:
        return super().run(script, stdin=stdin, env={"PATH": "/usr/bin:/bin", **(env or {})},
                           timeout=timeout)


_TARBALL: list[bytes] = []


def tools_tarball() -> bytes:
    """The bench image's tools and libraries (no busybox: the guest has its own), tar.gz."""
    if _TARBALL:
        return _TARBALL[0]
    from cumulo.images.bench_image import install_tools

    with tempfile.TemporaryDirectory(prefix="cumulo-bench-tools-") as tmp:
        install_tools(Path(tmp))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
            for entry in sorted(Path(tmp).iterdir()):
                tar.add(entry, arcname=entry.name)
    _TARBALL.append(buf.getvalue())
    return _TARBALL[0]


def delete_instance(client: Client, name: str, timeout: float = 60) -> None:
    """Force-delete; gone already is fine; retry while a create still holds it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.delete(name, force=True)
            return
        except APIError as err:
            if err.status == 404:
                return
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
