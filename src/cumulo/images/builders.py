"""Image builders: turn something on the host into a rootfs in the image file store.

The registry: `prepare(name, options)` checks a request (``busybox``,
``debian/<release>``, ``app``) before anything runs and returns the builder bound
to it; `build()` runs one. Each builder fills a staging dir and hands it to
`ImageFiles.import_tree`; on any failure (KeyboardInterrupt and operation cancel
included) the staging dir is removed, so an interrupted build leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cumulo.errors import DriverError, InvalidInputError, UnsupportedError
from cumulo.images import app_rootfs, debian, kernel_build, kernel_config
from cumulo.images.files import ImageFiles, ImageMeta, ImageRecord

Progress = Callable[[float, str], None]
Builder = Callable[[ImageFiles, Progress | None], ImageRecord]

BUSYBOX = Path("/bin/busybox")
# PID 1 must run until told to stop. A PID 1 ignores signals it has no handler
# for, hence the trap; `sleep & wait` (not a bare sleep) lets the trap run at
# once: SIGTERM to it as PID 1 under `unshare -pf --mount-proc` exits in ~1 ms
# (tests/integration/test_busybox_image.py). ash opens /dev/null for `&` jobs;
# without /dev (a bare chroot) that fails at once, and `|| sleep 1` keeps the
# loop from spinning (then SIGTERM takes up to 1 s).
BUSYBOX_COMMAND = [
    "/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $! || sleep 1; done",
]

_DIRS = {  # path -> mode; created in this order
    "bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
    "proc": 0o555, "sys": 0o555, "dev": 0o755, "tmp": 0o1777, "etc": 0o755,
    "root": 0o700, "run": 0o755, "var": 0o755, "var/tmp": 0o1777, "home": 0o755,
}

_ETC = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\n"
              "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "group": "root:x:0:\ntty:x:5:\nnobody:x:65534:\n",
    "hostname": "",
    "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}


def _noop(_fraction: float, _message: str) -> None:
    pass


def _busybox_output(*args: str) -> str:
    try:
        proc = subprocess.run(
            [str(BUSYBOX), *args], capture_output=True, text=True, timeout=10, check=True,
        )
    except subprocess.CalledProcessError as err:
        raise DriverError(f"busybox {' '.join(args)} failed: exit status {err.returncode}") from err
    except (OSError, subprocess.SubprocessError) as err:
        raise DriverError(f"cannot run {BUSYBOX}: {err}") from err
    return proc.stdout


def busybox_version() -> str:
    """"1.35.0" from the banner "BusyBox v1.35.0 (Debian ...) multi-call binary."."""
    m = re.search(r"BusyBox v(\d[\w.]*)", _busybox_output())
    if not m:
        raise DriverError("cannot read the busybox version from its banner")
    return m.group(1)


def _make_dirs(rootfs: Path) -> None:
    for rel, mode in _DIRS.items():
        path = rootfs / rel
        path.mkdir(exist_ok=True)
        path.chmod(mode)   # explicit: independent of the umask


def _install_busybox(rootfs: Path) -> None:
    target = rootfs / "bin/busybox"
    shutil.copyfile(BUSYBOX, target)   # a copy: the image must not change with the host
    target.chmod(0o755)


def _install_applets(rootfs: Path, applets: list[str], progress: Progress) -> None:
    """One symlink to /bin/busybox per applet path from ``busybox --list-full``."""
    for i, rel in enumerate(applets):
        link = rootfs / rel
        if link.parent != rootfs and not link.parent.exists():
            link.parent.mkdir(parents=True)
            link.parent.chmod(0o755)
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/bin/busybox")
        if i % 50 == 0:
            progress(0.3 + 0.5 * i / len(applets), f"linking applets ({i}/{len(applets)})")


def _write_etc(rootfs: Path, version: str) -> None:
    files = dict(_ETC)
    files["os-release"] = (
        f'NAME="BusyBox"\nID=busybox\nVERSION_ID="{version}"\n'
        f'PRETTY_NAME="BusyBox {version}"\n'
    )
    for name, text in files.items():
        path = rootfs / "etc" / name
        path.write_text(text)
        path.chmod(0o644)


def _chown_root(rootfs: Path) -> None:
    """Everything owned by 0:0 (symlinks themselves, not their targets)."""
    try:
        os.lchown(rootfs, 0, 0)
        for dirpath, dirnames, filenames in os.walk(rootfs):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), 0, 0)
    except PermissionError as err:
        raise UnsupportedError("building images needs root (files must be owned by 0:0)") from err


def build_busybox(files: ImageFiles, progress: Progress | None = None) -> ImageRecord:
    """A minimal container rootfs from the host's busybox-static."""
    report = progress or _noop
    if not BUSYBOX.is_file():
        raise UnsupportedError("busybox-static is not installed: apt-get install busybox-static")
    report(0.0, "reading busybox version and applets")
    version = busybox_version()
    applets = [
        line.strip().lstrip("/") for line in _busybox_output("--list-full").splitlines()
        if line.strip() and line.strip().lstrip("/") != "bin/busybox"
    ]
    meta = ImageMeta(
        os="busybox", release=version, architecture=os.uname().machine,
        description=f"BusyBox {version} from the host's busybox-static",
        command=list(BUSYBOX_COMMAND),
    )
    with files.staged("building the busybox image") as staging:
        rootfs = staging / "rootfs"
        report(0.1, "creating directories")
        _make_dirs(rootfs)
        report(0.2, "installing /bin/busybox")
        _install_busybox(rootfs)
        _install_applets(rootfs, applets, report)
        report(0.8, "writing /etc")
        _write_etc(rootfs, version)
        _chown_root(rootfs)
        report(0.9, "hashing and importing")
        record = files.import_tree(staging, meta)
    report(1.0, f"image {record.sha256[:12]} ready")
    return record


def _build_bench(files: ImageFiles, progress: Progress | None = None) -> ImageRecord:
    from cumulo.images.bench_image import build_bench  # imports this module

    return build_bench(files, progress)


BUILDERS: dict[str, Builder] = {"busybox": build_busybox, "bench": _build_bench}
NAMES = ("busybox", "bench", "debian/<release>", "app", "kernel")   # what `prepare` accepts


@dataclass(frozen=True)
class BuildOptions:
    """What a builder may be told besides its name; each builder takes only its own."""

    variant: str | None = None              # debian
    packages: tuple[str, ...] = ()          # debian
    binary: str | None = None               # app: a program on the daemon's host
    profile: str | None = None              # kernel: app
    features: tuple[str, ...] = ()          # kernel: net, block, rng
    vm: bool = False                        # debian: a disk VMs boot through firmware


@dataclass(frozen=True)
class Prepared:
    """A checked build request: the builder bound to its options, and its default alias."""

    name: str
    alias: str
    run: Builder


def _refuse_options(name: str, opts: BuildOptions, allowed: tuple[str, ...]) -> None:
    given = {"variant": opts.variant, "packages": opts.packages, "binary": opts.binary,
             "profile": opts.profile, "with": opts.features, "vm": opts.vm}
    for key, value in given.items():
        if value and key not in allowed:
            raise InvalidInputError(f"--{key} does not apply to the {name} builder")


def prepare(name: str, opts: BuildOptions | None = None) -> Prepared:
    """Check ``name`` and ``opts`` (one-line `InvalidInputError`); nothing is started."""
    opts = opts or BuildOptions()
    if name in BUILDERS:
        _refuse_options(name, opts, ())
        builder = BUILDERS[name]
        return Prepared(name, name, builder)
    family, _, release = name.partition("/")
    if family == "debian":
        _refuse_options("debian", opts, ("variant", "packages", "vm"))
        spec = debian.parse_spec(release, opts.variant, opts.packages, vm=opts.vm)
        suffix = "/vm" if spec.vm else ""
        return Prepared(f"debian/{spec.release}{suffix}", f"debian/{spec.release}{suffix}",
                        lambda files, progress: debian.build_debian(files, spec, progress))
    if name == "app":
        _refuse_options("app", opts, ("binary",))
        program = app_rootfs.check_binary(opts.binary)
        return Prepared("app", app_rootfs.default_alias(program),
                        lambda files, progress: app_rootfs.build_app(files, program, progress))
    if name == "kernel":
        _refuse_options("kernel", opts, ("profile", "with"))
        req = kernel_build.Request(opts.profile or "app",
                                   kernel_config.parse_features(",".join(opts.features)))
        kernel_config.fragment(req.profile, req.features)     # an unknown profile: now
        return Prepared("kernel", req.alias,
                        lambda files, progress: kernel_build.build_kernel(
                            files, req, progress or _noop))
    raise InvalidInputError(f"unknown image {name!r}: the builders are {', '.join(NAMES)}")


def build(name: str, files: ImageFiles, progress: Progress | None = None,
          opts: BuildOptions | None = None) -> ImageRecord:
    """Build the image called ``name`` into ``files``."""
    return prepare(name, opts).run(files, progress)

