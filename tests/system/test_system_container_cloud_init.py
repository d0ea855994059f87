"""cloud-init in a system container: the NoCloud seed in its root runs the user's
user-data at boot, as in a VM booting its own disk.

The image is the debian/12 builder's tree with ``systemd-sysv`` and ``cloud-init``,
cached as a tarball in ``/var/cache/cumulo/test-images`` while the builder's sources do
not change (a build with cloud-init's Python costs a minute here), imported into a
cumulod in its own network namespace. One container is launched with
``--user-data`` (runcmd), ``--cloud-config`` (write_files) and ``--ssh-key``; the tests
read what cloud-init did in it. Bad input fails before anything is made.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import cumulo.images.debian
import cumulo.images.system
from cumulo.images import debian
from cumulo.images.files import ImageFiles
from tests.system import image_cache
from tests.system.cloudinit import cloud_init_done, keygen
from tests.system.conftest import Daemon, netns_daemon

# the first run on a machine builds the Debian root (minutes on a busy 2-core host)
pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.slow,
              pytest.mark.timeout(1800)]

PACKAGES = ["systemd-sysv", "cloud-init"]
CLOUD_INIT_WAIT = 300.0       # four stages, each a Python start: seconds in a container
SEED = "/var/lib/cloud/seed/nocloud-net"
USER_DATA = """#cloud-config
runcmd:
  - [sh, -c, "echo made-by-runcmd >> /root/runcmd.txt"]
"""


def _cloud_init_tarball() -> Path:
    """The debian/12 systemd + cloud-init tree as a tarball, from the cache when the
    builder's sources did not change."""
    def build(tmp: Path) -> Path:
        files = ImageFiles(tmp / "built")
        record = debian.build_debian(files, debian.parse_spec("12", None, PACKAGES))
        assert record.properties["instance"] == "system", record.properties
        with tarfile.open(tmp / "image.tar", "w") as tar:
            tar.add(files.root / record.sha256 / "rootfs", arcname=".")
        return tmp / "image.tar"

    key = image_cache.source_key((cumulo.images.debian, cumulo.images.system),
                                 repr(PACKAGES))
    return image_cache.cached("debian-12-cloudinit", key, ".tar", build)


@dataclass
class Booted:
    d: Daemon
    key: Path            # the private key; key.pub went in with --ssh-key
    tmp: Path


def _exec(d: Daemon, *command: str) -> str:
    return d.cli("exec", "ci1", "--", *command).stdout


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    tmp = tmp_path_factory.mktemp("ctinit")
    tarball = _cloud_init_tarball()
    key = keygen(tmp / "id_ed25519")
    (tmp / "user-data").write_text(USER_DATA)
    with netns_daemon(tmp, "cti") as d:
        d.cli("network", "create", "lan", "--subnet", "10.92.0.0/24")
        d.cli("image", "import", str(tarball), "--alias", "debian-ci", timeout=600)
        d.cli("launch", "debian-ci", "ci1", "--network", "lan", "--ssh-key", f"{key}.pub",
              "--user-data", str(tmp / "user-data"),
              "--cloud-config", "write_files=[{path: /etc/cumulo-note, content: noted}]")
        status = cloud_init_done(d, "ci1", CLOUD_INIT_WAIT, 1.0)
        assert "status: done" in status, status + _exec(d, "tail", "-n", "30",
                                                         "/var/log/cloud-init.log")
        yield Booted(d, key, tmp)


def test_cloud_init_ran_the_seed_in_the_root(booted: Booted) -> None:
    d = booted.d
    # the NoCloud datasource, from the directory seed: Cumulo's meta-data
    r = _exec(d, "cloud-init", "query", "--format",
              "{{v1.platform}} {{v1.instance_id}} {{v1.local_hostname}}")
    assert r.split() == ["nocloud", "default_ci1", "ci1"], r
    assert "instance-id: default_ci1" in _exec(d, "cat", f"{SEED}/meta-data")
    # user-data: runcmd (once), --cloud-config's write_files, the hostname
    assert _exec(d, "cat", "/root/runcmd.txt") == "made-by-runcmd\n"
    assert _exec(d, "cat", "/etc/cumulo-note") == "noted"
    assert _exec(d, "hostname").strip() == "ci1"
    # --ssh-key: root's and the default user's authorized_keys
    pub = (booted.key.parent / f"{booted.key.name}.pub").read_text().split()[1]
    assert pub in _exec(d, "cat", "/root/.ssh/authorized_keys")
    assert pub in _exec(d, "cat", "/home/debian/.ssh/authorized_keys")
    # the seed is in the root's own files (the overlay's upper dir in the default pool):
    # checkpoints, root exports and migrations carry it; the container's root owns it, 0600
    upper = (d.state_dir / "storage/default/roots/default_ci1/upper" / SEED.lstrip("/")
             / "user-data")
    st = upper.stat()
    assert (st.st_uid, oct(st.st_mode & 0o777)) == (1_000_000, "0o600")
    assert "made-by-runcmd" in upper.read_text()


def test_a_restart_keeps_the_instance_id_and_runs_nothing_again(booted: Booted) -> None:
    d = booted.d
    d.cli("stop", "ci1", "--timeout", "60")
    d.cli("start", "ci1")
    status = cloud_init_done(d, "ci1", CLOUD_INIT_WAIT, 1.0)
    assert "status: done" in status, status
    assert _exec(d, "cat", "/root/runcmd.txt") == "made-by-runcmd\n"   # once per instance


@pytest.mark.parametrize(("args", "said"), [
    (("--user-data", "/nonexistent/user-data"), "cannot read user-data file"),
    (("--cloud-config", "Bad-Key=1"), "give a file or KEY=VALUE"),
    (("--cloud-config", "runcmd=[unclosed"), "is not YAML"),
    (("--ssh-key", "/nonexistent/key.pub"), "cannot read SSH key file"),
])
def test_bad_input_fails_in_one_line_making_nothing(booted: Booted, args: tuple[str, ...],
                                                    said: str) -> None:
    d = booted.d
    r = d.cli("launch", "debian-ci", "bad1", "--network", "lan", *args, check=False)
    assert r.returncode != 0 and said in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "bad1" not in d.cli("list").stdout
    assert not (d.state_dir / "instances/default_bad1").exists()


def test_an_application_container_takes_no_seed(booted: Booted) -> None:
    d = booted.d
    bad = booted.tmp / "bad-user-data"
    bad.write_text("hello\n")
    for args, said in ((("--user-data", str(booted.tmp / "user-data")), "system container"),
                       (("--ssh-key", f"{booted.key}.pub"), "does not apply to this container"),
                       ):
        r = d.cli("launch", "debian-ci", "app1", "--network", "lan", *args, "--", "sleep",
                  "60", check=False)
        assert r.returncode != 0 and said in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = d.cli("launch", "debian-ci", "bad2", "--user-data", str(bad), check=False)
    assert r.returncode != 0 and "cloud-init would ignore it" in r.stderr, r.stderr
    listed = d.cli("list").stdout
    assert "app1" not in listed and "bad2" not in listed
