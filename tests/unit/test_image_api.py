"""Image routes in-process (fake driver): upload checks, export, cancel, kinds vs instances."""

from __future__ import annotations

import hashlib
import io
import tarfile

from fastapi.testclient import TestClient

from cumulo.domain.models import Image
from cumulo.services.host import Services
from tests.unit.conftest import wait_op


def _tar_gz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"hello\n"
        info = tarfile.TarInfo("etc/greeting")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _staging_empty(svc: Services) -> bool:
    staging = svc.images.files.staging_root
    return not staging.is_dir() or not any(staging.iterdir())


def test_upload_with_a_wrong_checksum_is_refused_and_leaves_nothing(
        api: TestClient, svc: Services) -> None:
    body = _tar_gz()
    before = api.get("/1.0/images").json()
    r = api.post("/1.0/image-imports", params={"filename": "r.tar.gz", "sha256": "0" * 64},
                 content=body)
    assert r.status_code == 400 and "checksum mismatch" in r.json()["error"]
    r = api.post("/1.0/image-imports", params={"filename": "r.tar.gz", "sha256": "nothex"},
                 content=body)
    assert r.status_code == 400 and "64 hex digits" in r.json()["error"]
    r = api.post("/1.0/image-imports", params={"filename": "r.tar.gz", "alias": "Bad Alias"},
                 content=body)
    assert r.status_code == 400 and "invalid alias" in r.json()["error"]
    assert api.get("/1.0/images").json() == before and _staging_empty(svc)


def test_upload_import_and_export_round_trip(api: TestClient, svc: Services) -> None:
    body = _tar_gz()
    op = wait_op(api, api.post("/1.0/image-imports", content=body, params={
        "filename": "r.tar.gz", "alias": "greet", "sha256": hashlib.sha256(body).hexdigest()}))
    assert op["status"] == "success", op
    img = api.get("/1.0/images/greet").json()
    assert img["kind"] == "container" and img["properties"]["source"] == "import"
    assert img["command"] == []   # no /bin/sh in it: launching needs a command
    r = api.get("/1.0/image-files/greet")
    assert r.status_code == 200 and r.headers["X-Cumulo-Format"] == "tar.gz"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        assert tar.extractfile("./etc/greeting").read() == b"hello\n"  # type: ignore[union-attr]
    assert api.get("/1.0/image-files/nosuch").status_code == 404
    assert _staging_empty(svc)


def test_cancel_of_an_ended_or_unknown_operation(api: TestClient) -> None:
    op = wait_op(api, api.post("/1.0/images", json={"builder": "app", "binary": "/bin/busybox"}))
    r = api.delete(f"/1.0/operations/{op['id']}")
    assert r.status_code == 409 and "nothing to cancel" in r.json()["error"]
    assert api.delete("/1.0/operations/nosuch").status_code == 404


def test_a_container_needs_a_rootfs_image(api: TestClient, svc: Services) -> None:
    fp = "d" * 64
    (svc.images.files.root / fp).mkdir(parents=True)
    (svc.images.files.root / fp / "disk.raw").write_bytes(b"\0" * 512)
    svc.store.put_image(Image(fingerprint=fp, kind="vm-disk", aliases=["disk"]))
    r = api.post("/1.0/instances", json={"name": "c1", "image": "disk", "command": ["true"]})
    assert r.status_code == 400 and "is a vm-disk image" in r.json()["error"]
    assert api.get("/1.0/instances").json() == []


def test_build_bad_input_is_400_before_any_operation(api: TestClient) -> None:
    for body, text in (({"builder": "debian/42"}, "unknown Debian release"),
                       ({"builder": "debian/12", "variant": "x"}, "unknown variant"),
                       ({"builder": "busybox", "packages": ["curl"]}, "does not apply"),
                       ({"builder": "app", "binary": "relative/path"}, "absolute path")):
        r = api.post("/1.0/images", json=body)
        assert r.status_code == 400 and text in r.json()["error"], (body, r.json())
    assert api.get("/1.0/operations").json() == []
