"""Which CRIU Cumulo hands to the runtime (the private 4.x first, then PATH), and the
one-line refusal when it is missing, broken or cannot lock the network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cumulo.drivers.container import checkpoint
from cumulo.errors import UnsupportedError
from cumulo.host import criu
from cumulo.host import probe as probe_mod


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


def _fake_criu(tmp_path: Path, check_rc: int, nft_rc: int) -> Path:
    """A criu that says 4.2.1; ``criu check`` exits ``check_rc``, the nftables feature
    check ``nft_rc``."""
    fake = tmp_path / f"criu-{check_rc}-{nft_rc}"
    fake.write_text("#!/bin/sh\n"
                    'case "$1 $3" in\n'
                    '  "--version ") echo "Version: 4.2.1" ;;\n'
                    f'  "check network_lock_nftables") exit {nft_rc} ;;\n'
                    f'  "check ") exit {check_rc} ;;\n'
                    "  *) exit 1 ;;\n"
                    "esac\n")
    fake.chmod(0o755)
    return fake


def _no_iptables(monkeypatch: pytest.MonkeyPatch) -> None:
    """This host as a fresh Debian 12: no iptables-restore anywhere."""
    which = shutil.which
    monkeypatch.setattr(criu.shutil, "which", lambda name, *a, **k:
                        None if name == criu.IPTABLES else which(name, *a, **k))


def _refusal(monkeypatch: pytest.MonkeyPatch, path: Path | None) -> tuple[list[str], str]:
    """(the probe's notes about checkpoints, the error a checkpoint gets) with ``path``."""
    monkeypatch.setattr(probe_mod, "criu_binary", lambda: None if path is None else str(path))
    monkeypatch.setattr(checkpoint, "criu_binary", lambda: None if path is None else str(path))
    _no_iptables(monkeypatch)
    info = probe_mod.probe()
    notes = [n for n in info.notes if n.startswith("checkpoint/restore unavailable")]
    with pytest.raises(UnsupportedError) as err:
        checkpoint.require_criu(info)
    return notes, str(err.value)


@pytest.mark.parametrize(("check_rc", "nft_rc", "why"), [
    (None, None, "criu is not installed (scripts/install.sh provides CRIU 4.x)"),
    (1, 0, "criu 4.2.1 fails `criu check` (CRIU 4.x is needed; see scripts/install.sh)"),
    (0, 1, "criu 4.2.1 cannot lock the network: it is built without nftables and"
           " iptables-restore is missing"),
], ids=["missing", "broken", "no-network-lock"])
def test_probe_and_checkpoint_refuse_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        check_rc: int | None, nft_rc: int | None, why: str) -> None:
    """`cumulo host info` says why, and a checkpoint (or migration) is refused at once with
    the same reason, before runc or CRIU is run."""
    path = None if check_rc is None else _fake_criu(tmp_path, check_rc, nft_rc or 0)
    notes, error = _refusal(monkeypatch, path)
    assert len(notes) == 1 and why in notes[0], notes
    assert error.startswith("containers cannot be checkpointed on this host: " + why)
    assert "\n" not in notes[0] and "\n" not in error


def test_a_criu_with_nftables_needs_no_iptables(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_criu(tmp_path, 0, 0)
    _no_iptables(monkeypatch)
    assert criu.network_lock(str(fake)) == "nftables"
    assert criu.network_lock(str(_fake_criu(tmp_path, 0, 1))) is None
    monkeypatch.setattr(probe_mod, "criu_binary", lambda: str(fake))
    info = probe_mod.probe()
    assert info.criu_network_lock == "nftables" and info.to_dict()["criu_network_lock"]
    assert not [n for n in info.notes if n.startswith("checkpoint/restore")]
