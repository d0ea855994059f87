"""The image follows its instance (services/migration_image.py): sent only when the
destination lacks it, as the file ``image export`` makes, with progress; a destination
that imports it under another fingerprint: the move is refused."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cumulo.client import APIError
from cumulo.domain.models import Image
from cumulo.errors import DriverError
from cumulo.services import migration_image

FP = "d" * 64


class FakeRemote:
    """The destination's API as the source's client sees it."""

    def __init__(self, has: bool, imports_as: str = FP) -> None:
        self.has, self.imports_as = has, imports_as
        self.uploaded = b""
        self.calls: list[tuple[str, str]] = []

    def export_image(self, ref: str) -> Iterator[tuple[str, bytes]]:
        self.calls.append(("GET", f"/image-files/{ref}"))
        if not self.has:
            raise APIError("image not found", 404, "NotFoundError")
        yield "qcow2", b"q"
        raise AssertionError("read on after the first piece")

    def request(self, method: str, path: str, **kw: Any) -> Any:
        self.calls.append((method, path))
        if method == "POST":
            body = kw["content"]
            while chunk := body.read(1 << 20):
                self.uploaded += chunk
            assert kw["params"]["filename"].startswith(FP[:12])
            assert kw["params"]["fingerprint"] == FP
            return _Json({"fingerprint": self.imports_as})
        return _Json({})


class _Json:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def json(self) -> dict[str, Any]:
        return self.data


def disk_image(root: Path, size: int) -> Image:
    (root / FP).mkdir(parents=True)
    (root / FP / "disk.qcow2").write_bytes(b"q" * size)
    return Image(fingerprint=FP, kind="vm-disk", aliases=["deb"], size=size)


def test_not_sent_when_the_destination_has_it(tmp_path: Path) -> None:
    rc = FakeRemote(has=True)
    assert not migration_image.send(tmp_path, disk_image(tmp_path, 10), rc,  # type: ignore[arg-type]
                                    "b", lambda f, m: None)
    assert rc.calls == [("GET", f"/image-files/{FP}")]


def test_a_disk_is_sent_with_progress(tmp_path: Path) -> None:
    rc = FakeRemote(has=False)
    seen: list[tuple[float, str]] = []
    size = 20 << 20
    assert migration_image.send(tmp_path, disk_image(tmp_path, size), rc,  # type: ignore[arg-type]
                                "b", lambda f, m: seen.append((f, m)))
    assert rc.uploaded == b"q" * size
    assert any("sending image deb to b: 16 of ~20 MiB" in m for _, m in seen), seen
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] >= 0.02 and fractions[-1] <= 0.3


def test_a_rootfs_goes_as_tar_gz(tmp_path: Path) -> None:
    (tmp_path / FP / "rootfs" / "etc").mkdir(parents=True)
    (tmp_path / FP / "rootfs" / "etc" / "hostname").write_text("ct\n")
    rc = FakeRemote(has=False)
    assert migration_image.send(tmp_path, Image(fingerprint=FP, kind="container"), rc,  # type: ignore[arg-type]
                                "b", lambda f, m: None)
    out = tmp_path / "sent.tar.gz"
    out.write_bytes(rc.uploaded)
    with tarfile.open(out) as tar:
        assert "./etc/hostname" in tar.getnames()


def test_another_fingerprint_there_is_refused(tmp_path: Path) -> None:
    rc = FakeRemote(has=False, imports_as="e" * 64)
    with pytest.raises(DriverError, match="imported image deb as eeeeeeeeeeee, not dddd"):
        migration_image.send(tmp_path, disk_image(tmp_path, 10), rc,  # type: ignore[arg-type]
                             "b", lambda f, m: None)
    assert rc.calls[-1][0] == "POST"
