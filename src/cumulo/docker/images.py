"""Docker images over Cumulo images: references, list, inspect, tag, rmi, history, pull."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cumulo import errors as e
from cumulo.docker import archives
from cumulo.docker.common import (
    Context,
    DockerError,
    bad,
    call,
    conflict,
    filters,
    flag,
    not_found,
)
from cumulo.docker.common import ok_json as js
from cumulo.docker.meta import Meta
from cumulo.domain.models import Image
from cumulo.images import kinds
from cumulo.services.images import ALIAS_RE

HEX_RE = re.compile(r"^(sha256:)?[0-9a-f]{12,64}$")
NAME_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


def normalize(ref: str) -> str:
    """``docker.io/library/busybox`` -> ``busybox:latest``; a bad one is Docker's 400."""
    ref = ref.strip()
    if "@" in ref:
        raise bad(f"invalid reference format: digests are not supported: {ref}")
    for prefix in ("docker.io/", "index.docker.io/", "library/"):
        ref = ref.removeprefix(prefix)
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        name, tag = ref, "latest"
    if not NAME_RE.match(name) or not re.match(r"^[\w][\w.-]{0,127}$", tag):
        raise bad(f"invalid reference format: repository name ({ref}) must be lowercase")
    return f"{name}:{tag}"


def alias_for(tag: str) -> str | None:
    """The Cumulo alias a Docker tag also gets: the name, for ``:latest`` only."""
    name, _, version = tag.rpartition(":")
    return name if version == "latest" and ALIAS_RE.match(name) else None


def resolve(ctx: Context, meta: Meta, ref: str) -> Image:
    """The image a Docker reference names (tag, id, id prefix, or a Cumulo alias)."""
    if HEX_RE.match(ref):
        try:
            return ctx.svc.images.get(ref.removeprefix("sha256:"))
        except e.NotFoundError:
            pass
    tag = normalize(ref)
    fp = meta.images()["tags"].get(tag)
    try:
        if fp is not None:
            return ctx.svc.images.get(fp)
        alias = alias_for(tag)
        if alias is not None:
            return ctx.svc.images.get(alias)
    except e.NotFoundError:
        pass
    raise not_found(f"No such image: {tag}")


def tags_of(meta: Meta, image: Image) -> list[str]:
    tags = {t for t, f in meta.images()["tags"].items() if f == image.fingerprint}
    tags |= {f"{a}:latest" for a in image.aliases}
    return sorted(tags)


def config_of(meta: Meta, image: Image) -> dict[str, Any]:
    """The Docker config of an image: recorded at load, else made from Cumulo's."""
    config = meta.images()["configs"].get(image.fingerprint)
    if config is not None:
        return dict(config)
    return {"Cmd": list(image.command), "Entrypoint": None,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "", "User": "", "Labels": {}}


def _epoch(dt: datetime | None) -> int:
    return int(dt.timestamp()) if dt else 0


def iso(dt: datetime | None) -> str:
    if dt is None:
        return "0001-01-01T00:00:00Z"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def usable(image: Image) -> bool:
    return image.kind in kinds.ROOTFS_KINDS


def summary(meta: Meta, image: Image) -> dict[str, Any]:
    return {"Id": f"sha256:{image.fingerprint}", "ParentId": "",
            "RepoTags": tags_of(meta, image), "RepoDigests": [],
            "Created": _epoch(image.created_at), "Size": image.size, "SharedSize": -1,
            "VirtualSize": image.size, "Labels": config_of(meta, image).get("Labels") or {},
            "Containers": -1}


def inspect(meta: Meta, image: Image) -> dict[str, Any]:
    config = config_of(meta, image)
    return {"Id": f"sha256:{image.fingerprint}", "RepoTags": tags_of(meta, image),
            "RepoDigests": [], "Parent": "", "Comment": image.description,
            "Created": iso(image.created_at), "DockerVersion": "", "Author": "",
            "Config": {"Hostname": "", "Domainname": "", "User": config.get("User") or "",
                       "AttachStdin": False, "AttachStdout": False, "AttachStderr": False,
                       "Tty": False, "OpenStdin": False, "StdinOnce": False,
                       "Env": config.get("Env") or [], "Cmd": config.get("Cmd"),
                       "Image": "", "Volumes": None,
                       "WorkingDir": config.get("WorkingDir") or "",
                       "Entrypoint": config.get("Entrypoint"), "OnBuild": None,
                       "Labels": config.get("Labels") or {}},
            "Architecture": "amd64", "Os": "linux", "Size": image.size,
            "VirtualSize": image.size,
            "GraphDriver": {"Name": "cumulo", "Data": {}},
            "RootFS": {"Type": "layers", "Layers": [f"sha256:{image.fingerprint}"]},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"}}


def routes(ctx: Context, meta: Meta) -> list[Route]:
    svc = ctx.svc

    async def list_images(request: Request) -> Response:
        images = [i for i in await call(svc.images.list) if usable(i)]
        show_all = flag(request, "all")
        out = [summary(meta, i) for i in images]
        if not show_all:
            out = [o for o in out if o["RepoTags"]] or out
        out.sort(key=lambda o: o["Created"], reverse=True)
        return js(out)

    async def get_image(request: Request) -> Response:
        image = await call(resolve, ctx, meta, request.path_params["name"])
        return js(inspect(meta, image))

    async def history(request: Request) -> Response:
        image = await call(resolve, ctx, meta, request.path_params["name"])
        return js([{"Id": f"sha256:{image.fingerprint}", "Created": _epoch(image.created_at),
                    "CreatedBy": image.properties.get("source", "cumulo") + " "
                    + image.description, "Tags": tags_of(meta, image),
                    "Size": image.size, "Comment": ""}])

    async def tag_image(request: Request) -> Response:
        image = await call(resolve, ctx, meta, request.path_params["name"])
        repo = request.query_params.get("repo", "")
        new = normalize(f"{repo}:{request.query_params.get('tag') or 'latest'}")
        await call(add_tag, new, image)
        return Response(status_code=201)

    def add_tag(tag: str, image: Image) -> None:
        meta.tag(tag, image.fingerprint)
        alias = alias_for(tag)
        if alias is not None:
            svc.images.set_alias(alias, image.fingerprint)

    def remove(ref: str, force: bool) -> list[dict[str, str]]:
        image = resolve(ctx, meta, ref)
        tags = tags_of(meta, image)
        out: list[dict[str, str]] = []
        by_tag = not HEX_RE.match(ref) and len(tags) > 1
        if by_tag:   # only this name goes; the image stays under its others
            tag = normalize(ref)
            _untag(tag, image)
            return [{"Untagged": tag}]
        users = svc.store.image_users(image.fingerprint)
        if users:
            who = users[0].split("/", 1)[1]
            raise conflict(f"conflict: unable to delete {ref} (must be forced) - image is "
                           f"being used by container {who}" if not force else
                           f"conflict: unable to delete {ref} (cannot be forced) - image is"
                           f" being used by running container {who}")
        for tag in tags:
            _untag(tag, image)
            out.append({"Untagged": tag})
        svc.images.delete(image.fingerprint)
        meta.forget_image(image.fingerprint)
        out.append({"Deleted": f"sha256:{image.fingerprint}"})
        return out

    def _untag(tag: str, image: Image) -> None:
        meta.untag(tag)
        alias = alias_for(tag)
        if alias is not None and alias in image.aliases:
            svc.images.delete_alias(alias)

    async def delete_image(request: Request) -> Response:
        return js(await call(remove, request.path_params["name"], flag(request, "force")))

    async def create_image(request: Request) -> Response:
        """``docker pull`` (local images only: no registry here) and ``docker import``."""
        q = request.query_params
        if q.get("fromSrc"):
            if q["fromSrc"] != "-":
                raise DockerError(501, "importing from a URL is not supported by Cumulo")
            repo = q.get("repo") or ""
            tag = (normalize(f"{repo}:{q['tag']}" if q.get("tag") else repo) if repo
                   else None)
            fp = await archives.import_rootfs(ctx, request, tag)
            if tag is not None:
                await call(add_tag, tag, await call(svc.images.get, fp))
            return _stream([{"status": f"sha256:{fp}"}])
        name = q.get("fromImage", "")
        tag = normalize(f"{name}:{q.get('tag') or 'latest'}" if q.get("tag") and ":" not in
                        name.rsplit("/", 1)[-1] else name)
        try:
            image = await call(resolve, ctx, meta, tag)
        except DockerError:
            repo = tag.rpartition(":")[0]
            raise not_found(f"pull access denied for {repo}, repository does not exist or may"
                            " require 'docker login': Cumulo has no registry access: load the"
                            " image with 'docker load'") from None
        version = tag.rpartition(":")[2]
        return _stream([{"status": f"Pulling from {tag.rpartition(':')[0]}", "id": version},
                        {"status": f"Digest: sha256:{image.fingerprint}"},
                        {"status": f"Status: Image is up to date for {tag}"}])

    async def load(request: Request) -> Response:
        loaded = await archives.load(ctx, request)
        lines = []
        for tags, fp, config in loaded:
            await call(meta.set_config, fp, config)
            image = await call(svc.images.get, fp)
            for tag in tags:
                await call(add_tag, normalize(tag), image)
                lines.append({"stream": f"Loaded image: {normalize(tag)}\n"})
            if not tags:
                lines.append({"stream": f"Loaded image ID: sha256:{fp}\n"})
        return _stream(lines)

    async def save(request: Request) -> Response:
        names = request.query_params.getlist("names") or [request.path_params.get("name", "")]
        chosen = []
        for n in names:
            image = await call(resolve, ctx, meta, n)
            tag = normalize(n) if not HEX_RE.match(n) else None
            chosen.append((image, [tag] if tag else tags_of(meta, image),
                           config_of(meta, image)))
        return await archives.save(ctx, chosen)

    async def prune(request: Request) -> Response:
        """Unused images without a tag; with the filter ``dangling=false`` (``docker image
        prune -a``) every image no container uses, its tags (and Cumulo aliases) too."""
        every = [v.lower() for v in filters(request).get("dangling", [])] in (["false"],
                                                                              ["0"])
        deleted: list[dict[str, str]] = []
        for image in await call(svc.images.list):
            if not usable(image) or (tags_of(meta, image) and not every) or await call(
                    svc.store.image_users, image.fingerprint):
                continue
            with contextlib.suppress(DockerError, e.CumuloError):   # (in use meanwhile)
                deleted += await call(remove, image.fingerprint, False)
        return js({"ImagesDeleted": deleted or None, "SpaceReclaimed": 0})

    return [
        Route("/images/json", list_images, methods=["GET"]),
        Route("/images/create", create_image, methods=["POST"]),
        Route("/images/load", load, methods=["POST"]),
        Route("/images/get", save, methods=["GET"]),
        Route("/images/prune", prune, methods=["POST"]),
        Route("/images/{name:path}/json", get_image, methods=["GET"]),
        Route("/images/{name:path}/history", history, methods=["GET"]),
        Route("/images/{name:path}/tag", tag_image, methods=["POST"]),
        Route("/images/{name:path}/get", save, methods=["GET"]),
        Route("/images/{name:path}", delete_image, methods=["DELETE"]),
    ]


def _stream(lines: list[dict[str, Any]]) -> Response:
    async def gen() -> AsyncIterator[bytes]:
        for line in lines:
            yield (json.dumps(line) + "\r\n").encode()

    return StreamingResponse(gen(), media_type="application/json")
