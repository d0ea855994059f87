"""Content-addressed image files on disk: ``<root>/<sha256>/{<payload>,meta.json}``.

Only the file side: image names and lifecycle live in the store. A builder fills
``staging_dir() / "rootfs"`` (or puts a disk or a ``boot/`` folder there, see
`cumulo.images.kinds`); `ImageFiles.import_tree` hashes the payload and renames
the staging dir into place in one step (same filesystem), so ``<root>/<sha>``
either exists complete or not at all.

The sha256 covers sorted relative paths, file types, permission bits, owners,
symlink targets, device numbers and file contents; never mtimes or the absolute
path. Hardlinks are hashed as independent files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cumulo.errors import DriverError, InvalidInputError, NotFoundError
from cumulo.images import kinds

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class ImageMeta:
    """What a builder knows about the image it made (stored in meta.json)."""

    os: str = ""
    release: str = ""
    architecture: str = ""
    kind: str = "container"
    description: str = ""
    command: list[str] = field(default_factory=list)   # default PID 1
    properties: dict[str, str] = field(default_factory=dict)   # source, variant, format...


@dataclass(frozen=True, kw_only=True)
class ImageRecord(ImageMeta):
    """An imported image: its content hash, its rootfs size in bytes and its metadata."""

    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tree_sha256(top: Path) -> str:
    """Deterministic sha256 of the tree under ``top`` (see module docstring)."""
    outer = hashlib.sha256()
    try:
        for rel, path in _sorted_entries(top):
            st = path.lstat()
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(kind):
                payload = _file_digest(path)
            elif stat.S_ISLNK(kind):
                payload = os.fsencode(os.readlink(path))
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                payload = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}".encode()
            else:
                payload = b""   # directories, fifos, sockets: type and mode only
            head = f"{kind:o} {stat.S_IMODE(st.st_mode):o} {st.st_uid} {st.st_gid}".encode()
            for part in (rel, head, payload):
                outer.update(len(part).to_bytes(8, "big") + part)
    except OSError as err:
        raise DriverError(f"cannot hash image tree {top}: {err}") from err
    return outer.hexdigest()


def _sorted_entries(top: Path) -> list[tuple[bytes, Path]]:
    """Every entry below ``top`` (itself as ``.``), sorted by relative path bytes."""
    entries: list[tuple[bytes, Path]] = [(b".", top)]
    for dirpath, dirnames, filenames in os.walk(top, onerror=_raise):
        base = Path(dirpath)
        for name in dirnames + filenames:
            path = base / name
            entries.append((os.fsencode(path.relative_to(top)), path))
    entries.sort(key=lambda e: e[0])
    return entries


def _raise(err: OSError) -> None:
    raise err


def file_sha256(path: Path, on_chunk: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of one file's bytes; ``on_chunk(bytes_read)`` after each MiB."""
    h = hashlib.sha256()
    done = 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                done += len(chunk)
                if on_chunk:
                    on_chunk(done)
    except OSError as err:
        raise DriverError(f"cannot read {path}: {err}") from err
    return h.hexdigest()


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.digest()


def tree_size(top: Path) -> int:
    """Apparent bytes of files and symlinks (lstat) under ``top``, each inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(top):
        # os.walk lists symlinks to directories in dirnames (and does not follow them)
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in filenames + links:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def mounts_below(top: Path) -> list[str]:
    """Mount points strictly inside ``top`` (this mount namespace), deepest first."""
    prefix = os.path.realpath(top).rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4].replace("\\040", " ") for line in f]
    except OSError:
        return []
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def remove_tree(top: Path) -> None:
    """rm -rf that also works when read-only directories are inside (non-root).

    Never descends into a mount: anything still mounted below ``top`` (a build
    tool killed half-way) is detached first, and if that fails nothing is removed.
    """
    for point in mounts_below(top):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    if left := mounts_below(top):
        raise DriverError(f"cannot remove {top}: {left[0]} is still mounted")
    if not top.is_symlink() and top.is_dir():
        with contextlib.suppress(OSError):
            top.chmod(0o700)
        for dirpath, dirnames, _files in os.walk(top):
            for name in dirnames:
                sub = os.path.join(dirpath, name)
                if not os.path.islink(sub):
                    with contextlib.suppress(OSError):
                        os.chmod(sub, 0o700)   # before os.walk descends into it
    try:
        if top.is_symlink() or top.is_file():
            top.unlink()
        elif top.exists():
            shutil.rmtree(top)
    except OSError as err:
        raise DriverError(f"cannot remove {top}: {err}") from err


def _payload_of(staging: Path) -> Path:
    """The one payload a staging dir holds (see `cumulo.images.kinds`)."""
    found = [staging / n for n in kinds.PAYLOADS if (staging / n).exists()]
    if len(found) != 1:
        raise InvalidInputError(
            f"{staging} must hold exactly one of {', '.join(kinds.PAYLOADS)} to import")
    payload = found[0]
    if payload.name in (kinds.ROOTFS, kinds.BOOT) and not payload.is_dir():
        raise InvalidInputError(f"{payload} is not a directory")
    if payload.name in kinds.DISKS and not payload.is_file():
        raise InvalidInputError(f"{payload} is not a regular file")
    return payload


class ImageFiles:
    """The image file store under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.staging_root = self.root / ".staging"

    # --- building ---

    def staging_dir(self, rootfs: bool = True) -> Path:
        """A fresh dir on the store's filesystem (with an empty ``rootfs/`` to fill)."""
        try:
            self.staging_root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=self.staging_root))
            if rootfs:
                (staging / "rootfs").mkdir(mode=0o755)
        except OSError as err:
            raise DriverError(f"cannot create a staging dir in {self.staging_root}: {err}") from err
        return staging

    @contextlib.contextmanager
    def staged(self, what: str, rootfs: bool = True) -> Iterator[Path]:
        """A staging dir for a builder: removed, whatever step fails (Ctrl-C and cancel
        included); an OSError comes out as ``DriverError("<what> failed: ...")``."""
        staging = self.staging_dir(rootfs)
        try:
            yield staging
        except BaseException as err:
            with contextlib.suppress(DriverError):   # keep the original error
                remove_tree(staging)
            if isinstance(err, OSError):
                raise DriverError(f"{what} failed: {err}") from err
            raise

    def import_tree(self, staging: Path, meta: ImageMeta | None = None) -> ImageRecord:
        """Hash ``staging/rootfs`` and move ``staging`` to ``<root>/<sha>``; dedup by sha.

        The staging dir is always consumed: renamed into place, removed when the
        same content is already stored (the stored record is returned), or
        removed when the import fails.
        """
        staging = Path(staging)
        try:
            return self._import(staging, meta)
        except BaseException:
            with contextlib.suppress(DriverError):   # keep the original error
                remove_tree(staging)   # consumed on failure too: nothing half-imported stays
            raise

    def _import(self, staging: Path, meta: ImageMeta | None = None) -> ImageRecord:
        payload = _payload_of(staging)
        if payload.is_dir():
            sha, size = tree_sha256(payload), tree_size(payload)
        else:
            sha, size = file_sha256(payload), payload.stat().st_size
        final = self.root / sha
        if final.exists():
            remove_tree(staging)
            return self.record(sha)
        record = ImageRecord(**asdict(meta or ImageMeta()), sha256=sha, size=size)
        try:
            (staging / "meta.json").write_text(json.dumps(record.to_dict(), indent=2) + "\n")
            staging.chmod(0o755)   # mkdtemp made it 0700
            os.rename(staging, final)
        except OSError as err:
            if final.exists():   # a concurrent import of the same content won
                remove_tree(staging)
                return self.record(sha)
            raise DriverError(f"cannot import image {sha[:12]}: {err}") from err
        return record

    def cleanup_staging(self) -> int:
        """Remove leftovers of interrupted builds (daemon start); returns how many."""
        if not self.staging_root.is_dir():
            return 0
        leftovers = list(self.staging_root.iterdir())
        for path in leftovers:
            remove_tree(path)
        return len(leftovers)

    # --- reading ---

    def _dir(self, sha: str) -> Path:
        if not _SHA_RE.match(sha):
            raise InvalidInputError(f"not an image sha256: {sha!r}")
        return self.root / sha

    def exists(self, sha: str) -> bool:
        top = self._dir(sha)
        return any((top / name).exists() for name in kinds.PAYLOADS)

    def payload(self, sha: str) -> Path:
        """The image's content: ``rootfs/``, ``disk.qcow2``, ``disk.raw`` or ``boot/``."""
        top = self._dir(sha)
        for name in kinds.PAYLOADS:
            if (top / name).exists():
                return top / name
        raise NotFoundError("image", sha)

    def path(self, sha: str) -> Path:
        """The image's rootfs directory."""
        if not (self._dir(sha) / kinds.ROOTFS).is_dir():
            raise NotFoundError("image", sha)
        return self._dir(sha) / kinds.ROOTFS

    def size(self, sha: str) -> int:
        """Bytes of the payload: files and symlinks (own size), hardlinks counted once."""
        payload = self.payload(sha)
        try:
            return tree_size(payload) if payload.is_dir() else payload.stat().st_size
        except OSError as err:
            raise DriverError(f"cannot measure image {sha[:12]}: {err}") from err

    def record(self, sha: str) -> ImageRecord:
        """The record written at import time (meta.json)."""
        try:
            data = json.loads((self._dir(sha) / "meta.json").read_text())
            return ImageRecord(**data)
        except FileNotFoundError:
            raise NotFoundError("image", sha) from None
        except (OSError, ValueError, TypeError) as err:
            raise DriverError(f"bad meta.json for image {sha[:12]}: {err}") from err

    def shas(self) -> list[str]:
        """Every image present on disk (for reconciliation with the store)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _SHA_RE.match(p.name))

    # --- removing ---

    def delete(self, sha: str) -> bool:
        """Remove ``<root>/<sha>`` with everything in it (driver's idmap copies too).

        Idempotent: returns False when nothing was there.
        """
        top = self._dir(sha)
        if not top.exists() and not top.is_symlink():
            return False
        remove_tree(top)
        return True
