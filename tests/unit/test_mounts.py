"""host/mounts.py: whether a path is a mount point."""

from __future__ import annotations

from pathlib import Path

from cumulo.host import mounts


def test_is_mounted_only_at_a_mount_point(tmp_path: Path) -> None:
    """A path that does not exist is none (answered without reading every mount); a
    directory of a filesystem is none until something is mounted on it."""
    (tmp_path / "dir").mkdir()
    assert mounts.is_mounted(Path("/")) and mounts.is_mounted(Path("/proc"))
    assert not mounts.is_mounted(tmp_path / "dir")
    assert not mounts.is_mounted(tmp_path / "missing")
    mounts.bind(tmp_path / "dir", tmp_path / "dir")
    try:
        assert mounts.is_mounted(tmp_path / "dir")
    finally:
        mounts.umount(tmp_path / "dir")
    assert not mounts.is_mounted(tmp_path / "dir")
