"""REST routes for image import (an upload), export (a download), publish and operation
cancel (Ctrl-C of a build or import): services/images.py.

``POST /1.0/image-imports?filename=F[&alias=A][&sha256=HEX]`` takes the file as the
raw request body, streamed to a staging dir while it is hashed; a wrong checksum
is a 400 and nothing stays. The unpacking runs as an operation (202).
``GET /1.0/image-files/{ref}`` streams a rootfs image as tar.gz, a disk image as
its qcow2/raw file. ``POST /1.0/migrations/images`` is the same import for the image
of an instance migrating here (the ``migrate`` right of a remote suffices), and
``DELETE /1.0/migrations/images/{fingerprint}`` drops such an image again.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from cumulo.api import auth, upload_limit
from cumulo.api import schemas as s
from cumulo.api.convert import location, operation_out
from cumulo.api.projects import IMAGE_PROJECT, PROJECT
from cumulo.api.schemas import Strict
from cumulo.domain.models import Operation
from cumulo.domain.roles import OPERATE
from cumulo.errors import DriverError
from cumulo.images import importer
from cumulo.images.files import remove_tree
from cumulo.services.host import Services

_CHUNK = 1 << 20


def _stream(argv: list[str]) -> Iterator[bytes]:
    """The stdout of ``argv`` in chunks; the process is killed if the client goes away."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(_CHUNK):
            yield chunk
        if proc.wait(60) != 0:   # cut the response short: the client sees a broken download
            raise DriverError(f"{argv[0]} failed with exit status {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            if proc.stdout:
                proc.stdout.close()


class PublishIn(Strict):
    alias: str = Field(description="name of the new image")


def _accepted(op: Operation) -> JSONResponse:
    return JSONResponse(operation_out(op).model_dump(mode="json"), status_code=202,
                        headers={"Location": location(op)})


async def _receive(svc: Services, request: Request, expected: str | None
                   ) -> tuple[Path, str]:
    """The request body into a new staging dir, hashed on the way: (dir, sha256)."""
    upload_limit.check_length(request.headers, "the image")
    staging = svc.images.files.staging_dir(rootfs=False)
    digest = hashlib.sha256()
    try:
        with (staging / importer.UPLOAD).open("wb") as f:
            async for chunk in upload_limit.bounded(request.stream(), "the image"):
                digest.update(chunk)
                f.write(chunk)
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise importer.checksum_error(expected, actual)
    except BaseException as err:
        with contextlib.suppress(DriverError):
            remove_tree(staging)
        if isinstance(err, OSError):
            raise DriverError(f"cannot store the upload: {err}") from err
        raise
    return staging, actual


def add_routes(r: APIRouter, svc: Services) -> None:
    @r.post("/image-imports", status_code=202, response_model=s.OperationOut,
            summary="Import an image from the request body: a rootfs or OCI tarball, or a "
                    "qcow2/raw disk")
    async def import_image(
        request: Request,
        filename: str = Query(..., description="the file's name (.raw/.img marks a raw disk)"),
        alias: str | None = Query(None),
        sha256: str | None = Query(None, description="refuse the file unless it has this sha256"),
        project: str = IMAGE_PROJECT,
    ) -> JSONResponse:
        expected = importer.check_sha256(sha256)
        svc.images.check_alias(alias)
        staging, actual = await _receive(svc, request, expected)
        return _accepted(svc.images.import_upload(staging, filename, alias, actual, project))

    @r.post("/migrations/images", summary="(host to host) receive the image of an instance"
                                          " about to migrate here, as `image export` makes"
                                          " it; imported before the answer")
    async def import_migration_image(
        request: Request,
        fingerprint: str = Query(..., description="the image's fingerprint on the source"),
        filename: str = Query(..., description="the file's name (.raw/.img marks a raw disk)"),
    ) -> dict[str, str]:
        svc.migrations.image_expected(fingerprint)
        staging, actual = await _receive(svc, request, None)
        image = await run_in_threadpool(svc.images.import_staged, staging, filename, None,
                                        actual)
        return {"fingerprint": image.fingerprint}

    @r.delete("/migrations/images/{fingerprint}", status_code=204,
              summary="(host to host) drop an image received for a migration that failed")
    def drop_migration_image(fingerprint: str) -> Response:
        svc.migrations.drop_image(svc.images, fingerprint)
        return Response(status_code=204)

    @r.delete("/operations/{op_id}", status_code=202, response_model=s.OperationOut,
              summary="Cancel a running operation (an image build or import); it ends as "
                      "a failure, its work undone")
    def cancel_operation(request: Request, op_id: str, project: str = PROJECT
                         ) -> JSONResponse:
        auth.check_operation(auth.caller_of(request), svc.ops.get(op_id, 0.0, project),
                             OPERATE)
        return _accepted(svc.ops.cancel(op_id, project))

    @r.post("/instances/{name}/publish", status_code=202, response_model=s.OperationOut,
            summary="Make a stopped container's root filesystem a new image")
    def publish_instance(name: str, body: PublishIn, project: str = IMAGE_PROJECT) -> JSONResponse:
        return _accepted(svc.images.publish(svc.instances, project, name, body.alias))

    @r.get("/image-files/{ref:path}", summary="Download an image: a rootfs as tar.gz, a disk "
                                              "as its qcow2/raw file",
           response_class=StreamingResponse, response_model=None)
    def export_image(ref: str, project: str = PROJECT) -> Response:
        fmt, path = svc.images.export_source(ref, project)
        headers = {"X-Cumulo-Format": fmt}
        if fmt == "tar.gz":
            return StreamingResponse(_stream(importer.export_argv(path)),
                                     media_type="application/gzip", headers=headers)
        return FileResponse(path, media_type="application/octet-stream", headers=headers)
