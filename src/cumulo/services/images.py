"""Image use cases: build, list, alias, delete (refused while an instance uses it)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cumulo.domain.lifecycle import State
from cumulo.domain.models import Image, Operation
from cumulo.errors import (
    ConflictError,
    DriverError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    UnsupportedError,
)
from cumulo.host import space
from cumulo.images import app, builders, importer, kinds
from cumulo.images.files import ImageFiles, ImageMeta, ImageRecord, remove_tree
from cumulo.services.operations import Operations, Progress
from cumulo.store.repo import Store

DEFAULT = "default"

if TYPE_CHECKING:
    from cumulo.services.instances import InstanceService

ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}(/[a-z0-9][a-z0-9._-]{0,62})*$")


class ImageService:
    def __init__(self, store: Store, ops: Operations, root: Path) -> None:
        self.store, self.ops = store, ops
        self.files = ImageFiles(root)
        self.files.cleanup_staging()

    def build(self, name: str, alias: str | None = None,
              opts: builders.BuildOptions | None = None, project: str = DEFAULT) -> Operation:
        """Check the request now (bad input: nothing starts), build in an operation; the
        image goes to ``project``'s images (default's if it keeps none of its own)."""
        self.store.projects.get(project)
        prepared = builders.prepare(name, opts)
        alias = alias or prepared.alias
        if not ALIAS_RE.match(alias):
            raise InvalidInputError(f"invalid alias {alias!r}")

        def work(progress: Progress) -> dict[str, Any]:
            with self._space(f"build image {prepared.name}"):
                rec = prepared.run(self.files, progress)
            return {"images": [self._record(rec, alias, project).fingerprint]}

        return self.ops.submit(f"build image {prepared.name}", work, cancel_on_shutdown=True,
                               project=project)

    def _space(self, action: str) -> contextlib.AbstractContextManager[None]:
        """A write to the image store that runs out of space fails with one line."""
        return space.guard("the image store", self.files.root, action)

    def _record(self, rec: ImageRecord, alias: str | None, project: str) -> Image:
        """Enter an imported image file in the store (under ``alias`` if given).

        The same content made again (a re-import, an unchanged publish) keeps the
        image's first metadata and only gains the alias."""
        with contextlib.suppress(NotFoundError):
            known = self.store.get_image(rec.sha256, project)
            return self.store.set_alias(alias, known.fingerprint, project) if alias else known
        return self.store.put_image(Image(
            fingerprint=rec.sha256, kind=rec.kind, os=rec.os, release=rec.release,
            architecture=rec.architecture, description=rec.description, size=rec.size,
            command=list(rec.command), aliases=[alias] if alias else [],
            properties=dict(rec.properties)), project)

    def check_alias(self, alias: str | None) -> None:
        if alias is not None and not ALIAS_RE.match(alias):
            raise InvalidInputError(
                f"invalid alias {alias!r}: use a-z, 0-9, '.', '_', '-' and '/' (like debian/12)")

    def import_upload(self, staging: Path, filename: str, alias: str | None,
                      sha256: str, project: str = DEFAULT) -> Operation:
        """Turn the file received in ``staging`` into an image (an operation)."""
        self.check_alias(alias)

        def work(progress: Progress) -> dict[str, Any]:
            with self._space(f"import image {filename}"):
                image = self.import_staged(staging, filename, alias, sha256, progress, project)
            return {"images": [image.fingerprint]}

        try:
            return self.ops.submit(f"import image {filename}", work, cancel_on_shutdown=True,
                                   project=project)
        except BaseException:
            remove_tree(staging)
            raise

    def import_staged(self, staging: Path, filename: str, alias: str | None, sha256: str,
                      progress: Progress | None = None, project: str = DEFAULT) -> Image:
        """Turn the file received in ``staging`` into an image, now (no operation)."""
        rec = importer.import_file(self.files, staging, filename, sha256, progress)
        return self._record(rec, alias, project)

    def export_source(self, ref: str, project: str = DEFAULT) -> tuple[str, Path]:
        """What to send for ``image export``: ("tar.gz", rootfs dir) or (format, disk file)."""
        image = self.store.get_image(ref, project)
        payload = self.files.payload(image.fingerprint)
        if payload.name == kinds.ROOTFS:
            return "tar.gz", payload
        if payload.name in kinds.DISKS:
            return payload.suffix.lstrip("."), payload
        raise UnsupportedError(f"exporting a {image.kind} image is not supported yet")

    def publish(self, instances: InstanceService, project: str, name: str,
                alias: str) -> Operation:
        """A stopped container's root (as it sees it) becomes a new image called ``alias``."""
        self.check_alias(alias)
        inst = instances.get(project, name)
        if inst.type != "container":
            raise UnsupportedError(f"publishing a {inst.type} is not supported yet: "
                                   "only containers can be published")
        if inst.state != State.STOPPED:
            raise InvalidStateError(name, inst.state.value, "publish")
        parent = self.store.get_image(inst.image, project)

        def work(progress: Progress) -> dict[str, Any]:
            with self._space(f"publish {project}/{name}"), \
                    self.files.staged(f"publishing {project}/{name}", rootfs=False) as staging:
                progress(0.1, "copying the root filesystem")
                inst_now = instances.copy_root(project, name, staging / kinds.ROOTFS)
                meta = ImageMeta(
                    kind=kinds.CONTAINER, os=parent.os, release=parent.release,
                    architecture=parent.architecture,
                    description=f"published from {project}/{name} ({parent.description})",
                    command=list(inst_now.command or parent.command),
                    properties={"source": "publish", "instance": f"{project}/{name}",
                                "parent": parent.fingerprint})
                progress(0.8, "hashing and importing")
                rec = self.files.import_tree(staging, meta)
            return {"images": [self._record(rec, alias, project).fingerprint]}

        return self.ops.submit(f"publish {project}/{name} as {alias}", work, project=project)

    def list(self, project: str = DEFAULT) -> list[Image]:
        return self.store.list_images(project)

    def get(self, ref: str, project: str = DEFAULT) -> Image:
        return self.store.get_image(ref, project)

    def delete(self, ref: str, project: str = DEFAULT) -> None:
        image = self.store.get_image(ref, project)
        users = self.store.image_users(image.fingerprint, project)
        if users:
            raise ConflictError(
                f"image {ref!r} is used by {', '.join(users)}: delete those instances first")
        self.store.delete_image(image.fingerprint, project)
        if not self.store.image_held_elsewhere(image.fingerprint):   # files are shared
            self.files.delete(image.fingerprint)

    def set_alias(self, alias: str, ref: str, project: str = DEFAULT) -> Image:
        if not ALIAS_RE.match(alias):
            raise InvalidInputError(
                f"invalid alias {alias!r}: use a-z, 0-9, '.', '_', '-' and '/' (like debian/12)")
        return self.store.set_alias(alias, ref, project)

    def delete_alias(self, alias: str, project: str = DEFAULT) -> None:
        self.store.delete_alias(alias, project)

    def import_app(self, name: str, data: bytes, project: str = DEFAULT) -> Image:
        """An app image (for ``--type appvm``) from one static program; same bytes, same image."""
        app.check_static(data, name)
        staging = self.files.staging_dir()
        try:
            target = staging / "rootfs" / "bin" / name   # as `image build app` lays it out
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o755)
        except OSError as err:
            remove_tree(staging)
            raise DriverError(f"cannot stage app {name!r}: {err}") from err
        rec = self.files.import_tree(staging, ImageMeta(
            kind="app", architecture="x86_64", description=f"static program {name}",
            command=[f"/bin/{name}"]))
        return self.store.put_image(Image(
            fingerprint=rec.sha256, kind=rec.kind, os=rec.os, release=rec.release,
            architecture=rec.architecture, description=rec.description, size=rec.size,
            command=list(rec.command), aliases=[]), project)
