"""VMs through the CLI and a real daemon: QEMU (TCG on hosts without usable KVM)."""

from __future__ import annotations

import json
import time

import pytest

from cumulo.host.probe import probe
from tests.system.conftest import Daemon

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow]

# a throwaway public key made with ssh-keygen -t ed25519 (the private half was deleted)
ED_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOu3ira+W2g3CLS4G4oMUNW2VrWydKWecpE9acei1ORd"
          " test@cumulo")


def wait_logs(daemon: Daemon, name: str, text: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while text not in (logs := daemon.cli("logs", name).stdout):
        assert time.monotonic() < deadline, logs[-2000:]
        time.sleep(0.3)
    return logs


def test_vm_lifecycle_from_the_cli(daemon: Daemon) -> None:
    daemon.cli("image", "build", "busybox")
    key = daemon.state_dir.parent / "id_test.pub"   # the hostname and an SSH key reach the guest
    key.write_text(f"# a comment line\n{ED_KEY}\n")
    daemon.cli("launch", "busybox", "vm1", "--type", "vm", "--machine", "pc",
               "--memory", "128MiB", "--cpu", "1", "--ssh-key", str(key),
               "--", "sh", "-c", "echo hello-from-vm; sleep 600")
    wait_logs(daemon, "vm1", "hello-from-vm")
    info = json.loads(daemon.cli("info", "vm1", "--format", "json").stdout)
    assert info["type"] == "vm" and info["state"] == "running" and info["pid"] > 0
    assert info["options"] == {"machine": "pc"}
    assert info["usage"]["memory_bytes"] > 0
    # QEMU runs in the VM's own cgroup: usage comes from it, its limits are shown
    assert info["details"]["cgroup"].endswith("/default_vm1")
    assert info["details"]["cgroup_limits"]["cpu_max"] == 1.0
    table = daemon.cli("info", "vm1").stdout
    assert "cgroup" in table and "cpu 1," in table, table
    r = daemon.cli("exec", "vm1", "--", "sh", "-c",
                   "hostname; stat -c %a /root/.ssh/authorized_keys;"
                   " cat /root/.ssh/authorized_keys")
    assert r.stdout == f"vm1\n600\n{ED_KEY}\n", r.stdout

    # exec through the guest agent: stdout, stderr and the exit status reach the CLI
    r = daemon.cli("exec", "vm1", "--", "sh", "-c", "hostname; echo oops >&2; exit 4",
                   check=False)
    assert (r.returncode, r.stdout, r.stderr) == (4, "vm1\n", "oops\n")

    daemon.cli("pause", "vm1")
    assert json.loads(daemon.cli("info", "vm1", "--format", "json").stdout)["state"] == \
        "paused"
    daemon.cli("resume", "vm1")
    daemon.cli("stop", "vm1", "--timeout", "30")
    assert json.loads(daemon.cli("info", "vm1", "--format", "json").stdout)["state"] == \
        "stopped"
    r = daemon.cli("exec", "vm1", "--", "true", check=False)
    assert r.returncode == 1 and "it is stopped" in r.stderr, r.stderr
    daemon.cli("delete", "vm1")
    assert json.loads(daemon.cli("list", "--format", "json").stdout) == []


def test_vm_bad_input(daemon: Daemon) -> None:
    daemon.cli("image", "build", "busybox")
    r = daemon.cli("launch", "busybox", "x", "--type", "vm", "--machine", "isapc", check=False)
    assert r.returncode == 1 and "invalid machine 'isapc'" in r.stderr
    r = daemon.cli("launch", "busybox", "x", "--accel", "tcg", check=False)
    assert r.returncode == 1 and "does not apply to a container" in r.stderr
    for bad, message in [(daemon.state_dir.parent / "missing.pub", "cannot read SSH key file"),
                         (daemon.state_dir.parent / "notakey.pub", "not an SSH public key")]:
        if bad.name == "notakey.pub":
            bad.write_text("hello world\n")
        r = daemon.cli("launch", "busybox", "x", "--type", "vm", "--ssh-key", str(bad),
                       check=False)
        assert r.returncode == 1 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert json.loads(daemon.cli("list", "--format", "json").stdout) == []
    if not probe().kvm_usable:
        r = daemon.cli("launch", "busybox", "x", "--type", "vm", "--accel", "kvm", check=False)
        assert r.returncode == 1 and "kvm" in r.stderr.lower()
    assert json.loads(daemon.cli("list", "--format", "json").stdout) == []
