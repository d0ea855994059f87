"""VMs that boot from their own disk: the Debian disk the VM tests boot, and bad input.

The disk (Debian's kernel, initramfs and GRUB, made by ``image build debian/12 --vm``)
is built once (the same builder the daemon runs, from the Debian mirror) and kept in
``/var/cache/cumulo/test-images`` under a key of the sources that make it, so a run
only builds it again when those change. Its boots are tested where a guest is booted
anyway (a Debian boot on TCG takes minutes): one guest through UEFI with secure boot,
a vTPM and cloud-init (DHCP, exec, file push/pull, migration, a clean ACPI power-off)
and GRUB's part through SeaBIOS, in test_vm_debian_guest.py. Here: a disk with nothing
to boot fails with the console's words, leaving nothing. The daemon runs in its own
netns.
"""

from __future__ import annotations

import inspect
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import cumulo.images.bootdisk
import cumulo.images.debian
import cumulo.images.system
from cumulo.images import debian
from cumulo.images.files import ImageFiles
from tests.system import image_cache
from tests.system.conftest import Daemon, netns_daemon

# the first run of a change to the disk's sources builds it (~5 min) inside the first test
pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow,
              pytest.mark.timeout(1200)]
BOOT_WAIT = 600.0     # a whole Debian on TCG on a loaded 2-core host

# The tests' disk is the builder's (what `image build debian/12 --vm` gives users) less
# work no test looks at that every boot pays for on TCG (seconds of a 1-vCPU guest on a
# 2-core host running 3 test workers, found with `systemd-analyze blame` and `cloud-init
# analyze blame` in a booted test guest). cloud-init: host keys of one type (RSA 3072 and
# the others took 20 s of the first boot), no modules the tests do not check (printing
# the keys, Debian's GRUB debconf, apt's sources, the locale, ...).
TEST_CLOUD_CFG = "etc/cloud/cloud.cfg.d/95_cumulo_tests.cfg"
TEST_SSH_KEY_TYPES = ["ed25519"]
TEST_SKIPPED_MODULES = frozenset({
    "snap", "ssh-import-id", "keyboard", "locale", "grub-dpkg", "apt-pipelining",
    "apt-configure", "ntp", "timezone", "disable-ec2-metadata", "byobu",
    "package-update-upgrade-install", "fan", "landscape", "lxd", "puppet", "chef",
    "mcollective", "salt-minion", "reset_rmc", "refresh_rmc_and_interface",
    "rightscale_userdata", "ssh-authkey-fingerprints", "keys-to-console", "phone-home"})
# systemd: e2scrub_reap (no LVM here; 28 s of CPU at each boot) and the fsck of a root
# file system made by the builder (on the boot's critical chain)
TEST_MASKED_UNITS = ("e2scrub_reap.service", "systemd-fsck-root.service")


def _module_name(entry: str | list[str]) -> str:
    return (entry if isinstance(entry, str) else entry[0]).replace("_", "-")


def _trim_for_tests(tree: Path) -> None:
    """The tests' changes to the disk's tree (see TEST_SKIPPED_MODULES)."""
    base = yaml.safe_load((tree / "etc/cloud/cloud.cfg").read_text())
    skipped = {m.replace("_", "-") for m in TEST_SKIPPED_MODULES}
    cfg: dict[str, object] = {"ssh_genkeytypes": TEST_SSH_KEY_TYPES}
    for stage in ("cloud_init_modules", "cloud_config_modules", "cloud_final_modules"):
        cfg[stage] = [e for e in base[stage] if _module_name(e) not in skipped]
    (tree / TEST_CLOUD_CFG).write_text("# Cumulo's tests: only what they check\n"
                                       + yaml.safe_dump(cfg))
    for unit in TEST_MASKED_UNITS:
        (tree / "etc/systemd/system" / unit).symlink_to("/dev/null")


def _debian_vm_disk() -> Path:
    """The built debian/12 --vm disk, from the cache when its sources did not change."""
    key = image_cache.source_key(
        (cumulo.images.bootdisk, cumulo.images.debian, cumulo.images.system),
        repr((TEST_CLOUD_CFG, TEST_SSH_KEY_TYPES, sorted(TEST_SKIPPED_MODULES),
              TEST_MASKED_UNITS, inspect.getsource(_trim_for_tests))))

    def build(tmp: Path) -> Path:
        files = ImageFiles(tmp)
        record = debian.build_debian(files, debian.parse_spec("12", None, [], vm=True),
                                     customize=_trim_for_tests)
        assert record.kind == "vm-disk"
        return files.root / record.sha256 / "disk.qcow2"

    return image_cache.cached("debian-12-vm", key, ".qcow2", build)


@pytest.fixture(scope="module")
def vm_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with netns_daemon(tmp_path_factory.mktemp("vmboot"), "vmb") as d:
        d.cli("network", "create", "lan", "--subnet", "10.95.0.0/24")
        yield d


def _instance(d: Daemon, name: str) -> dict[str, Any]:
    with d.client() as c:
        return c.instance(name)


def _qemus(d: Daemon, name: str) -> list[str]:
    """The QEMU of ``d``'s instance ``name`` (another run on the machine may have one of
    that name: its state dir differs)."""
    out = subprocess.run(["pgrep", "-af", f"guest=default_{name},"], capture_output=True,
                         text=True, check=False).stdout
    return [ln for ln in out.splitlines() if "qemu-system" in ln and f"{d.state_dir}/" in ln]


def test_a_disk_with_nothing_to_boot_is_a_clear_error(vm_daemon: Daemon,
                                                      tmp_path: Path) -> None:
    d = vm_daemon
    empty = tmp_path / "empty.raw"
    with open(empty, "wb") as f:
        f.truncate(16 * 2**20)
    d.cli("image", "import", str(empty), "--alias", "empty")
    # (SeaBIOS's words on the console: before it was told its console port as an integer
    # it said nothing, and this waited 60 s for a bootloader)
    for fw, said in (("uefi", "found nothing to boot on its disk: BdsDxe: failed to load"),
                     ("bios", "found nothing to boot on its disk: Boot failed: not a bootable"
                              " disk")):
        r = d.cli("launch", "empty", f"e-{fw}", "--type", "vm", "--firmware", fw,
                  "--network", "lan", check=False, timeout=300)
        assert r.returncode != 0 and said in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert not _qemus(d, f"e-{fw}")
        assert "e-" not in d.cli("list").stdout
    # and the direct-kernel options are refused for it
    r = d.cli("launch", "empty", "e2", "--type", "vm", "--machine", "microvm", check=False)
    assert r.returncode != 0 and "microvm has no firmware" in r.stderr
    r = d.cli("launch", "empty", "e3", check=False)
    assert r.returncode != 0 and "vm-disk image" in r.stderr
