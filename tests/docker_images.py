"""Docker image archives for the tests, made from the busybox tree the tests build."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from tests.helpers import build_busybox_rootfs


def busybox_archive(top: Path, tag: str = "busybox:latest") -> Path:
    """A Docker archive (``docker save`` layout) of one image: the busybox tree, one layer."""
    rootfs = build_busybox_rootfs(top)
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for path in sorted(rootfs.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(rootfs)), recursive=False)
    data = layer.getvalue()
    diff_id = hashlib.sha256(data).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                          "/usr/bin:/sbin:/bin"], "WorkingDir": "",
                   "Labels": {"made-by": "cumulo-tests"}},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    out = top / "busybox.tar"
    with tarfile.open(out, "w") as tar:
        for name, blob in ((f"{diff_id}/layer.tar", data), (config_name, config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return out


def oci_archive(docker_archive: Path, out: Path, ref: str) -> Path:
    """The image of a one-image Docker archive as a tarred OCI image layout (blobs by
    digest, index.json naming it ``ref`` as containerd and Docker 25+ do)."""
    with tarfile.open(docker_archive) as src:
        def read(name: str) -> bytes:
            member = src.extractfile(name)
            assert member is not None, name
            return member.read()
        entry = json.loads(read("manifest.json"))[0]
        config, layers = read(entry["Config"]), [read(n) for n in entry["Layers"]]
    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media: str) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}

    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(config, "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(x, "application/vnd.oci.image.layer.v1.tar") for x in layers]}
    ).encode()
    desc = blob(manifest, "application/vnd.oci.image.manifest.v1+json")
    desc["annotations"] = {"io.containerd.image.name": f"docker.io/library/{ref}",
                           "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]}
    index = json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode()
    with tarfile.open(out, "w") as tar:
        files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index,
                 **{f"blobs/sha256/{d}": data for d, data in blobs.items()}}
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out
