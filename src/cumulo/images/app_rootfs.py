"""The ``app`` builder (`cumulo image build app --binary`): an image holding one program.

The rootfs has the empty directories a container needs (/proc, /dev, /tmp...), a
minimal /etc (passwd, group, hosts), the program at ``/bin/<name>`` and, when it
is dynamically linked, the loader and the libraries ``ldd`` finds for it, each at
the path ldd names (so the loader finds them where it looks). Its command is the
program. A static program (``gcc -static``, busybox-static) brings nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from cumulo.errors import DriverError, InvalidInputError, UnsupportedError
from cumulo.images import kinds
from cumulo.images.files import ImageFiles, ImageMeta, ImageRecord

Progress = Callable[[float, str], None]

_ELF_MAGIC = b"\x7fELF"
_ALIAS_SAFE = re.compile(r"[^a-z0-9._-]+")
# "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
_LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)\s*$")
_LDD_MISSING = re.compile(r"^\s*(\S+)\s+=>\s+not found")

_DIRS = {"bin": 0o755, "proc": 0o555, "sys": 0o555, "dev": 0o755, "tmp": 0o1777,
         "etc": 0o755, "root": 0o700, "run": 0o755}
_ETC = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "group": "root:x:0:\n",
    "hostname": "",
    "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}


def _noop(_fraction: float, _message: str) -> None:
    pass


def check_binary(binary: str | None) -> Path:
    """The program to package: an absolute path to an executable ELF file on this host."""
    if not binary:
        raise InvalidInputError("the app builder needs --binary PATH (the program to package)")
    path = Path(binary)
    if not path.is_absolute():
        raise InvalidInputError(f"--binary {binary!r} must be an absolute path")
    try:
        real = path.resolve(strict=True)
        with real.open("rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise InvalidInputError(f"cannot read --binary {binary}: {err.strerror}") from None
    if not real.is_file():
        raise InvalidInputError(f"--binary {binary} is not a regular file")
    if magic != _ELF_MAGIC:
        raise InvalidInputError(f"--binary {binary} is not an ELF program")
    if not os.access(real, os.X_OK):
        raise InvalidInputError(f"--binary {binary} is not executable")
    return path


def default_alias(program: Path) -> str:
    """The program's file name, made into a valid alias."""
    return _ALIAS_SAFE.sub("-", program.name.lower()).strip("-._") or "app"


def shared_objects(program: Path) -> list[Path]:
    """The loader and libraries a dynamic program needs (empty for a static one)."""
    try:
        proc = subprocess.run(["ldd", str(program)], capture_output=True, text=True,
                              timeout=30, env={"LC_ALL": "C", "PATH": os.defpath})
    except (OSError, subprocess.SubprocessError) as err:
        raise DriverError(f"cannot run ldd on {program}: {err}") from err
    text = proc.stdout + proc.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if proc.returncode != 0:
        raise DriverError(f"ldd {program} failed: {text.strip().splitlines()[-1:]}")
    missing = [m.group(1) for line in text.splitlines() if (m := _LDD_MISSING.match(line))]
    if missing:
        raise InvalidInputError(f"{program} needs libraries this host lacks: {', '.join(missing)}")
    return [Path(m.group(1)) for line in text.splitlines() if (m := _LDD_LINE.match(line))]


def _copy_in(rootfs: Path, source: Path, at: Path, mode: int) -> None:
    """Copy ``source``'s content (links followed) to ``rootfs/at``, making its folders."""
    target = rootfs / at.relative_to("/")
    for parent in reversed(target.relative_to(rootfs).parents[:-1]):
        d = rootfs / parent
        if not d.exists():
            d.mkdir(mode=0o755)
            d.chmod(0o755)
    shutil.copyfile(source, target)
    target.chmod(mode)


def _chown_root(rootfs: Path) -> None:
    try:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            os.lchown(dirpath, 0, 0)
            for name in filenames + [d for d in dirnames if os.path.islink(
                    os.path.join(dirpath, d))]:
                os.lchown(os.path.join(dirpath, name), 0, 0)
    except PermissionError as err:
        raise UnsupportedError("building images needs root (files must be owned by 0:0)") from err


def build_app(files: ImageFiles, program: Path, progress: Progress | None = None
              ) -> ImageRecord:
    """Package ``program`` (and, if dynamic, its loader and libraries) as an app image."""
    report = progress or _noop
    program = check_binary(str(program))
    report(0.05, "finding shared libraries")
    libs = shared_objects(program)
    name = default_alias(program) if program.name.startswith(".") else program.name
    inside = Path("/bin") / name
    with files.staged(f"building the app image of {program}") as staging:
        rootfs = staging / kinds.ROOTFS
        for rel, mode in _DIRS.items():
            (rootfs / rel).mkdir(exist_ok=True)
            (rootfs / rel).chmod(mode)
        for fname, text in _ETC.items():
            (rootfs / "etc" / fname).write_text(text)
            (rootfs / "etc" / fname).chmod(0o644)
        report(0.2, f"copying {program.name}")
        _copy_in(rootfs, program, inside, 0o755)
        for i, lib in enumerate(libs):
            report(0.2 + 0.5 * i / max(1, len(libs)), f"copying {lib.name}")
            _copy_in(rootfs, lib, lib, 0o755)
        _chown_root(rootfs)
        linking = f"dynamic, {len(libs)} shared objects" if libs else "static"
        meta = ImageMeta(
            os="app", release=name, architecture=os.uname().machine, kind=kinds.APP,
            description=f"{program.name} ({linking}) from {program}",
            command=[str(inside)],
            properties={"source": "binary", "program": str(program), "path": str(inside),
                        "linking": "dynamic" if libs else "static",
                        "libraries": ",".join(str(p) for p in libs)},
        )
        report(0.8, "hashing and importing")
        record = files.import_tree(staging, meta)
    report(1.0, f"image {record.sha256[:12]} ready")
    return record
