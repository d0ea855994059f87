"""The image follows its instance: before a migration, the source sends the image the
instance runs from to a destination that lacks it (as Incus does), with progress.

The file goes as ``image export`` makes it (a rootfs as tar.gz, a disk as its file),
streamed into the destination's ``POST /migrations/images`` (an image import that
the ``migrate`` right of a remote's token allows); images are content-addressed,
so the destination's import gets the same fingerprint, which is checked. The copy gets
no alias there (the destination's names stay its own). If the migration then fails,
``forget`` deletes the copy again (``DELETE /migrations/images/FP``, allowed only for
an image received so): a failed migration leaves nothing on the destination.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import IO

from cumulo.client import APIError, Client
from cumulo.domain.models import Image
from cumulo.errors import ConflictError, CumuloError, DriverError
from cumulo.images import files, importer, kinds
from cumulo.services.operations import Progress

MIB = 1 << 20


class _Counting:
    """A binary reader that reports how much of the image has gone out."""

    def __init__(self, f: IO[bytes], total: int, report: Progress, what: str,
                 span: tuple[float, float]) -> None:
        self.f, self.total, self.report, self.what, self.span = f, max(total, 1), report, \
            what, span
        self.sent = 0
        self._last = -1

    def read(self, n: int = -1) -> bytes:
        chunk = self.f.read(n)
        self.sent += len(chunk)
        if (mib := self.sent // (8 * MIB)) != self._last:   # a line each 8 MiB
            self._last = mib
            lo, hi = self.span
            frac = min(self.sent / self.total, 1.0)
            self.report(lo + (hi - lo) * frac,
                        f"sending {self.what}: {self.sent // MIB} of ~{self.total // MIB} MiB")
        return chunk


def present(rc: Client, fingerprint: str) -> bool:
    """Whether the host behind ``rc`` has the image's files: asked by starting its
    download and hanging up at the first piece, because in a cluster the store (and so
    ``GET /images``) is shared while the files are each member's own."""
    pieces = rc.export_image(fingerprint)
    try:
        next(pieces, None)
    except APIError as err:
        if err.status != 404:
            raise
        return False
    finally:
        getattr(pieces, "close", lambda: None)()   # a generator: hangs up the download
    return True


def send(image_root: Path, image: Image, rc: Client, remote: str, progress: Progress,
         span: tuple[float, float] = (0.02, 0.3)) -> bool:
    """Copy ``image`` to the host behind ``rc`` unless it has it; True if it was copied."""
    if present(rc, image.fingerprint):
        return False
    ref = image.aliases[0] if image.aliases else image.fingerprint[:12]
    what = f"image {ref} to {remote}"
    payload = files.ImageFiles(image_root).payload(image.fingerprint)
    if payload.name == kinds.ROOTFS:
        filename = f"{image.fingerprint[:12]}.tar.gz"
        proc = subprocess.Popen(importer.export_argv(payload), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            answer = _upload(rc, proc.stdout, image.size, filename, image.fingerprint, what,
                         progress, span)
            if proc.wait(60) != 0:
                raise DriverError(f"tar failed with exit status {proc.returncode} while"
                                  f" sending {what}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
    elif payload.name in kinds.DISKS:
        with payload.open("rb") as f:
            answer = _upload(rc, f, payload.stat().st_size, f"{image.fingerprint[:12]}"
                         f"{payload.suffix}", image.fingerprint, what, progress, span)
    else:
        raise ConflictError(f"host {remote!r} lacks image {ref}, and a {image.kind} image"
                            " cannot be sent: import it there first")
    got = str(answer.get("fingerprint"))
    if got != image.fingerprint:   # never expected: the content hash is the same
        raise DriverError(f"{remote} imported image {ref} as {got[:12]}, not"
                          f" {image.fingerprint[:12]}: not migrating")
    return True


def _upload(rc: Client, f: IO[bytes], size: int, filename: str, fp: str, what: str,
            progress: Progress, span: tuple[float, float]) -> dict[str, object]:
    """Send the file; the destination imports it before it answers ``{fingerprint}``."""
    body = _Counting(f, size, progress, what, span)
    answer: dict[str, object] = rc.request(
        "POST", "/migrations/images", params={"filename": filename, "fingerprint": fp},
        content=body, timeout=None, headers={"content-type": "application/octet-stream"}
    ).json()
    return answer


def forget(rc: Client, fingerprint: str) -> None:
    """Delete an image copied for a migration that then failed (best effort)."""
    with contextlib.suppress(CumuloError):
        rc.request("DELETE", f"/migrations/images/{fingerprint}")
