"""Image archives: ``docker load`` (Docker archive or OCI layout), ``save`` and ``import``.

A Docker archive (``manifest.json`` + config + layer tarballs) is rewritten as
an OCI image layout (the same blobs, named by digest) and handed to Cumulo's
image importer, which applies the layers with umoci. ``save`` writes a Docker
archive with one layer: the image's root filesystem.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from cumulo import errors as e
from cumulo.api import upload_limit
from cumulo.docker.common import Context, bad, call, finish
from cumulo.domain.models import Image
from cumulo.images import importer
from cumulo.images.files import remove_tree

CHUNK = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
REF = "org.opencontainers.image.ref.name"
DOCKER_REF = "io.containerd.image.name"


async def _receive(request: Request, dest: Path) -> None:
    upload_limit.check_length(request.headers, "the archive")
    with dest.open("wb") as f:
        async for chunk in upload_limit.bounded(request.stream(), "the archive"):
            if chunk:
                f.write(chunk)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _blob(layout: Path, data: bytes | Path) -> tuple[str, int]:
    """Put ``data`` in the layout's blobs by digest; its digest and size."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    if isinstance(data, Path):
        digest = _sha(data)
        size = data.stat().st_size
        os.replace(data, blobs / digest)
    else:
        digest = hashlib.sha256(data).hexdigest()
        size = len(data)
        (blobs / digest).write_bytes(data)
    return f"sha256:{digest}", size


def _layer_type(path: Path) -> str:
    with path.open("rb") as f:
        return OCI_LAYER + "+gzip" if f.read(2) == b"\x1f\x8b" else OCI_LAYER


def _safe(top: Path, name: str) -> Path:
    path = (top / name).resolve()
    if not path.is_relative_to(top.resolve()) or not path.is_file():
        raise bad(f"invalid tar file: {name!r} is not a file in the archive")
    return path


def _oci_from_docker(src: Path, entry: dict[str, Any], layout: Path) -> dict[str, Any]:
    """One image of a Docker archive as an OCI layout; its Docker config."""
    try:
        config_bytes = _safe(src, entry["Config"]).read_bytes()
        config = json.loads(config_bytes)
        layers = [_safe(src, name) for name in entry["Layers"]]
    except (KeyError, TypeError, ValueError) as err:
        raise bad(f"invalid tar file: manifest.json: {err}") from None
    descs: list[dict[str, Any]] = []
    for layer in layers:
        kind = _layer_type(layer)
        copy = layout / f"layer{len(descs)}"
        shutil.copyfile(layer, copy)
        digest, size = _blob(layout, copy)
        descs.append({"mediaType": kind, "digest": digest, "size": size})
    cfg_digest, cfg_size = _blob(layout, config_bytes)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest,
                                      "size": cfg_size},
                           "layers": descs}).encode()
    m_digest, m_size = _blob(layout, manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": m_digest,
                                           "size": m_size, "annotations": {REF: "latest"}}]}))
    return dict(config.get("config") or {})


def _tar_dir(top: Path, dest: Path) -> None:
    with tarfile.open(dest, "w") as tar:
        for item in sorted(top.iterdir()):
            tar.add(item, arcname=item.name)


def _oci_image(src: Path) -> tuple[list[str], dict[str, Any]]:
    """Tags and Docker config of a plain OCI layout's single image."""
    try:
        index = json.loads((src / "index.json").read_text())
        manifests = index["manifests"]
        if len(manifests) != 1:
            raise bad(f"the OCI layout holds {len(manifests)} images: load one at a time")
        ann = manifests[0].get("annotations") or {}
        digest = manifests[0]["digest"].split(":", 1)[1]
        manifest = json.loads(_safe(src, f"blobs/sha256/{digest}").read_text())
        cfg = manifest["config"]["digest"].split(":", 1)[1]
        config = json.loads(_safe(src, f"blobs/sha256/{cfg}").read_text())
    except (OSError, KeyError, TypeError, ValueError, IndexError) as err:
        raise bad(f"invalid tar file: index.json: {err}") from None
    tag = ann.get(DOCKER_REF) or ann.get(REF)
    tags = [tag] if tag and (":" in tag or "/" in tag or tag.isalnum()) else []
    if tags and ":" not in tags[0].rsplit("/", 1)[-1] and not ann.get(DOCKER_REF):
        tags = []   # a bare "latest" ref names no repository
    return tags, dict(config.get("config") or {})


def _plan(upload: Path, work: Path) -> list[tuple[list[str], dict[str, Any], Path]]:
    """Unpack the archive; for each image in it, its tags, config and a layout tarball."""
    src = work / "src"
    src.mkdir()
    try:
        with tarfile.open(upload, "r:*") as tar:
            tar.extractall(src, filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise bad(f"invalid tar file: {err}") from None
    out: list[tuple[list[str], dict[str, Any], Path]] = []
    if (src / "manifest.json").is_file():
        try:
            entries = json.loads((src / "manifest.json").read_text())
        except ValueError as err:
            raise bad(f"invalid tar file: manifest.json: {err}") from None
        for n, entry in enumerate(entries):
            layout = work / f"layout{n}"
            layout.mkdir()
            config = _oci_from_docker(src, entry, layout)
            _tar_dir(layout, work / f"layout{n}.tar")
            remove_tree(layout)
            out.append((list(entry.get("RepoTags") or []), config, work / f"layout{n}.tar"))
    elif (src / "index.json").is_file() and (src / "oci-layout").is_file():
        tags, config = _oci_image(src)
        out.append((tags, config, upload))
    else:
        raise bad("invalid tar file: neither a Docker archive (manifest.json) nor an OCI"
                  " image layout (oci-layout, index.json)")
    return out


async def _import(ctx: Context, tarball: Path, filename: str) -> str:
    """Cumulo's importer on one tarball: the new image's fingerprint."""
    staging = ctx.svc.images.files.staging_dir(rootfs=False)
    shutil.move(tarball, staging / importer.UPLOAD)
    op = await call(ctx.svc.images.import_upload, staging, filename, None, "")
    done = await finish(ctx, op)
    images = done.resources.get("images") or []
    if not images:
        raise e.DriverError("the import made no image")
    return str(images[0])


async def load(ctx: Context, request: Request) -> list[tuple[list[str], str, dict[str, Any]]]:
    """Every image of the uploaded archive: (tags, fingerprint, Docker config)."""
    work = ctx.svc.images.files.staging_dir(rootfs=False)
    try:
        upload = work / "upload.tar"
        await _receive(request, upload)
        if upload.stat().st_size == 0:
            raise bad("requested load from an empty archive")
        plans = await call(_plan, upload, work)
        out = []
        for tags, config, tarball in plans:
            fp = await _import(ctx, tarball, "docker-load.tar")
            out.append((tags, fp, config))
        return out
    finally:
        await call(remove_tree, work)


async def import_rootfs(ctx: Context, request: Request, tag: str | None) -> str:
    """``docker import``: a root filesystem tarball becomes an image."""
    work = ctx.svc.images.files.staging_dir(rootfs=False)
    try:
        upload = work / "rootfs.tar"
        await _receive(request, upload)
        return await _import(ctx, upload, f"{tag or 'import'}.tar")
    finally:
        await call(remove_tree, work)


def _write_archive(ctx: Context, chosen: list[tuple[Image, list[str], dict[str, Any]]],
                   work: Path) -> Path:
    manifest = []
    out = work / "out"
    out.mkdir()
    for image, tags, config in chosen:
        rootfs = ctx.svc.images.files.payload(image.fingerprint)
        layer = work / "layer.tar"
        subprocess.run(["tar", "-c", "-f", str(layer), "-C", str(rootfs), "--numeric-owner",
                        "--xattrs", "--sort=name", "."], check=True, capture_output=True)
        diff_id = _sha(layer)
        (out / diff_id).mkdir(exist_ok=True)
        os.replace(layer, out / diff_id / "layer.tar")
        created = (image.created_at or datetime.now(UTC)).replace(tzinfo=UTC).isoformat()
        cfg = json.dumps({"architecture": "amd64", "os": "linux", "created": created,
                          "config": config, "rootfs": {"type": "layers",
                                                       "diff_ids": [f"sha256:{diff_id}"]},
                          "history": [{"created": created,
                                       "created_by": f"cumulo image {image.fingerprint[:12]}"}]},
                         sort_keys=True).encode()
        cfg_name = f"{hashlib.sha256(cfg).hexdigest()}.json"
        (out / cfg_name).write_bytes(cfg)
        manifest.append({"Config": cfg_name, "RepoTags": tags or None,
                         "Layers": [f"{diff_id}/layer.tar"]})
    (out / "manifest.json").write_text(json.dumps(manifest))
    archive = work / "archive.tar"
    _tar_dir(out, archive)
    remove_tree(out)
    return archive


async def save(ctx: Context, chosen: list[tuple[Image, list[str], dict[str, Any]]]
               ) -> Response:
    work = ctx.svc.images.files.staging_dir(rootfs=False)
    try:
        archive = await call(_write_archive, ctx, chosen, work)
    except BaseException:
        await call(remove_tree, work)
        raise

    async def gen() -> AsyncIterator[bytes]:
        try:
            with archive.open("rb") as f:
                while chunk := await call(f.read, CHUNK):
                    yield chunk
        finally:
            with contextlib.suppress(OSError):
                await call(remove_tree, work)

    return StreamingResponse(gen(), media_type="application/x-tar")
