"""Which CRIU Cumulo hands to the runtime: the private 4.x first, then PATH."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cumulo.host import criu


def test_private_install_wins_over_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private = tmp_path / "criu"
    private.write_text("#!/bin/sh\n")
    private.chmod(0o755)
    other = tmp_path / "bin"
    other.mkdir()
    (other / "criu").write_text("#!/bin/sh\n")
    (other / "criu").chmod(0o755)
    monkeypatch.setattr(criu, "PRIVATE", private)
    monkeypatch.setenv("PATH", str(other))
    assert criu.criu_binary() == str(private)
    private.chmod(0o644)   # not executable: ignored
    assert criu.criu_binary() == str(other / "criu")


def test_none_without_any_criu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(criu, "PRIVATE", tmp_path / "absent")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(criu.shutil, "which", lambda *a, **k: None)
    assert criu.criu_binary() is None


@pytest.mark.skipif(not os.access(criu.PRIVATE, os.X_OK), reason="install.sh's criu not here")
def test_installed_criu_is_4x_and_passes_check() -> None:
    from cumulo.host.probe import probe

    info = probe()
    assert info.criu is not None and int(info.criu.split(".")[0]) >= 4
    assert info.criu_check, info.notes
