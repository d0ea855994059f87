"""A Debian VM that boots its own disk through SeaBIOS, with cloud-init, on a disk
imported as a qcow2.

The disk is the cached ``image build debian/12 --vm`` disk (test_vm_boot_disk.py)
rewritten by ``qemu-img convert`` with another cluster size, as another tool would
hand it over, and imported with ``cumulo image import``. One guest boots it on TCG
(BIOS) with ``--ssh-key``, ``--user-data`` and ``--cloud-config``, and the tests that
only read share it (a Debian boot on TCG takes minutes): the guest's own chain (GRUB,
Debian's kernel) booted it with no failed unit, cloud-init ran from the NoCloud seed,
the address came by DHCP, ssh from the host side of the daemon's own namespace logs in
with the key, exec (stdin, stdout, stderr, exit code) and file push/pull go through the
guest agent, ``exec -t`` gets a pty in the guest. Bad input (user-data that is not YAML or has
no #cloud-config line, a missing key file) fails before anything is made. Last, the
ACPI power button stops it cleanly, and deleting it removes its seed.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cumulo.errors import CumuloError
from tests.qga_contract import check_agent
from tests.system.conftest import Daemon, netns_daemon
from tests.system.test_vm_boot_disk import _debian_vm_disk, _instance, _qemus

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow,
              pytest.mark.timeout(2400)]
# cloud-init's four stages each start Python in the guest: on TCG on a loaded 2-core host
# that alone took 80 s a stage (the whole first boot: 10+ minutes)
CLOUD_INIT_WAIT = 1500.0
USER_DATA = """#cloud-config
runcmd:
  - [sh, -c, "echo made-by-runcmd > /root/runcmd.txt"]
"""
SEED = "cidata.iso"


@dataclass
class Guest:
    d: Daemon
    name: str
    key: Path            # the private key; key.pub was given with --ssh-key
    ip: str
    netns: str           # nsenter's --net=... of the daemon's namespace
    tmp: Path


def _ssh(g: Guest, user: str, *command: str) -> subprocess.CompletedProcess[str]:
    """ssh from the daemon's namespace (where the network's bridge is) with the key."""
    return subprocess.run(
        ["nsenter", g.netns, "ssh", "-i", str(g.key), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", f"{user}@{g.ip}", "--", *command],
        capture_output=True, text=True, timeout=120, check=False)


def _keygen(key: Path) -> Path:
    """A new ed25519 key pair without a passphrase: ``key`` and ``key``.pub."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cumulo-test",
                    "-f", str(key)], check=True, timeout=60)
    return key


def _cloud_init_done(d: Daemon, name: str, wait: float = CLOUD_INIT_WAIT,
                     pause: float = 3.0) -> str:
    """Poll `cloud-init status` through exec (a VM's guest agent) until it ended
    (bounded by ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    out = ""
    while time.monotonic() < deadline:
        r = d.cli("exec", name, "--", "cloud-init", "status", check=False, timeout=300)
        out = r.stdout + r.stderr
        if "status: done" in out or "status: error" in out:
            return out
        time.sleep(pause)
    raise AssertionError(f"cloud-init did not finish in {wait:.0f}s: {out}")


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    tmp = tmp_path_factory.mktemp("cloudinit")
    # a qcow2 of our own image as another tool would make it: other clusters, other bytes
    imported = tmp / "debian-12.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", "-o", "cluster_size=131072",
                    str(_debian_vm_disk()), str(imported)], check=True, timeout=600)
    key = _keygen(tmp / "id_ed25519")
    (tmp / "user-data").write_text(USER_DATA)
    with netns_daemon(tmp, "vci") as d:
        d.cli("network", "create", "lan", "--subnet", "10.96.0.0/24")
        d.cli("image", "import", str(imported), "--alias", "imported", timeout=600)
        imported.unlink()
        d.cli("launch", "imported", "ci1", "--type", "vm", "--firmware", "bios",
              "--network", "lan", "--memory", "512MiB", "--ssh-key", f"{key}.pub",
              "--user-data", str(tmp / "user-data"),
              "--cloud-config", "write_files=[{path: /etc/cumulo-note, content: noted}]")
        status = _cloud_init_done(d, "ci1")
        assert "status: done" in status, status
        ip = _instance(d, "ci1")["nics"][0]["ip"]
        yield Guest(d, "ci1", key, ip, d.wrapper[1], tmp)


def test_the_guest_booted_its_own_chain_through_seabios(guest: Guest) -> None:
    d = guest.d
    # the guest's own chain: GRUB, then Debian's kernel (no -kernel on QEMU's command line)
    assert "-kernel" not in _qemus(d, "ci1")[0]
    logs = d.cli("logs", "ci1").stdout
    assert "Cumulo: GRUB loads the kernel" in logs and "Linux version" in logs
    r = d.cli("exec", "ci1", "--", "systemctl", "is-system-running", "--wait", check=False,
              timeout=300)
    failed = d.cli("exec", "ci1", "--", "systemctl", "--failed", "--no-legend",
                   check=False).stdout
    assert r.stdout.strip() == "running", f"{r.stdout} {r.stderr} failed units: {failed}"


def test_exec_and_files_go_through_the_guest_agent(guest: Guest) -> None:
    d, tmp = guest.d, guest.tmp
    # exec through qemu-guest-agent: stdin, stdout, stderr, exit code
    r = d.cli("exec", "ci1", "--", "sh", "-c", "cat; echo oops >&2; exit 3", check=False,
              input="hello\n")
    assert (r.returncode, r.stdout, "oops" in r.stderr) == (3, "hello\n", True)
    # file push/pull through the agent's guest-file-* commands
    blob = tmp / "blob"
    blob.write_bytes(bytes(range(256)) * 1000)
    d.cli("file", "push", "ci1", str(blob), "/root/blob", "--mode", "0600")
    assert d.cli("exec", "ci1", "--", "stat", "-c", "%a %s", "/root/blob").stdout.split() \
        == ["600", "256000"]
    d.cli("file", "pull", "ci1", "/root/blob", str(tmp / "back"))
    assert (tmp / "back").read_bytes() == blob.read_bytes()
    r = d.cli("file", "pull", "ci1", "/nope", str(tmp / "x"), check=False)
    assert r.returncode != 0 and "/nope" in r.stderr and len(r.stderr.splitlines()) == 1


def test_the_same_agent_contract_as_our_busybox_agent(guest: Guest) -> None:
    """The host's one QGA client against qemu-guest-agent, asked what tests/integration/
    test_vm_agent.py asks our busybox agent (tests/qga_contract.py)."""
    sockets = list(guest.d.state_dir.glob("run/**/qga.sock"))
    assert len(sockets) == 1, sockets
    check_agent(sockets[0].parent, "ci1")


def test_cloud_init_ran_the_seed(guest: Guest) -> None:
    d = guest.d
    # the NoCloud datasource, from the cidata seed: the hostname, runcmd, write_files
    r = d.cli("exec", "ci1", "--", "cloud-init", "query", "--format",
              "{{v1.platform}} {{v1.subplatform}} {{v1.local_hostname}}")
    assert r.stdout.split()[0] == "nocloud" and r.stdout.split()[-1] == "ci1", r.stdout
    assert d.cli("exec", "ci1", "--", "hostname").stdout.strip() == "ci1"
    assert d.cli("exec", "ci1", "--", "cat", "/root/runcmd.txt").stdout == "made-by-runcmd\n"
    assert d.cli("exec", "ci1", "--", "cat", "/etc/cumulo-note").stdout == "noted"


def test_ssh_with_the_given_key_over_the_dhcp_address(guest: Guest) -> None:
    d = guest.d
    assert f"inet {guest.ip}/24" in d.cli("exec", "ci1", "--", "ip", "-4", "addr", "show",
                                          "eth0").stdout
    r = _ssh(guest, "root", "cat", "/root/runcmd.txt")
    assert (r.returncode, r.stdout) == (0, "made-by-runcmd\n"), r.stderr
    # the image's default user got the key too, with sudo
    r = _ssh(guest, "debian", "sudo", "-n", "id", "-u")
    assert (r.returncode, r.stdout.strip()) == (0, "0"), r.stderr
    # another key is refused (BatchMode: no password prompt)
    other = _keygen(guest.tmp / "other")
    r = _ssh(Guest(d, "ci1", other, guest.ip, guest.netns, guest.tmp), "root", "true")
    assert r.returncode == 255 and "Permission denied" in r.stderr, r.stderr


def test_exec_with_a_terminal_runs_on_a_pty_in_the_guest(guest: Guest) -> None:
    """exec -t (interactive use: tests/system/test_vm_measured_boot.py), stdin not a tty."""
    r = guest.d.cli("exec", "-t", "ci1", "--", "sh", "-c", "tty; exit 3", check=False,
                    input="", timeout=120)
    assert r.returncode == 3 and "/dev/pts/" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize(("content", "said"), [
    ("this is: not: yaml: [\n", "neither a '#cloud-config' YAML document nor a '#!' script"),
    ("#cloud-config\nruncmd: [unclosed\n", "is not YAML"),
    ("runcmd:\n  - [touch, /x]\n", "no '#cloud-config' first line"),
])
def test_user_data_cloud_init_would_not_read_is_refused(guest: Guest, content: str,
                                                        said: str) -> None:
    d = guest.d
    bad = guest.tmp / "bad-user-data"
    bad.write_text(content)
    r = d.cli("launch", "imported", "bad1", "--type", "vm", "--network", "lan",
              "--user-data", str(bad), check=False)
    assert r.returncode != 0 and said in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # the daemon checks it too (a client other than the CLI)
    with d.client() as c, pytest.raises(CumuloError, match="cloud-init would ignore"):
        c.create("bad1", "imported", type="vm", start=True, user_data="hello world\n")
    assert "bad1" not in d.cli("list").stdout and not _qemus(d, "bad1")


def test_a_missing_key_file_is_refused(guest: Guest) -> None:
    d = guest.d
    r = d.cli("launch", "imported", "bad2", "--type", "vm", "--ssh-key",
              str(guest.tmp / "nope.pub"), check=False)
    assert r.returncode != 0 and "cannot read SSH key file" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "bad2" not in d.cli("list").stdout


def test_acpi_stop_then_the_seed_goes_with_the_instance(guest: Guest) -> None:
    d = guest.d
    # stop: the ACPI power button makes systemd power off before the timeout
    t0 = time.monotonic()
    d.cli("stop", "ci1", "--timeout", "240", timeout=300)
    assert time.monotonic() - t0 < 240
    assert "reboot: Power down" in d.cli("logs", "ci1").stdout
    assert not _qemus(d, "ci1")
    seeds = list((d.state_dir / "instances").glob(f"*/{SEED}"))
    assert [s.parent.name for s in seeds] == ["default_ci1"]
    d.cli("delete", "ci1", timeout=300)
    assert not list((d.state_dir / "instances").glob(f"*/{SEED}"))
    assert not _qemus(d, "ci1")
