"""Image file store: deterministic tree hash, import dedup, delete, staging cleanup."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cumulo.errors import InvalidInputError, NotFoundError
from cumulo.images.files import ImageFiles, ImageMeta, tree_sha256, tree_size


def _populate(rootfs: Path) -> None:
    (rootfs / "bin").mkdir()
    (rootfs / "bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (rootfs / "bin/tool").chmod(0o755)
    (rootfs / "bin/sh").symlink_to("/bin/tool")
    (rootfs / "etc").mkdir()
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (rootfs / "etc/hosts").chmod(0o644)
    (rootfs / "tmp").mkdir()
    (rootfs / "tmp").chmod(0o1777)


def _tree(base: Path, name: str) -> Path:
    top = base / name
    top.mkdir()
    _populate(top)
    return top


def _staged(files: ImageFiles) -> Path:
    staging = files.staging_dir()
    _populate(staging / "rootfs")
    return staging


def test_hash_ignores_location_and_mtime(tmp_path: Path) -> None:
    a, b = _tree(tmp_path, "a"), _tree(tmp_path, "b")
    os.utime(b / "etc/hosts", (0, 0))
    assert tree_sha256(a) == tree_sha256(b)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: (t / "etc/hosts").write_text("127.0.0.1 other\n"),     # content
        lambda t: (t / "etc/hosts").chmod(0o600),                         # mode
        lambda t: ((t / "bin/sh").unlink(), (t / "bin/sh").symlink_to("/bin/x")),  # target
        lambda t: (t / "etc/new").write_text(""),                         # a new empty file
        lambda t: (t / "etc/hosts").rename(t / "etc/hosts2"),             # a rename
        lambda t: ((t / "tmp").rmdir(), (t / "tmp").write_text("")),      # type dir -> file
        lambda t: t.chmod(0o700),                                         # the root's mode
    ],
    ids=["content", "mode", "symlink", "new-file", "rename", "type", "root-mode"],
)
def test_hash_sensitive_to_changes(tmp_path: Path, change: Callable[[Path], object]) -> None:
    a, b = _tree(tmp_path, "a"), _tree(tmp_path, "b")
    change(b)
    assert tree_sha256(a) != tree_sha256(b)


def test_import_moves_staging_into_place(tmp_path: Path) -> None:
    files = ImageFiles(tmp_path / "images")
    staging = _staged(files)
    meta = ImageMeta(os="test", release="1", architecture="x86_64", command=["/bin/sh"])
    rec = files.import_tree(staging, meta)
    assert not staging.exists()
    assert files.exists(rec.sha256)
    assert files.path(rec.sha256) == tmp_path / "images" / rec.sha256 / "rootfs"
    assert (files.path(rec.sha256) / "bin/sh").readlink() == Path("/bin/tool")
    assert rec.os == "test" and rec.command == ["/bin/sh"] and rec.kind == "container"
    assert files.record(rec.sha256) == rec   # meta.json round-trips
    assert files.shas() == [rec.sha256]


def test_import_same_content_dedups(tmp_path: Path) -> None:
    files = ImageFiles(tmp_path / "images")
    first = files.import_tree(_staged(files), ImageMeta(description="first"))
    again = _staged(files)
    second = files.import_tree(again, ImageMeta(description="second"))
    assert second == first   # the stored record wins
    assert not again.exists()
    assert files.shas() == [first.sha256]
    assert list((tmp_path / "images/.staging").iterdir()) == []


def test_import_requires_rootfs(tmp_path: Path) -> None:
    files = ImageFiles(tmp_path)
    staging = files.staging_dir()
    (staging / "rootfs").rmdir()
    with pytest.raises(InvalidInputError):
        files.import_tree(staging)
    assert not staging.exists()   # consumed even on failure


def test_size_counts_hardlinks_once_and_symlinks_as_themselves(tmp_path: Path) -> None:
    top = tmp_path / "t"
    top.mkdir()
    (top / "big").write_bytes(b"x" * 1000)
    os.link(top / "big", top / "hard")
    (top / "link").symlink_to("big")       # 3 bytes: the target's name
    (top / "sub").mkdir()
    (top / "dirlink").symlink_to("sub")    # os.walk lists it as a dir; still counted
    assert tree_size(top) == 1000 + 3 + 3


def test_size_of_imported_image(tmp_path: Path) -> None:
    files = ImageFiles(tmp_path)
    rec = files.import_tree(_staged(files))
    expected = len(b"#!/bin/sh\necho hi\n") + len("/bin/tool") + len("127.0.0.1 localhost\n")
    assert files.size(rec.sha256) == rec.size == expected


def test_delete_removes_everything_including_readonly_siblings(tmp_path: Path) -> None:
    files = ImageFiles(tmp_path)
    rec = files.import_tree(_staged(files))
    top = tmp_path / rec.sha256
    idmap = top / "rootfs.idmap-1000000"   # what a container driver may leave next to rootfs
    (idmap / "etc").mkdir(parents=True)
    (idmap / "etc/passwd").write_text("x")
    (idmap / "etc").chmod(0o500)
    idmap.chmod(0o500)
    (files.path(rec.sha256) / "bin").chmod(0o555)
    assert files.delete(rec.sha256) is True
    assert not top.exists() and not files.exists(rec.sha256)
    assert files.delete(rec.sha256) is False   # idempotent
    with pytest.raises(NotFoundError):
        files.path(rec.sha256)


def test_cleanup_staging_removes_interrupted_builds(tmp_path: Path) -> None:
    files = ImageFiles(tmp_path)
    assert files.cleanup_staging() == 0
    left = _staged(files)
    (left / "rootfs/etc").chmod(0o500)
    files.staging_dir()
    kept = files.import_tree(_staged(files))
    assert files.cleanup_staging() == 2
    assert list((tmp_path / ".staging").iterdir()) == []
    assert files.exists(kept.sha256)   # finished images untouched


@pytest.mark.parametrize("bad", ["../etc", "abc", "A" * 64, "0" * 63 + "/"])
def test_rejects_bad_sha(tmp_path: Path, bad: str) -> None:
    files = ImageFiles(tmp_path)
    with pytest.raises(InvalidInputError):
        files.exists(bad)
    with pytest.raises(InvalidInputError):
        files.delete(bad)
