"""An image's VM base disk from its root filesystem (mke2fs -d, qemu-img convert): the
guest's files with their owners and modes, cached once per image and size, no leftovers.

No loop mounts and no QEMU: the disk is read back with qemu-img and debugfs.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cumulo.errors import DriverError, InvalidInputError, NotFoundError
from cumulo.images import vmdisk
from tests.helpers import build_busybox_rootfs

MIB = 1 << 20


def image(tmp_path: Path) -> Path:
    """A busybox tree laid out like the image store: <sha-like dir>/rootfs."""
    rootfs = build_busybox_rootfs(tmp_path / ("a" * 64))
    (rootfs / "etc" / "secret").write_text("only root\n")
    os.chmod(rootfs / "etc" / "secret", 0o600)
    os.chown(rootfs / "etc" / "secret", 0, 42)
    return rootfs


def debugfs(qcow2: Path, tmp_path: Path, request: str) -> str:
    raw = tmp_path / "check.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], check=True)
    try:
        return subprocess.run(["debugfs", "-R", request, str(raw)], capture_output=True,
                              text=True, check=True).stdout
    finally:
        raw.unlink()


def test_base_disk_holds_the_tree_and_is_cached(tmp_path: Path) -> None:
    rootfs = image(tmp_path)
    disk = vmdisk.base_disk(rootfs)
    assert disk.parent == rootfs.parent / "vm" and disk.name.startswith("base-")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == vmdisk.DEFAULT_MIN
    # sparse: a 1 GiB disk of a ~2 MiB tree
    assert os.stat(disk).st_blocks * 512 < 16 * MIB
    assert debugfs(disk, tmp_path, "cat /etc/secret") == "only root\n"
    assert f"Filesystem volume name:   {vmdisk.LABEL}" in debugfs(disk, tmp_path, "stats")
    stat = debugfs(disk, tmp_path, "stat /etc/secret")
    assert "User:     0   Group:    42" in stat and "Mode:  0600" in stat
    assert "Type: symlink" in debugfs(disk, tmp_path, "stat /bin/sh")
    # cached: the same file, untouched; another size is another file
    mtime = disk.stat().st_mtime_ns
    assert vmdisk.base_disk(rootfs) == disk and disk.stat().st_mtime_ns == mtime
    small = vmdisk.base_disk(rootfs, 64 * MIB)
    assert small != disk and small.is_file()
    assert sorted(p.name for p in disk.parent.iterdir()) == sorted([".lock", disk.name,
                                                                    small.name])


def test_bad_input_builds_nothing(tmp_path: Path) -> None:
    rootfs = image(tmp_path)
    with pytest.raises(InvalidInputError, match="too small for this image"):
        vmdisk.base_disk(rootfs, 4 * MIB)
    with pytest.raises(NotFoundError):
        vmdisk.base_disk(tmp_path / "nothing" / "rootfs")
    assert not (rootfs.parent / "vm").exists()


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rootfs = image(tmp_path)
    (rootfs / "big").write_bytes(b"\1" * (8 * MIB))
    # past the size check, mke2fs cannot fit 10 MiB of files in a 9 MiB ext4
    monkeypatch.setattr(vmdisk, "min_size", lambda _rootfs: 0)
    with pytest.raises(DriverError, match="mke2fs"):
        vmdisk.base_disk(rootfs, 9 * MIB)
    assert [p.name for p in (rootfs.parent / "vm").iterdir()] == [".lock"]


def test_concurrent_builds_make_one_disk(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rootfs = image(tmp_path)
    builds = []
    make = vmdisk.ext4.make

    def counted(*args: Any, **kwargs: Any) -> None:
        builds.append(args)
        make(*args, **kwargs)

    monkeypatch.setattr(vmdisk.ext4, "make", counted)
    with ThreadPoolExecutor(4) as pool:
        disks = list(pool.map(lambda _: vmdisk.base_disk(rootfs, 64 * MIB), range(4)))
    assert len(set(disks)) == 1 and disks[0].is_file()
    assert len(builds) == 1      # the others waited on the lock and found it built
    assert sorted(p.name for p in disks[0].parent.iterdir()) == [".lock", disks[0].name]
