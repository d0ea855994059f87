"""Images follow cluster launches: a member that must run an instance whose image files
it lacks (the images table is shared, the files are each member's own) gets them from
an online member that has them, with progress, before it creates the instance (as
Incus does). The same pieces as a migration's image (services/migration_image.py):
``present`` asks a member whether it has the files, the file goes as ``image export``
makes it, and it is imported here as ``POST /migrations/images`` imports it (content
addressed: the same fingerprint, which is checked).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading

from cumulo.client import Client
from cumulo.cluster.membership import Membership
from cumulo.errors import ConflictError, CumuloError, DriverError
from cumulo.images import importer
from cumulo.images.files import remove_tree
from cumulo.services.images import ImageService
from cumulo.services.migration_image import MIB, present
from cumulo.services.operations import Progress
from cumulo.store.cluster import OFFLINE

log = logging.getLogger(__name__)
_LOCK = threading.Lock()   # two launches of one missing image fetch it once
TIMEOUT = 600.0


def pull(cluster: Membership, images: ImageService, fingerprint: str, progress: Progress,
         span: tuple[float, float] = (0.02, 0.2)) -> str | None:
    """Make image ``fingerprint``'s files present here; the member they came from, or
    None if they were here already (or this host is in no cluster: its driver says what
    is missing). ``ConflictError`` when no online member has them."""
    me = cluster.member
    if me is None or images.files.exists(fingerprint):
        return None
    with _LOCK:
        if images.files.exists(fingerprint):
            return None
        image = images.store.get_image(fingerprint)
        ref = image.aliases[0] if image.aliases else fingerprint[:12]
        for m in cluster.store.list_members():
            if m.name == me or cluster.state_of(m) == OFFLINE:   # (evacuated: it answers)
                continue
            remote = cluster.remote_for(m.name)
            with Client(url=remote.url, token=remote.token, timeout=TIMEOUT,
                        fingerprint=remote.fingerprint) as rc:
                try:
                    if not present(rc, fingerprint):
                        continue
                    _fetch(rc, images, fingerprint, image.size, f"image {ref} from {m.name}",
                           progress, span)
                except CumuloError as err:
                    log.warning("cannot fetch image %s from %s: %s", ref, m.name, err)
                    continue
            log.info("image %s fetched from member %s", ref, m.name)
            return m.name
    raise ConflictError(f"image {ref} is on no other online member: import it on {me}"
                        " (`cumulo image import`)")


def _fetch(rc: Client, images: ImageService, fingerprint: str, size: int, what: str,
           progress: Progress, span: tuple[float, float]) -> None:
    staging = images.files.staging_dir(rootfs=False)
    digest = hashlib.sha256()
    got, last, fmt = 0, -1, ""
    lo, hi = span
    try:
        with (staging / importer.UPLOAD).open("wb") as f:
            for kind, chunk in rc.export_image(fingerprint):
                fmt = kind
                digest.update(chunk)
                f.write(chunk)
                got += len(chunk)
                if (mib := got // (8 * MIB)) != last:   # a line each 8 MiB
                    last = mib
                    progress(lo + (hi - lo) * min(got / max(size, 1), 1.0),
                             f"fetching {what}: {got // MIB} of ~{max(size, 1) // MIB} MiB")
        done = images.import_staged(staging, f"{fingerprint[:12]}.{fmt or 'tar.gz'}", None,
                                    digest.hexdigest())
    except BaseException:
        if staging.exists():   # (the import removes it itself)
            with contextlib.suppress(DriverError, OSError):
                remove_tree(staging)
        raise
    if done.fingerprint != fingerprint:   # never expected: the content hash is the same
        raise DriverError(f"fetched {what} as {done.fingerprint[:12]}, not"
                          f" {fingerprint[:12]}")
