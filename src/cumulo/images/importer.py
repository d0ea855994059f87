"""Image import and export: files in, image payloads out.

`import_file` takes one uploaded file in a staging dir and turns it into an
image by what its bytes are (never by its name alone):

- a tarball (.tar, .tar.gz, .tar.xz) of a root filesystem -> kind container;
- a tarball of an OCI image layout (``oci-layout`` + ``index.json``) -> unpacked
  with ``umoci unpack`` (layers and whiteouts applied) into a rootfs whose command
  is the image config's entrypoint + cmd -> kind container;
- a qcow2 disk, or a raw one (named .raw/.img) -> kind vm-disk, checked with
  ``qemu-img info`` (and ``qemu-img check`` for qcow2).

A truncated or corrupt file fails with a one-line error and the staging dir is
removed. `export_argv` is the command streaming a rootfs out as tar.gz.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cumulo.errors import DriverError, InvalidInputError, UnsupportedError
from cumulo.host.tools import not_installed
from cumulo.images import kinds, system
from cumulo.images.files import ImageFiles, ImageMeta, ImageRecord, remove_tree

Progress = Callable[[float, str], None]

UPLOAD = "upload"                     # the uploaded file's name in the staging dir
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
TOOL_TIMEOUT = 1800.0
# PID 1 for an imported rootfs that has a shell and no command of its own
SHELL_LOOP = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $! || sleep 1; done"]

_QCOW2_MAGIC = b"QFI\xfb"
_GZIP_MAGIC = b"\x1f\x8b"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_RAW_SUFFIXES = (".raw", ".img")


def _noop(_fraction: float, _message: str) -> None:
    pass


def check_sha256(expected: str | None) -> str | None:
    """Normalise a user-given hex sha256 (or None)."""
    if expected is None or expected == "":
        return None
    value = expected.strip().lower()
    if not SHA_RE.match(value):
        raise InvalidInputError(f"--sha256 {expected!r} is not 64 hex digits")
    return value


def checksum_error(expected: str, actual: str) -> InvalidInputError:
    return InvalidInputError(
        f"checksum mismatch: expected sha256 {expected[:16]}..., the file has "
        f"{actual[:16]}...; nothing was imported")


def _run(argv: list[str], what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT,
                              check=False, env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError:
        raise not_installed(argv[0], what) from None
    except (OSError, subprocess.SubprocessError) as err:
        raise DriverError(f"cannot {what}: {err}") from err
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Exiting with failure status" not in ln
                  and "Removing leading" not in ln]   # GNU tar's summary and warnings
        lines = errors[:1] or lines   # the first error says which member and why
        raise InvalidInputError(f"cannot {what}: {lines[-1] if lines else 'exit status '}"
                                f"{'' if lines else proc.returncode}")
    return proc.stdout


def sniff(path: Path, filename: str) -> str:
    """"qcow2", "raw", "tar" (maybe compressed) or an error saying what it is not."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError as err:
        raise DriverError(f"cannot read the upload: {err}") from err
    if not head:
        raise InvalidInputError("the file is empty")
    if head.startswith(_QCOW2_MAGIC):
        return "qcow2"
    if head.startswith(_GZIP_MAGIC) or head.startswith(_XZ_MAGIC) or head[257:262] == b"ustar":
        return "tar"
    if filename.lower().endswith(_RAW_SUFFIXES):
        return "raw"
    raise InvalidInputError(
        f"{filename or 'the file'} is not a rootfs or OCI tarball (.tar, .tar.gz, .tar.xz), "
        "a qcow2 disk, or a raw disk named .raw/.img")


def _disk(staging: Path, upload: Path, fmt: str, progress: Progress) -> ImageMeta:
    progress(0.3, f"checking the {fmt} disk")
    info = json.loads(_run(["qemu-img", "info", "--output=json", "-f", fmt, str(upload)],
                           f"read the {fmt} disk"))
    if fmt == "qcow2":
        _run(["qemu-img", "check", "-q", "-f", "qcow2", str(upload)], "check the qcow2 disk")
        if info.get("backing-filename"):
            raise InvalidInputError("a qcow2 disk with a backing file cannot be imported alone")
        specific = (info.get("format-specific") or {}).get("data") or {}
        if specific.get("data-file"):   # its data would be a file elsewhere on the host
            raise InvalidInputError("a qcow2 disk with an external data file cannot be imported")
    elif info.get("virtual-size", 0) % 512 or not info.get("virtual-size"):
        raise InvalidInputError("a raw disk must be a non-empty multiple of 512 bytes")
    upload.rename(staging / f"disk.{fmt}")
    size = int(info.get("virtual-size", 0))
    return ImageMeta(kind=kinds.VM_DISK, os="disk", release="",
                     architecture=os.uname().machine,
                     description=f"{fmt} disk, {size >> 20} MiB virtual",
                     properties={"source": "import", "format": fmt, "virtual_size": str(size)})


def _tar_names(upload: Path) -> list[str]:
    """The member names of a (compressed) tarball; a truncated one is an error here."""
    try:
        with tarfile.open(upload, "r:*") as tar:
            return [m.name for m in tar]
    except (tarfile.TarError, EOFError, OSError) as err:
        raise InvalidInputError(f"not a readable tarball (truncated or corrupt?): {err}") from None


def _extract(upload: Path, into: Path) -> None:
    """GNU tar as root: owners, modes, devices and xattrs kept; no path leaves ``into``."""
    into.mkdir(exist_ok=True)
    _run(["tar", "-x", "-f", str(upload), "-C", str(into), "--numeric-owner",
          "--same-owner", "--same-permissions", "--xattrs", "--xattrs-include=*"],
         "unpack the tarball")


def _os_release(rootfs: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for rel in ("etc/os-release", "usr/lib/os-release"):
        path = rootfs / rel
        if path.is_symlink() or not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                out[key.strip()] = value.strip().strip('"')
        break
    return out


def _has_shell(rootfs: Path) -> bool:
    sh = rootfs / "bin/sh"
    return sh.is_symlink() or sh.exists()


def _rootfs_meta(rootfs: Path, command: list[str], props: dict[str, str]) -> ImageMeta:
    osr = _os_release(rootfs)
    return ImageMeta(
        kind=kinds.CONTAINER, os=osr.get("ID", ""), release=osr.get("VERSION_ID", ""),
        architecture=os.uname().machine,
        description=osr.get("PRETTY_NAME", "") or "imported root filesystem",
        command=command, properties=props)


def _is_oci_layout(names: list[str]) -> bool:
    """``oci-layout`` and ``index.json`` at the top, or one folder down."""
    short = {n.removeprefix("./") for n in names}
    for top in ("", *{n.split("/")[0] + "/" for n in short if "/" in n}):
        if f"{top}oci-layout" in short and f"{top}index.json" in short:
            return True
    return False


def _oci(staging: Path, upload: Path, progress: Progress) -> ImageMeta:
    layout = staging / "oci"
    progress(0.3, "unpacking the OCI layout")
    _extract(upload, layout)
    upload.unlink()
    top = layout
    if not (top / "index.json").is_file():   # the layout one folder down in the tarball
        subs = [p for p in layout.iterdir() if (p / "index.json").is_file()]
        if len(subs) != 1:
            raise InvalidInputError("the OCI tarball has no single image layout in it")
        top = subs[0]
    try:
        index = json.loads((top / "index.json").read_text())
        manifests: list[dict[str, Any]] = index["manifests"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InvalidInputError(f"the OCI index.json is not valid: {err}") from None
    if len(manifests) != 1:
        raise InvalidInputError(
            f"the OCI layout holds {len(manifests)} images: import a layout with exactly one")
    ref = (manifests[0].get("annotations") or {}).get("org.opencontainers.image.ref.name")
    if not ref:
        raise InvalidInputError("the OCI image has no tag (org.opencontainers.image.ref.name)")
    image = f"{top}:{ref}"
    bundle = staging / "bundle"
    progress(0.5, "applying the layers (umoci unpack)")
    _run(["umoci", "unpack", "--image", image, str(bundle)], "unpack the OCI image with umoci")
    try:
        config = json.loads((bundle / "config.json").read_text())
        args = [str(a) for a in config.get("process", {}).get("args") or []]
    except (OSError, ValueError, AttributeError) as err:
        raise InvalidInputError(f"umoci made no usable runtime config: {err}") from None
    (bundle / "rootfs").rename(staging / kinds.ROOTFS)
    remove_tree(bundle)
    remove_tree(layout)
    rootfs = staging / kinds.ROOTFS
    props = {"source": "oci", "oci_ref": ref, "entrypoint": json.dumps(args)}
    if not args and _has_shell(rootfs):
        args = list(SHELL_LOOP)
    return _rootfs_meta(rootfs, args, props)


def _rootfs_tarball(staging: Path, upload: Path, progress: Progress) -> ImageMeta:
    progress(0.3, "unpacking the root filesystem")
    rootfs = staging / kinds.ROOTFS
    _extract(upload, rootfs)
    upload.unlink()
    if not any(rootfs.iterdir()):
        raise InvalidInputError("the tarball is empty")
    # a tree with /sbin/init boots it in a system container (images/system.py)
    return _rootfs_meta(rootfs, list(SHELL_LOOP) if _has_shell(rootfs) else [],
                        {"source": "import", **system.prepare(rootfs)})


def import_file(files: ImageFiles, staging: Path, filename: str, sha256: str,
                progress: Progress | None = None) -> ImageRecord:
    """Turn ``staging/upload`` into an image; the staging dir is gone afterwards either way."""
    report = progress or _noop
    upload = staging / UPLOAD
    try:
        kind = sniff(upload, filename)
        report(0.1, f"reading the {kind} file")
        if kind in ("qcow2", "raw"):
            meta = _disk(staging, upload, kind, report)
        else:
            if _is_oci_layout(_tar_names(upload)):
                if shutil.which("umoci") is None:
                    raise UnsupportedError("umoci is not installed: apt-get install umoci")
                meta = _oci(staging, upload, report)
            else:
                meta = _rootfs_tarball(staging, upload, report)
        meta.properties["file"] = filename
        meta.properties["file_sha256"] = sha256
        report(0.9, "hashing and importing")
        record = files.import_tree(staging, meta)
    except BaseException:
        if staging.exists():
            remove_tree(staging)
        raise
    report(1.0, f"image {record.sha256[:12]} ready")
    return record


def export_argv(rootfs: Path) -> list[str]:
    """``tar`` writing the rootfs as tar.gz to stdout, owners kept as numbers."""
    return ["tar", "-c", "-z", "-f", "-", "-C", str(rootfs), "--numeric-owner", "--xattrs",
            "--sort=name", "."]
