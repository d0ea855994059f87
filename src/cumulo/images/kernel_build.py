"""``cumulo image build kernel``: a guest kernel specialised for app VMs, from Debian's
own kernel source (``linux-source``), built on this machine.

Steps: unpack ``/usr/src/linux-source-<v>.tar.xz``, ``make tinyconfig``, merge the
profile's fragment (`kernel_config`), ``make olddefconfig``, check every asked option
held, ``make vmlinux bzImage``, strip vmlinux (PVH boots it on microvm), and import
``boot/`` as a ``kernel`` image, its vmlinux without the alignment padding
(`kernel_elf`: 2.5 MiB instead of 10.8). The object tree stays in a cache keyed on the source
version, the compiler and the fragment (``/var/cache/cumulo/kernel-builds/<key>``): a
second build is a cache hit, and an entry whose result is damaged is rebuilt there (make
redoes only what is missing). The unpacked source is removed after each build.

Reproducible: the build time, user, host and version that the kernel embeds are fixed,
and a key always builds in the same directory, so the same key gives the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cumulo.errors import DriverError, UnsupportedError
from cumulo.host.procs import kill_group
from cumulo.host.tools import not_installed
from cumulo.images import kernel_config, kernel_elf
from cumulo.images.debian import cache_lock
from cumulo.images.files import ImageFiles, ImageMeta, ImageRecord, remove_tree

Progress = Callable[[float, str], None]

CACHE = Path("/var/cache/cumulo/kernel-builds")
SOURCE_DIR = Path("/usr/src")
TOOLS = ("make", "gcc", "flex", "bison", "bc", "strip", "tar")
LIBELF_HEADER = Path("/usr/include/gelf.h")     # objtool links libelf
RESULT_FILES = ("vmlinux", "bzImage", "config")
BUILD_TIMEOUT = 3 * 3600
FIXED_ENV = {   # what the kernel would otherwise take from the clock and the machine
    "KBUILD_BUILD_TIMESTAMP": "1970-01-01 00:00:00 UTC", "KBUILD_BUILD_USER": "cumulo",
    "KBUILD_BUILD_HOST": "cumulo", "KBUILD_BUILD_VERSION": "1", "LC_ALL": "C",
}


@dataclass(frozen=True)
class Source:
    """Debian's kernel source package on this host."""

    package: str          # linux-source-6.1
    version: str          # 6.1.192-3 (the package's)
    tarball: Path


def find_source(root: Path = SOURCE_DIR) -> Source:
    """The newest ``linux-source-*.tar.xz``; one line naming the package when missing."""
    found = sorted(root.glob("linux-source-*.tar.xz"))
    if not found:
        raise UnsupportedError("the kernel source is not installed (needed to build a kernel):"
                               " apt-get install linux-source, or run scripts/install.sh")
    tarball = found[-1]
    package = tarball.name.removesuffix(".tar.xz")
    try:
        version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = ""
    return Source(package, version or str(tarball.stat().st_mtime_ns), tarball)


def check_toolchain() -> str:
    """The compiler's version line; one line naming what is missing."""
    for tool in TOOLS:
        if shutil.which(tool) is None:
            raise not_installed(tool, "build a kernel")
    if not LIBELF_HEADER.is_file():
        raise UnsupportedError("libelf-dev is not installed (needed to build a kernel):"
                               " apt-get install libelf-dev, or run scripts/install.sh")
    out = subprocess.run(["gcc", "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()[0] if out.stdout else "gcc"


@dataclass(frozen=True)
class Request:
    profile: str
    features: tuple[str, ...]

    @property
    def alias(self) -> str:
        return "kernel/" + "-".join((self.profile, *self.features))   # + is no alias character


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached(entry: Path) -> dict[str, str] | None:
    """The entry's result if every file is there with the hash it was built with."""
    try:
        info = json.loads((entry / "result" / "build.json").read_text())
        for name in RESULT_FILES:
            if _sha(entry / "result" / name) != info["sha256"][name]:
                return None
        return dict(info)
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _Make:
    """Runs the kernel's make in the entry's object tree, its output in a log. It polls
    ``progress`` (which raises when the operation is cancelled or the daemon stops) and
    then kills make's whole process group."""

    def __init__(self, src: Path, out: Path, log: Path, progress: Progress) -> None:
        self.src, self.out, self.log, self.progress = src, out, log, progress
        self.at = (0.1, "configuring")

    def __call__(self, *targets: str, jobs: int = 1) -> None:
        argv = ["make", "-s", f"-j{jobs}", f"O={self.out}", "ARCH=x86_64", *targets]
        deadline = time.monotonic() + BUILD_TIMEOUT
        with self.log.open("ab") as log:
            proc = subprocess.Popen(argv, cwd=self.src, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **FIXED_ENV}, start_new_session=True)
            try:
                while proc.poll() is None:
                    self.progress(*self.at)
                    if time.monotonic() > deadline:
                        raise DriverError(f"kernel build took longer than {BUILD_TIMEOUT}s")
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(1)
            except BaseException:
                kill_group(proc)
                raise
        if proc.returncode != 0:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-1:]
            raise DriverError(f"make {' '.join(targets)} failed (exit {proc.returncode}):"
                              f" {tail[0] if tail else 'no output'} (log: {self.log})")


def _configure(make: _Make, out: Path, fragment: str) -> None:
    make("tinyconfig")
    config = out / ".config"
    frag = kernel_config.requested(fragment)
    lines = [ln for ln in config.read_text().splitlines()
             if ln.partition("=")[0] not in frag
             and not any(ln == f"# {k} is not set" for k in frag)]
    lines += [f"{k}={v}" if v != "n" else f"# {k} is not set" for k, v in frag.items()]
    config.write_text("\n".join(lines) + "\n")
    make("olddefconfig")
    unmet = kernel_config.unmet(fragment, config.read_text())
    if unmet:
        raise DriverError(f"kernel configuration: {len(unmet)} option(s) did not take"
                          f" (a dependency is missing): {', '.join(unmet[:5])}")


def _build(entry: Path, source: Source, fragment: str, progress: Progress) -> dict[str, str]:
    """Unpack, configure, make; the result under ``entry/result``."""
    entry.mkdir(parents=True, exist_ok=True)
    out, result, log = entry / "obj", entry / "result", entry / "build.log"
    log.write_text("")
    src_parent = entry / "src"
    if src_parent.exists():      # a build killed half-way
        remove_tree(src_parent)
    src_parent.mkdir()
    started = time.monotonic()
    try:
        progress(0.02, f"unpacking {source.tarball.name}")
        subprocess.run(["tar", "-xf", str(source.tarball), "-C", str(src_parent)], check=True,
                       timeout=1800, capture_output=True)
        src = next(p for p in src_parent.iterdir() if p.is_dir())
        out.mkdir(exist_ok=True)
        make = _Make(src, out, log, progress)
        make.at = (0.1, "configuring (tinyconfig + profile)")
        _configure(make, out, fragment)
        make.at = (0.15, f"compiling on {os.cpu_count() or 1} CPUs (minutes the first time)")
        make("vmlinux", "bzImage", jobs=(os.cpu_count() or 1) + 1)
    except subprocess.CalledProcessError as err:
        raise DriverError(f"cannot unpack {source.tarball}: "
                          f"{err.stderr.decode(errors='replace').strip()[:200]}") from err
    finally:
        remove_tree(src_parent)
    progress(0.9, "stripping vmlinux")
    result.mkdir(exist_ok=True)
    subprocess.run(["strip", "-o", str(result / "vmlinux"), str(out / "vmlinux")], check=True,
                   timeout=300, capture_output=True)
    shutil.copyfile(out / "arch/x86/boot/bzImage", result / "bzImage")
    shutil.copyfile(out / ".config", result / "config")
    release = (out / "include/config/kernel.release").read_text().strip()
    info = {"release": release, "source": f"{source.package} {source.version}",
            "build_seconds": f"{time.monotonic() - started:.0f}",
            "sha256": {n: _sha(result / n) for n in RESULT_FILES}}
    (result / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    return {k: v for k, v in info.items() if isinstance(v, str)}


def build_kernel(files: ImageFiles, req: Request, progress: Progress,
                 cache: Path = CACHE, source_dir: Path = SOURCE_DIR) -> ImageRecord:
    """Build (or take from the cache) the kernel for ``req`` and import it as an image."""
    fragment = kernel_config.fragment(req.profile, req.features)
    source = find_source(source_dir)
    toolchain = check_toolchain()
    key = kernel_config.cache_key(f"{source.package} {source.version}", toolchain, fragment)
    entry = cache / key
    with cache_lock(entry, progress):   # one build per key at a time (two daemons, two tests)
        info = _cached(entry)
        hit = "yes" if info is not None else "no"
        if info is not None:
            progress(0.5, f"cache hit: {key[:12]}")
        else:
            try:
                info = _build(entry, source, fragment, progress)
            except (OSError, subprocess.SubprocessError) as err:
                raise DriverError(f"kernel build failed: {err}") from err
    meta = ImageMeta(
        os="linux", release=str(info["release"]), architecture="x86_64", kind="kernel",
        description=f"Linux {info['release']} for app VMs ({req.alias.split('/', 1)[1]}),"
                    f" from {info['source']}",
        properties={"profile": req.profile, "features": ",".join(req.features),
                    "config_key": key, "source": str(info["source"]),
                    "build_seconds": str(info["build_seconds"]), "cache_hit": hit})
    with files.staged("importing the kernel", rootfs=False) as staging:
        boot = staging / "boot"
        boot.mkdir()
        for name in ("bzImage", "config"):
            shutil.copyfile(entry / "result" / name, boot / name)
        # what microvm boots: the vmlinux without its 2 MiB alignment padding
        kernel_elf.compact(entry / "result" / "vmlinux", boot / "vmlinux")
        record = files.import_tree(staging, meta)
    progress(1.0, f"kernel {info['release']} ready ({'cache hit' if hit == 'yes' else 'built'})")
    return record
