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
