"""Image kinds and payloads, image properties in the store, operation cancel, debian specs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cumulo.domain.models import Image, OpStatus
from cumulo.errors import ConflictError, InvalidInputError
from cumulo.images import kinds
from cumulo.images.debian import DebianSpec, mmdebstrap_argv, parse_spec
from cumulo.images.files import ImageFiles, ImageMeta, file_sha256
from cumulo.services.operations import Operations, Progress
from cumulo.store.repo import Store


def test_disk_payload_is_hashed_as_a_file(tmp_path: Path) -> None:
    files = ImageFiles(tmp_path / "images")
    staging = files.staging_dir(rootfs=False)
    (staging / "disk.raw").write_bytes(b"\0" * 4096 + b"disk")
    expect = file_sha256(staging / "disk.raw")
    rec = files.import_tree(staging, ImageMeta(kind=kinds.VM_DISK, properties={"format": "raw"}))
    assert rec.sha256 == expect and rec.size == 4100 and rec.kind == "vm-disk"
    assert rec.properties == {"format": "raw"}
    assert files.exists(expect) and files.payload(expect).name == "disk.raw"
    assert files.size(expect) == 4100
    with pytest.raises(Exception, match="image"):
        files.path(expect)   # no rootfs/ in a disk image


def test_staging_with_two_payloads_is_refused(tmp_path: Path) -> None:
    files = ImageFiles(tmp_path / "images")
    staging = files.staging_dir()
    (staging / "disk.qcow2").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="exactly one"):
        files.import_tree(staging, ImageMeta())
    assert not staging.exists()
    assert list((tmp_path / "images").iterdir()) == [files.staging_root]


def test_store_keeps_image_properties() -> None:
    store = Store("sqlite://")
    store.put_image(Image(fingerprint="c" * 64, kind="app", aliases=["hello"],
                          properties={"source": "binary", "program": "/hello"}))
    img = store.get_image("hello")
    assert img.kind == "app" and img.properties == {"source": "binary", "program": "/hello"}
    store.close()


def test_cancel_ends_the_operation_as_failed_and_runs_its_undo() -> None:
    store = Store("sqlite://")
    ops = Operations(store, workers=1)
    started, undone = threading.Event(), threading.Event()

    def work(progress: Progress) -> None:
        started.set()
        try:
            for _ in range(500):
                progress(0.1, "waiting")
                time.sleep(0.01)
        finally:
            undone.set()

    op = ops.submit("slow", work)
    assert started.wait(5)
    ops.cancel(op.id)
    done = ops.get(op.id, wait=10)
    assert done.status == OpStatus.FAILURE and done.error == "cancelled"
    assert undone.is_set()
    with pytest.raises(ConflictError, match="not running"):
        ops.cancel(op.id)
    ops.shutdown()
    store.close()


@pytest.mark.parametrize(("release", "variant", "packages", "match"), [
    ("99", None, None, "unknown Debian release"),
    ("", None, None, "which Debian release"),
    ("12", "tiny", None, "unknown variant"),
    ("12", None, ["Bad_Name"], "invalid package name"),
    ("12", None, ["ok", "x;rm"], "invalid package name"),
])
def test_debian_spec_bad_input(release: str, variant: str | None,
                               packages: list[str] | None, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        parse_spec(release, variant, packages)


def test_debian_spec_and_argv() -> None:
    spec = parse_spec("bookworm", None, ["curl", " curl", "ca-certificates"])
    assert spec == DebianSpec(release="12", suite="bookworm", variant="minbase",
                              packages=("curl", "ca-certificates"))
    argv = mmdebstrap_argv(spec, Path("/t/rootfs"), Path("/c"))
    assert argv[-3:] == ["bookworm", "/t/rootfs", "http://deb.debian.org/debian"]
    assert "--include=curl,ca-certificates" in argv and "--variant=minbase" in argv


def test_sniff_by_content_not_name(tmp_path: Path) -> None:
    from cumulo.images.importer import _is_oci_layout, check_sha256, sniff

    f = tmp_path / "x"
    f.write_bytes(b"QFI\xfb" + b"\0" * 100)
    assert sniff(f, "disk.tar.gz") == "qcow2"
    f.write_bytes(b"\x1f\x8b\x08" + b"\0" * 100)
    assert sniff(f, "disk.qcow2") == "tar"
    f.write_bytes(b"\0" * 1024)
    assert sniff(f, "d.img") == "raw"
    with pytest.raises(InvalidInputError, match="is not a rootfs or OCI tarball"):
        sniff(f, "d.bin")
    f.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty"):
        sniff(f, "d.img")
    assert _is_oci_layout(["./oci-layout", "./index.json", "./blobs/sha256/ab"])
    assert _is_oci_layout(["img/oci-layout", "img/index.json"])
    assert not _is_oci_layout(["etc/passwd", "index.json"])
    assert check_sha256(" " + "AB" * 32 + "\n") == "ab" * 32 and check_sha256("") is None
    with pytest.raises(InvalidInputError, match="64 hex digits"):
        check_sha256("abc")


def test_shutdown_cancels_long_work_but_waits_for_the_rest() -> None:
    store = Store("sqlite://")
    ops = Operations(store, workers=2)
    started = threading.Barrier(3)

    def long(progress: Progress) -> None:
        started.wait(5)
        for _ in range(3000):
            progress(0.1, "building")
            time.sleep(0.01)

    def short(progress: Progress) -> None:
        started.wait(5)
        time.sleep(0.3)
        progress(0.5, "half")

    a = ops.submit("build", long, cancel_on_shutdown=True)
    b = ops.submit("start", short)
    started.wait(5)
    t0 = time.monotonic()
    ops.shutdown()
    assert time.monotonic() - t0 < 5
    assert store.get_operation(a.id).error == "cancelled"
    assert store.get_operation(b.id).status == OpStatus.SUCCESS
    store.close()
