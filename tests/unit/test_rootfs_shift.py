"""The uid-shifted copy of an image: every entry moves by exactly the base, once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cumulo.drivers.container.rootfs import _shift_tree


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_every_entry_is_shifted_once(tmp_path: Path) -> None:
    top = tmp_path / "tree"
    (top / "etc" / "deep").mkdir(parents=True)
    (top / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (top / "bin").mkdir()
    (top / "lib").symlink_to("bin")
    (top / "bin" / "sh").symlink_to("busybox")
    _shift_tree(top, 1000)
    for path in [top, top / "etc", top / "etc" / "deep", top / "etc" / "passwd", top / "bin",
                 top / "lib", top / "bin" / "sh"]:
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (1000, 1000), path
