"""The debian/<release> builder: a Debian root filesystem made by mmdebstrap from the mirror.

The only network source is the Debian mirror (``MIRROR``). Downloaded .debs are
kept in ``/var/cache/cumulo/debs/<suite>`` (mmdebstrap's sync-in / sync-out
hooks, under a file lock) so the next build of the same suite downloads only
what changed. mmdebstrap runs in its own mount and pid namespaces (``unshare``):
the /proc, /sys and /dev it mounts inside the tree vanish with it, even when it
is killed, so removing a failed build can never reach into the host's /dev. It
dies with the daemon (``setpriv --pdeathsig KILL``), even a SIGKILLed one, and apt
and dpkg with it (the pid namespace ends with its pid 1); the
next start removes the staging dir.
Cancelling (Ctrl-C in the CLI) kills its whole process group and removes the
staging dir: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import selectors
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cumulo.errors import DriverError, InvalidInputError, UnsupportedError
from cumulo.host.procs import kill_group
from cumulo.host.tools import not_installed
from cumulo.images import bootdisk, kinds, system
from cumulo.images.files import ImageFiles, ImageMeta, ImageRecord, remove_tree
from cumulo.storage.tools import run

Progress = Callable[[float, str], None]

MIRROR = "http://deb.debian.org/debian"
CACHE_ROOT = Path("/var/cache/cumulo/debs")
MMDEBSTRAP = "mmdebstrap"
TIMEOUT = 1800.0                      # a whole build, seconds
POLL = 0.5                            # how often a quiet build checks for cancel

RELEASES = {"11": "bullseye", "12": "bookworm", "13": "trixie"}
VARIANTS = ("minbase", "essential", "apt", "required", "important", "standard")
DEFAULT_VARIANT = "minbase"
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")   # Debian policy 5.6.1

# mmdebstrap's "I:" stage lines -> (fraction done, what the user sees)
_STAGES = (
    ("running apt-get update", 0.08, "reading the package lists"),
    ("downloading packages", 0.15, "downloading packages"),
    ("extracting archives", 0.40, "extracting archives"),
    ("installing essential packages", 0.50, "installing essential packages"),
    ("installing remaining packages", 0.70, "installing packages"),
    ("running special hook: sync-out", 0.88, "caching downloaded packages"),
    ("cleaning package lists", 0.92, "cleaning up"),
)

# what a VM booting from its own disk needs: Debian's kernel and initramfs, an init with
# udev, DHCP by systemd-networkd, the QEMU guest agent, a login on the serial console;
# dbus: hostnamed takes the name from the DHCP lease, logind powers off on the ACPI button;
# cloud-init reads the NoCloud seed Cumulo gives each VM (SSH keys, user-data, hostname),
# sudo for its default user; Debian's signed boot chain for UEFI secure boot (shim signed
# by Microsoft, GRUB and the kernel by Debian; mokutil comes with shim)
VM_PACKAGES = ("linux-image-amd64", "systemd-sysv", "udev", "dbus", "qemu-guest-agent",
               "iproute2", "openssh-server", "cloud-init", "sudo", "shim-signed",
               "grub-efi-amd64-signed")
VM_DISK_SIZE = 2048 * 1024 * 1024     # virtual; the qcow2 costs what the tree fills

# PID 1 until told to stop (the same loop as the busybox image: dash runs it too)
COMMAND = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $! || sleep 1; done"]


@dataclass(frozen=True)
class DebianSpec:
    """What to build: ``release`` "12", its ``suite`` "bookworm", variant, extra packages."""

    release: str
    suite: str
    variant: str = DEFAULT_VARIANT
    packages: tuple[str, ...] = ()
    vm: bool = False                 # a bootable disk (images/bootdisk.py), not a tree


def parse_spec(release: str | None, variant: str | None,
               packages: list[str] | tuple[str, ...] | None, vm: bool = False) -> DebianSpec:
    """Validate the request before anything is started (one-line errors)."""
    if not release:
        raise InvalidInputError(
            f"which Debian release? use debian/{'|'.join(RELEASES)} (e.g. debian/12)")
    suite = RELEASES.get(release)
    if suite is None:
        by_name = {v: k for k, v in RELEASES.items()}
        if release not in by_name:
            raise InvalidInputError(
                f"unknown Debian release {release!r}: use one of "
                f"{', '.join(RELEASES)} ({', '.join(RELEASES.values())})")
        release, suite = by_name[release], release
    variant = variant or DEFAULT_VARIANT
    if variant not in VARIANTS:
        raise InvalidInputError(
            f"unknown variant {variant!r}: use one of {', '.join(VARIANTS)}")
    names = tuple(dict.fromkeys(p.strip() for p in packages or () if p.strip()))
    for name in names:
        if not _PACKAGE_RE.match(name):
            raise InvalidInputError(
                f"invalid package name {name!r}: Debian names use a-z, 0-9, '+', '-', '.'")
    if vm:
        names = tuple(dict.fromkeys((*VM_PACKAGES, *names)))
    return DebianSpec(release=release, suite=suite, variant=variant, packages=names, vm=vm)


def _noop(_fraction: float, _message: str) -> None:
    pass


def mmdebstrap_argv(spec: DebianSpec, target: Path, cache: Path) -> list[str]:
    """The whole command line, in a private mount namespace that dies with it."""
    argv = [
        # killed with the daemon's worker thread, even by SIGKILL (no orphaned build)
        "setpriv", "--pdeathsig", "KILL",
        # own mount and pid namespaces: when mmdebstrap (pid 1 there) dies, so do apt and dpkg
        "unshare", "--mount", "--pid", "--propagation", "private", "--fork", "--kill-child",
        MMDEBSTRAP, "--mode=root", "--format=directory", f"--variant={spec.variant}",
        "--skip=essential/unlink",   # keep the essential .debs until sync-out copies them
        "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/",
        f"--setup-hook=sync-in {cache} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {cache}",
    ]
    if spec.packages:
        argv.append(f"--include={','.join(spec.packages)}")
    return [*argv, spec.suite, str(target), MIRROR]


LOCK_POLL = 0.5   # seconds between tries of a cache lock another build holds


@contextlib.contextmanager
def cache_lock(cache: Path, progress: Progress = _noop) -> Iterator[None]:
    """One build at a time per cache dir (a suite's packages: sync-out must not race a
    sync-in; a kernel configuration's object tree). While another build holds it, the
    wait says so through ``progress``, which raises when the operation is cancelled or
    the daemon stops: a build waiting here can be cancelled."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = open(cache.parent / f".{cache.name}.lock", "w")  # noqa: SIM115
    except OSError as err:
        raise DriverError(f"cannot use the cache {cache}: {err}") from err
    with lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                progress(0.01, f"waiting for another build that uses {cache}")
                time.sleep(LOCK_POLL)
        yield


def _error_line(lines: list[str]) -> str:
    """The most telling line of a failed run: apt's E: first, then mmdebstrap's."""
    for prefix in ("E: Unable to locate package", "E: Package", "E: "):
        for line in lines:
            if line.startswith(prefix) and "mmdebstrap" not in line:
                return line.removeprefix("E: ")
    return lines[-1] if lines else "no output"


def run_mmdebstrap(argv: list[str], progress: Progress, staging: Path,
                   timeout: float = TIMEOUT) -> None:
    """Run it, turning its stage lines into progress; ``progress`` may raise to cancel.
    Its temp files (a gpg home, ...) go to a dir of its own in the build's ``staging``
    dir, removed afterwards: a killed mmdebstrap leaves them behind, and a killed daemon
    its staging dir, which the next start removes."""
    with tempfile.TemporaryDirectory(prefix=".mmdebstrap-tmp-", dir=staging) as tmp:
        _run_mmdebstrap(argv, progress, timeout, tmp)


def _run_mmdebstrap(argv: list[str], progress: Progress, timeout: float, tmp: str) -> None:
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                env={**os.environ, "LC_ALL": "C.UTF-8", "TMPDIR": tmp})
    except OSError as err:
        raise DriverError(f"cannot run {argv[0]}: {err}") from err
    lines: list[str] = []
    fraction, message = 0.02, "starting mmdebstrap"
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                progress(fraction, message)   # raises when the operation is cancelled
                if time.monotonic() > deadline:
                    raise DriverError(f"mmdebstrap took longer than {timeout:.0f}s")
                if not sel.select(POLL):
                    continue
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line.rstrip())
                del lines[:-200]
                for needle, at, text in _STAGES:
                    if needle in line and at > fraction:
                        fraction, message = at, text
        proc.wait(30)
    except BaseException:
        kill_group(proc)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    if proc.returncode != 0:
        raise DriverError(f"mmdebstrap failed: {_error_line(lines)}")


def _tidy(rootfs: Path) -> None:
    """Drop what mmdebstrap copied from the host: its hostname and resolver."""
    for name in ("hostname", "resolv.conf"):
        path = rootfs / "etc" / name
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_text("")
        path.chmod(0o644)


def _debian_version(rootfs: Path) -> str:
    try:
        return (rootfs / "etc/debian_version").read_text().strip()
    except OSError:
        return ""


def build_debian(files: ImageFiles, spec: DebianSpec, progress: Progress | None = None,
                 customize: Callable[[Path], None] | None = None) -> ImageRecord:
    """Build ``debian/<release>`` into ``files``; nothing stays behind when it fails.
    ``customize`` (a VM disk only) changes the tree before its disk is made (the tests
    trim their image with it)."""
    report = progress or _noop
    if os.geteuid() != 0:
        raise UnsupportedError("building a Debian image needs root (mmdebstrap --mode=root)")
    for tool in (MMDEBSTRAP, "unshare", "setpriv"):
        if not any(Path(d, tool).exists() for d in os.get_exec_path()):
            raise not_installed(tool, "build Debian images")
    if spec.vm:
        return _build_vm(files, spec, report, customize)
    with files.staged(f"building debian/{spec.release}", rootfs=False) as staging:
        rootfs = staging / kinds.ROOTFS
        cache = CACHE_ROOT / spec.suite
        with cache_lock(cache, report):
            run_mmdebstrap(mmdebstrap_argv(spec, rootfs, cache), report, staging)
        report(0.94, "tidying /etc")
        _tidy(rootfs)
        boot = system.prepare(rootfs)   # with systemd-sysv: a system image
        version = _debian_version(rootfs)
        meta = ImageMeta(
            os="debian", release=spec.release, architecture=os.uname().machine,
            kind=kinds.CONTAINER,
            description=f"Debian {spec.release} ({spec.suite}) {spec.variant}"
                        + (f" + {', '.join(spec.packages)}" if spec.packages else ""),
            command=list(COMMAND),
            properties={"source": "mmdebstrap", "mirror": MIRROR, "suite": spec.suite,
                        "variant": spec.variant, "packages": ",".join(spec.packages),
                        "debian_version": version, **boot},
        )
        report(0.96, "hashing and importing")
        record = files.import_tree(staging, meta)
    report(1.0, f"image {record.sha256[:12]} ready")
    return record


def _build_vm(files: ImageFiles, spec: DebianSpec, report: Progress,
              customize: Callable[[Path], None] | None) -> ImageRecord:
    """A vm-disk image: the tree made by mmdebstrap, then a bootable qcow2 of it."""
    if not bootdisk.has_grub()[0]:
        raise not_installed("grub-mkimage", "make a BIOS-bootable disk (grub-pc-bin)")
    with files.staged(f"building debian/{spec.release} --vm", rootfs=False) as staging:
        tree = staging / "tree"
        cache = CACHE_ROOT / spec.suite
        with cache_lock(cache, report):
            run_mmdebstrap(mmdebstrap_argv(spec, tree, cache), report, staging)
        report(0.90, "making the bootable disk")
        _tidy(tree)
        system.prepare_vm(tree)
        if customize is not None:
            customize(tree)
        version = _debian_version(tree)
        secure = bootdisk.signed_chain(tree)
        work = staging / "work"
        work.mkdir()
        raw = work / "disk.raw"
        bootdisk.make_disk(tree, raw, VM_DISK_SIZE, work)
        remove_tree(tree)
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
             str(staging / "disk.qcow2")])
        remove_tree(work)
        uefi = bootdisk.has_grub()[1] or secure
        meta = ImageMeta(
            os="debian", release=spec.release, architecture=os.uname().machine,
            kind=kinds.VM_DISK,
            description=f"Debian {spec.release} ({spec.suite}) bootable disk"
                        f" ({'BIOS and UEFI' if uefi else 'BIOS'}"
                        f"{', secure boot' if secure else ''})",
            properties={"source": "mmdebstrap", "mirror": MIRROR, "suite": spec.suite,
                        "variant": spec.variant, "packages": ",".join(spec.packages),
                        "debian_version": version, "format": "qcow2",
                        "virtual_size": str(VM_DISK_SIZE),
                        "firmware": "bios,uefi" if uefi else "bios",
                        "agent": "qemu-guest-agent", "instance": "system",
                        "secureboot": "true" if secure else "false"},
        )
        report(0.96, "hashing and importing")
        record = files.import_tree(staging, meta)
    report(1.0, f"image {record.sha256[:12]} ready")
    return record
