"""A kernel specialised for app VMs, built from Debian's linux-source through the CLI.

The build takes minutes on 2 cores the first time on a machine and is then a cache hit
(``/var/cache/cumulo/kernel-builds``), so this module builds once and every test
reuses it. An app VM launched afterwards boots that kernel by default.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cumulo.images import kernel_build, kernel_elf
from tests.system.conftest import BIN, Daemon, netns_daemon
from tests.system.test_appvm_cli import HELLO, wait_stopped

BUILD_TIMEOUT = 3600
# an app VM's network program: the address the kernel took by DHCP (ip=dhcp), a TCP
# connection out to the gateway's DNS (dnsmasq), then a TCP server on port 7000 that
# answers each connection with that address; it ends after the number of connections its
# second argument says (1 without it)
NETAPP = r"""
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct ifreq ifr = {0};
    int s = socket(AF_INET, SOCK_DGRAM, 0), c, l, one = 1, err = 0;
    socklen_t len = sizeof err;
    char addr[INET_ADDRSTRLEN], line[64];
    strcpy(ifr.ifr_name, "eth0");
    if (s < 0 || ioctl(s, SIOCGIFADDR, &ifr) < 0) {
        printf("no address: %s\n", strerror(errno));
        return 2;
    }
    strcpy(addr, inet_ntoa(((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr));
    printf("address %s\n", addr);
    struct sockaddr_in gw = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, argc > 1 ? argv[1] : "0.0.0.0", &gw.sin_addr);
    c = socket(AF_INET, SOCK_STREAM, 0);
    fcntl(c, F_SETFL, O_NONBLOCK);
    connect(c, (struct sockaddr *)&gw, sizeof gw);
    struct pollfd p = {c, POLLOUT, 0};
    if (poll(&p, 1, 30000) != 1 || getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
        printf("cannot reach %s:53: %s\n", argv[1], err ? strerror(err) : "timed out");
        return 3;
    }
    close(c);
    printf("reached %s:53\n", argv[1]);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(7000)};
    l = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&me, sizeof me) || listen(l, 4)) {
        printf("cannot listen: %s\n", strerror(errno));
        return 4;
    }
    printf("listening on %s:7000\n", addr);
    fflush(stdout);
    snprintf(line, sizeof line, "hello from the app at %s\n", addr);
    for (int n = argc > 2 ? atoi(argv[2]) : 1; n > 0; n--) {
        c = accept(l, NULL, NULL);
        write(c, line, strlen(line));
        close(c);
        printf("answered\n");
        fflush(stdout);
    }
    return 0;
}
"""
# from the daemon's namespace, where the network's bridge is: what a TCP connection gets
FETCH = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], 7000), timeout=5) as c:
        print(c.recv(200).decode(errors="replace"), end="")
except OSError as err:
    print("error:", err)
"""
pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow,
              pytest.mark.timeout(BUILD_TIMEOUT)]


def image(daemon: Daemon, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(daemon.cli("image", "info", ref, "--format", "json").stdout)
    return out


@pytest.fixture(scope="module")
def kernel(module_daemon: Daemon) -> dict[str, Any]:
    """The app kernel, built (or taken from this machine's cache) through the CLI."""
    if not list(Path("/usr/src").glob("linux-source-*.tar.xz")):
        pytest.fail("linux-source is not installed: scripts/install.sh installs it")
    module_daemon.cli("image", "build", "kernel", "--profile", "app", timeout=BUILD_TIMEOUT)
    return image(module_daemon, "kernel/app")


def build_on_a_terminal(daemon: Daemon, *args: str) -> str:
    """``cumulo image build kernel ARGS`` on a pty (``script``), as a user sees it: the
    progress bar only shows on a terminal. Its output without the terminal's escapes."""
    cmd = shlex.join([str(BIN / "cumulo"), "image", "build", "kernel", *args])
    r = subprocess.run(["script", "-qfec", f"stty cols 200; {cmd}", "/dev/null"],
                       capture_output=True, env=daemon.env, timeout=BUILD_TIMEOUT)
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", r.stdout.decode(errors="replace"))
    assert r.returncode == 0, out[-2000:]
    return out


def static_program(d: Path, name: str, source: str) -> Path:
    (d / f"{name}.c").write_text(source)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(d / name), str(d / f"{name}.c")],
                   check=True, timeout=120)
    return d / name


@pytest.fixture(scope="module")
def net_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon in a netns of its own with a network, and the app kernel built --with net
    (a cache hit after the first time on a machine)."""
    with netns_daemon(tmp_path_factory.mktemp("appnet"), "akn") as d:
        d.cli("network", "create", "lan", "--subnet", "10.93.0.0/24")
        d.cli("image", "build", "kernel", "--with", "net", timeout=BUILD_TIMEOUT)
        yield d


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return static_program(Path(str(tmp_path_factory.mktemp("hello"))), "hello", HELLO)


@pytest.fixture(scope="module")
def netapp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return static_program(Path(str(tmp_path_factory.mktemp("netapp"))), "netapp", NETAPP)


def test_the_built_kernel_is_a_small_kernel_image(
        module_daemon: Daemon, kernel: dict[str, Any]) -> None:
    assert kernel["kind"] == "kernel" and kernel["os"] == "linux", kernel
    props = kernel["properties"]
    assert props["profile"] == "app" and props["source"].startswith("linux-source-"), props
    entry = kernel_build.CACHE / props["config_key"] / "result"
    # the compressed image is what Debian ships as vmlinuz (about 8 MiB there)
    assert (entry / "bzImage").stat().st_size < 3 * 1024 * 1024
    # and what app VMs boot (through PVH, uncompressed), its alignment padding left out
    booted = module_daemon.state_dir / "images" / kernel["fingerprint"] / "boot" / "vmlinux"
    assert booted.stat().st_size < 3 * 1024 * 1024 < (entry / "vmlinux").stat().st_size
    assert kernel_elf.loaded_bytes(booted)[0] < 3 * 1024 * 1024
    config = (entry / "config").read_text()
    assert "CONFIG_PVH=y" in config and "CONFIG_VIRTIO_MMIO=y" in config
    assert "# CONFIG_MODULES is not set" in config      # tinyconfig: nothing to load


def test_app_vm_boots_the_specialised_kernel_by_default(
        module_daemon: Daemon, kernel: dict[str, Any], hello: Path) -> None:
    module_daemon.cli("launch", "--type", "appvm", "k1", "--app", str(hello), "--",
                      "one", "two words")
    info = wait_stopped(module_daemon, "k1")
    logs = module_daemon.cli("logs", "k1").stdout
    assert "hello from pid 1: [one] [two words]" in logs, logs
    assert info["exit_code"] == 7, info
    assert info["options"]["kernel"] == kernel["fingerprint"], info["options"]
    module_daemon.cli("delete", "k1")
    # and Debian's kernel when asked for it
    module_daemon.cli("launch", "--type", "appvm", "k2", "--app", str(hello),
                      "--kernel", "generic", "--", "x")
    info = wait_stopped(module_daemon, "k2")
    assert info["exit_code"] == 7 and info["options"]["kernel"] == "generic", info
    module_daemon.cli("delete", "k2")


def test_a_second_build_is_a_cache_hit_and_a_damaged_entry_is_rebuilt(
        module_daemon: Daemon, kernel: dict[str, Any]) -> None:
    shown = build_on_a_terminal(module_daemon, "--alias", "again")
    assert "building kernel: kernel 6." in shown and "ready (cache hit)" in shown, shown
    assert "compiling" not in shown, shown
    again = image(module_daemon, "again")
    assert again["fingerprint"] == kernel["fingerprint"]      # same content, same image
    entry = kernel_build.CACHE / kernel["properties"]["config_key"] / "result"
    vmlinux = entry / "vmlinux"
    good = hashlib.sha256(vmlinux.read_bytes()).hexdigest()
    with vmlinux.open("ab") as f:               # damage the cached result
        f.write(b"\0")
    shown = build_on_a_terminal(module_daemon, "--alias", "rebuilt")
    # the build's steps showed on the bar as they came, and how it ended
    for step in ("building kernel: unpacking linux-source-", "building kernel: configuring",
                 "building kernel: compiling on", "ready (built)"):
        assert step in shown, (step, shown[-2000:])
    assert re.search(r"Built .*\brebuilt\b", shown), shown[-2000:]
    assert "cache hit" not in shown, shown[-2000:]
    # rebuilt in the cached object tree, to the same bytes: the build is reproducible
    assert hashlib.sha256(vmlinux.read_bytes()).hexdigest() == good
    assert image(module_daemon, "rebuilt")["fingerprint"] == kernel["fingerprint"]


def test_bad_kernel_requests_are_one_line_and_leave_nothing(
        module_daemon: Daemon, kernel: dict[str, Any], hello: Path) -> None:
    before = module_daemon.cli("image", "list", "--format", "json").stdout
    for args, want in ((("--profile", "desktop"), "unknown kernel profile 'desktop'"),
                       (("--with", "gpu"), "unknown kernel feature 'gpu'"),
                       (("--variant", "x"), "--variant does not apply to the kernel builder")):
        r = module_daemon.cli("image", "build", "kernel", *args, check=False)
        assert r.returncode == 1 and want in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = module_daemon.cli("launch", "--type", "appvm", "bad", "--app", str(hello),
                          "--kernel", "busybox-nope", check=False)
    assert r.returncode == 1 and "busybox-nope" in r.stderr, r.stderr
    # a vTPM needs the TPM driver built in: none of these kernels has it
    for args, want in (((), "Debian's kernel has it as a module"),
                       (("--kernel", kernel["fingerprint"]),
                        f"kernel image {kernel['fingerprint'][:12]} has none")):
        r = module_daemon.cli("launch", "--type", "appvm", "bad", "--app", str(hello),
                              "--tpm", *args, check=False)
        assert r.returncode == 1 and want in r.stderr, r.stderr
        assert r.stderr.strip().endswith("cumulo image build kernel --with tpm"), r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    module_daemon.cli("image", "build", "busybox")
    r = module_daemon.cli("launch", "--type", "appvm", "bad", "--app", str(hello),
                          "--kernel", "busybox", check=False)
    assert r.returncode == 1 and "not a kernel" in r.stderr, r.stderr
    assert json.loads(module_daemon.cli("list", "--format", "json").stdout) == []
    after = json.loads(module_daemon.cli("image", "list", "--format", "json").stdout)
    assert len(after) == len(json.loads(before)) + 1        # only busybox was added


def _qemu_of(d: Daemon, name: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", f"guest=default_{name},"], capture_output=True,
                         text=True, check=False).stdout
    return [ln for ln in out.splitlines() if "qemu-system" in ln and f"{d.state_dir}/" in ln]


def _listening(d: Daemon, name: str, ip: str) -> str:
    """The app's output once it listens on ``ip`` (it must not stop before)."""
    deadline = time.monotonic() + 120
    while f"listening on {ip}:7000" not in (logs := d.cli("logs", name).stdout):
        state = json.loads(d.cli("info", name, "--format", "json").stdout)["state"]
        assert time.monotonic() < deadline and state == "running", (state, logs)
        time.sleep(0.5)
    return logs


def _fetch_from_host_side(d: Daemon, ip: str) -> str:
    return subprocess.run([*d.wrapper, sys.executable, "-c", FETCH, ip], capture_output=True,
                          text=True, timeout=60, check=True).stdout


def test_an_app_vm_with_a_network_gets_its_address_and_answers_on_it(
        net_daemon: Daemon, netapp: Path) -> None:
    """--network on the kernel built --with net: eth0 with the address IPAM gave the NIC
    (by the kernel's DHCP), out to the gateway, and a TCP server in the app that another
    instance on the network and the host side of it reach; the same app without
    --network has no eth0, gets one when a network is attached while it is stopped, and
    none once it is detached."""
    d = net_daemon
    net = image(d, "kernel/app-net")
    assert net["properties"]["features"] == "net", net["properties"]
    gateway = json.loads(d.cli("network", "info", "lan", "--format", "json").stdout)["gateway"]
    d.cli("image", "build", "busybox")
    d.cli("launch", "busybox", "peer", "--network", "lan", "--", "sleep", "600")
    d.cli("launch", "--type", "appvm", "n1", "--app", str(netapp), "--network", "lan",
          "--", gateway, "2")
    info = json.loads(d.cli("info", "n1", "--format", "json").stdout)
    # the kernel built with net is the default for an app VM with a NIC
    assert info["options"]["kernel"] == net["fingerprint"], info["options"]
    ip = info["nics"][0]["ip"]
    logs = _listening(d, "n1", ip)
    assert f"address {ip}\n" in logs and f"reached {gateway}:53" in logs, logs
    got = d.cli("exec", "peer", "--", "nc", "-w", "10", ip, "7000").stdout
    assert got == f"hello from the app at {ip}\n", got
    assert _fetch_from_host_side(d, ip) == f"hello from the app at {ip}\n"
    info = wait_stopped(d, "n1")
    assert info["exit_code"] == 0, (info, d.cli("logs", "n1").stdout)
    assert d.cli("logs", "n1").stdout.count("answered\n") == 2
    d.cli("delete", "n1")
    d.cli("delete", "peer", "--force")
    # without --network, as before: no NIC, no eth0
    d.cli("launch", "--type", "appvm", "n2", "--app", str(netapp), "--", gateway)
    info = wait_stopped(d, "n2")
    assert info["exit_code"] == 2 and info["nics"] == [], info
    assert "no address: No such device" in d.cli("logs", "n2").stdout
    # a network attached while it is stopped: at the next start
    d.cli("network", "attach", "lan", "n2")
    d.cli("start", "n2")
    ip = json.loads(d.cli("info", "n2", "--format", "json").stdout)["nics"][0]["ip"]
    _listening(d, "n2", ip)
    assert _fetch_from_host_side(d, ip) == f"hello from the app at {ip}\n"
    assert wait_stopped(d, "n2")["exit_code"] == 0
    d.cli("network", "detach", "lan", "n2")
    d.cli("start", "n2")
    info = wait_stopped(d, "n2")
    assert info["exit_code"] == 2 and info["nics"] == [], info
    d.cli("delete", "n2")


def test_bad_network_requests_on_app_vms_are_one_line_and_leave_nothing(
        net_daemon: Daemon, netapp: Path) -> None:
    d = net_daemon
    d.cli("network", "create", "lan2", "--subnet", "10.94.0.0/24")
    d.cli("image", "build", "busybox")
    before = {n["name"]: n for n in json.loads(d.cli("network", "list", "--format",
                                                     "json").stdout)}
    for args, want in (
            (("--app", str(netapp), "--network", "lan", "--network", "lan2"),
             "an app VM takes one network, not 2"),
            (("--app", str(netapp), "--network", "lan", "--kernel", "generic"),
             "a NIC (--network, or the project's network 'default') on an app VM needs a"
             " kernel with virtio-net and DHCP built in (Debian's kernel has it as a module"),
            # an image VM (docker's cumulo-vm) is an app VM on Debian's kernel whose
            # initramfs has no virtio-net: refused as before, saying so
            (("busybox", "bad", "--type", "imagevm", "--network", "lan", "--", "sleep", "9"),
             "a NIC on an image VM (--network, or the project's network 'default') is not"
             " supported yet: its initramfs loads no virtio-net driver")):
        r = d.cli("launch", *(args if args[0] == "busybox" else ("--type", "appvm", "bad",
                                                                   *args)), check=False)
        assert r.returncode == 1 and want in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert json.loads(d.cli("list", "--format", "json").stdout) == []
    after = {n["name"]: n for n in json.loads(d.cli("network", "list", "--format",
                                                    "json").stdout)}
    assert after == before         # no address kept for the VM that was not made
    d.cli("network", "delete", "lan2")


def test_a_running_app_vm_on_the_specialised_kernel_stops(
        module_daemon: Daemon, kernel: dict[str, Any]) -> None:
    d = module_daemon
    d.cli("launch", "--type", "appvm", "s1", "--app", "/bin/busybox", "--", "sh", "-c",
          "echo up-and-staying; exec /busybox sleep 600")
    deadline = time.monotonic() + 120
    while "up-and-staying" not in d.cli("logs", "s1").stdout:
        assert time.monotonic() < deadline, d.cli("logs", "s1").stdout[-2000:]
        time.sleep(0.5)
    info = json.loads(d.cli("info", "s1", "--format", "json").stdout)
    assert info["state"] == "running" and info["options"]["kernel"] == kernel["fingerprint"]
    assert _qemu_of(d, "s1")
    d.cli("stop", "s1", timeout=180)
    info = json.loads(d.cli("info", "s1", "--format", "json").stdout)
    assert info["state"] == "stopped" and not _qemu_of(d, "s1"), info
    d.cli("delete", "s1")
