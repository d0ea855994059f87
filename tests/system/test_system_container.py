"""System containers: a Debian image with systemd boots init as PID 1, unprivileged,
reaches multi-user with its address by DHCP and stops through init.

The tree is built here by the debian/12 builder (``--packages systemd-sysv``, from
the Debian mirror, in the host's namespace) and imported as a tarball into a
cumulod in its own network namespace, so the DHCP traffic stays inside it.
"""

from __future__ import annotations

import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cumulo.images import debian
from cumulo.images.files import ImageFiles
from tests.system.conftest import Daemon, netns_daemon

# the first run on a machine builds the Debian root (minutes on a busy 2-core host)
pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.slow,
              pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def sys_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A cumulod in a fresh netns with a network, and the systemd image imported."""
    tmp = tmp_path_factory.mktemp("sysct")
    files = ImageFiles(tmp / "built")
    spec = debian.parse_spec("12", None, ["systemd-sysv"])
    record = debian.build_debian(files, spec)
    assert record.properties["instance"] == "system", record.properties
    tarball = tmp / "debian-systemd.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(files.root / record.sha256 / "rootfs", arcname=".")
    with netns_daemon(tmp, "sys") as d:
        d.cli("network", "create", "lan", "--subnet", "10.93.0.0/24")
        d.cli("image", "import", str(tarball), "--alias", "debian-sys")
        tarball.unlink()
        yield d


def _instance(d: Daemon, name: str) -> dict[str, Any]:
    with d.client() as c:
        return c.instance(name)


def _wait_running(d: Daemon, name: str, timeout: float = 60) -> str:
    """``systemctl is-system-running`` once boot is over (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        r = d.cli("exec", name, "--", "systemctl", "is-system-running", check=False)
        state = r.stdout.strip()
        if state not in ("initializing", "starting", "") or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def test_debian_system_container_boots_systemd_and_stops_through_init(
        sys_daemon: Daemon) -> None:
    d = sys_daemon
    info = d.cli("image", "info", "debian-sys").stdout
    assert "properties.instance:    system" in info
    d.cli("launch", "debian-sys", "sys1", "--network", "lan")
    state = _wait_running(d, "sys1")
    failed = d.cli("exec", "sys1", "--", "systemctl", "--failed", "--no-legend",
                   "--no-pager", check=False).stdout
    assert state == "running", f"{state}: failed units: {failed}"
    # init is PID 1, the hostname is the instance's name, unprivileged
    assert d.cli("exec", "sys1", "--", "cat", "/proc/1/comm").stdout.strip() == "systemd"
    assert d.cli("exec", "sys1", "--", "hostname").stdout.strip() == "sys1"
    assert d.cli("exec", "sys1", "--", "cat", "/proc/self/uid_map").stdout.split()[1] \
        == "1000000"
    # systemd-networkd took the instance's address by DHCP from the network's dnsmasq
    deadline = time.monotonic() + 30
    while True:
        log = d.cli("exec", "sys1", "--", "journalctl", "-b", "-u", "systemd-networkd",
                    "--no-pager").stdout
        if "DHCPv4 address" in log or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    ip = _instance(d, "sys1")["nics"][0]["ip"]
    assert f"DHCPv4 address {ip}/24" in log, log
    # stop: SIGRTMIN+3 makes systemd power off (its shutdown reaches the journal's end)
    d.cli("stop", "sys1", "--timeout", "60")
    inst = _instance(d, "sys1")
    assert inst["state"] == "stopped"
    # reboot(2) in a pid namespace ends its init with SIGINT: 128+2 says it powered off,
    # SIGKILL (137) would say the timeout ran out
    assert inst["exit_code"] in (0, 130), inst
    d.cli("start", "sys1")
    assert _wait_running(d, "sys1") == "running"
    d.cli("delete", "--force", "sys1")


def test_command_override_runs_an_application_container(sys_daemon: Daemon) -> None:
    d = sys_daemon
    d.cli("launch", "debian-sys", "app1", "--network", "lan", "--", "sleep", "300")
    assert d.cli("exec", "app1", "--", "cat", "/proc/1/comm").stdout.strip() == "sleep"
    assert _instance(d, "app1")["options"] == {}
    d.cli("delete", "--force", "app1")


def test_file_push_and_pull(sys_daemon: Daemon, tmp_path: Path) -> None:
    d = sys_daemon
    d.cli("launch", "debian-sys", "files1", "--network", "lan")
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(3 * 2**20 + 7))   # more than a pipe's buffer
    blob.chmod(0o640)
    d.cli("file", "push", "files1", str(blob), "/root/blob")
    # owned by the container's root, the source's mode, resolved inside the container
    assert d.cli("exec", "files1", "--", "stat", "-c", "%a %u %s", "/root/blob"
                 ).stdout.split() == ["640", "0", str(3 * 2**20 + 7)]
    back = tmp_path / "back"
    d.cli("file", "pull", "files1", "/root/blob", str(back))
    assert back.read_bytes() == blob.read_bytes()
    assert d.cli("file", "push", "files1", "-", "/etc/motd", "--mode", "0600",
                 input="hello\n").returncode == 0
    assert d.cli("file", "pull", "files1", "/etc/motd", "-").stdout == "hello\n"
    for args, msg in ((("pull", "files1", "/nope", str(tmp_path / "x")),
                       "cannot read /nope in files1: cat: /nope: No such file"),
                      (("push", "files1", str(blob), "/nodir/x"),
                       "cannot write /nodir/x in files1"),
                      (("push", "files1", str(blob), "relative"),
                       "'relative' is not an absolute path")):
        r = d.cli("file", *args, check=False)
        assert r.returncode != 0 and msg in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    d.cli("stop", "files1")
    r = d.cli("file", "pull", "files1", "/etc/motd", "-", check=False)
    assert r.returncode != 0 and "stopped" in r.stderr, r.stderr
    d.cli("delete", "files1")
