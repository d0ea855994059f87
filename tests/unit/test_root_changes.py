"""docker diff's rules over a container's root (drivers/container/changes.py): an
overlay upper dir with whiteouts, and a full copy compared with the image tree."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cumulo.drivers.container.changes import overlay_changes, tree_changes


def image(tmp: Path) -> Path:
    lower = tmp / "lower"
    for d in ("bin", "etc", "home/u", "tmp"):
        (lower / d).mkdir(parents=True)
    for f in ("bin/ls", "bin/sh", "etc/passwd", "home/u/.profile"):
        (lower / f).write_text("x")
    return lower


def test_a_full_copy_against_its_image(tmp_path: Path) -> None:
    lower = image(tmp_path)
    root = tmp_path / "root"
    shutil.copytree(lower, root, symlinks=True)   # mtimes kept
    (root / "bin/ls").unlink()
    (root / "tmp/new").mkdir()
    (root / "tmp/new/f").write_text("1")
    (root / "etc/passwd").write_text("changed")
    shutil.rmtree(root / "home")
    assert tree_changes(root, lower) == [
        ("/bin", 0), ("/bin/ls", 2), ("/etc/passwd", 0), ("/home", 2), ("/tmp", 0),
        ("/tmp/new", 1), ("/tmp/new/f", 1)]
    assert tree_changes(lower, lower) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="a whiteout is a 0/0 device: needs root")
def test_an_overlay_upper_dir_with_whiteouts(tmp_path: Path) -> None:
    lower = image(tmp_path)
    upper = tmp_path / "upper"
    for d in ("bin", "tmp/new", "etc"):
        (upper / d).mkdir(parents=True)
    for d in ("bin", "tmp", "etc"):
        st = os.stat(lower / d)
        os.utime(upper / d, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(upper / "bin", ns=(0, 0))            # an entry went: the dir changed
    os.mknod(upper / "bin/ls", 0o600 | 0o020000, os.makedev(0, 0))
    (upper / "tmp/new/f").write_text("1")
    (upper / "etc/passwd").write_text("changed")
    st = os.stat(lower / "etc")
    os.utime(upper / "etc", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert overlay_changes(upper, lower) == [
        ("/bin", 0), ("/bin/ls", 2), ("/etc/passwd", 0), ("/tmp", 0), ("/tmp/new", 1),
        ("/tmp/new/f", 1)]


def test_the_runtimes_mount_points_are_not_changes(tmp_path: Path) -> None:
    """/etc/resolv.conf made as a bind target (and /etc's new mtime): Docker's init layer."""
    lower = image(tmp_path)
    root = tmp_path / "root"
    shutil.copytree(lower, root, symlinks=True)
    (root / "etc/resolv.conf").write_text("")
    (root / "proc").mkdir()
    assert tree_changes(root, lower) == []
    (root / "etc/new").write_text("")
    assert tree_changes(root, lower) == [("/etc", 0), ("/etc/new", 1)]
