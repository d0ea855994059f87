"""Build the busybox image for real (root): layout, determinism, chroot, PID 1, cleanup."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cumulo.errors import InvalidInputError, UnsupportedError
from cumulo.images import builders
from cumulo.images.builders import BUSYBOX_COMMAND, build, build_busybox
from cumulo.images.files import ImageFiles

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="building images needs root"),
    pytest.mark.skipif(not Path("/bin/busybox").is_file(), reason="busybox-static missing"),
]


@pytest.fixture
def files(tmp_path: Path) -> ImageFiles:
    return ImageFiles(tmp_path / "images")


def test_busybox_rootfs_layout(files: ImageFiles) -> None:
    seen: list[float] = []
    rec = build_busybox(files, lambda frac, _msg: seen.append(frac))
    root = files.path(rec.sha256)
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert os.readlink(root / "usr/bin/head") == "/bin/busybox"
    busybox = root / "bin/busybox"
    assert not busybox.is_symlink() and busybox.stat().st_ino != Path("/bin/busybox").stat().st_ino
    assert "root:x:0:0:root:/root:/bin/sh" in (root / "etc/passwd").read_text()
    assert "nobody:x:65534:" in (root / "etc/group").read_text()
    assert "busybox" in (root / "etc/os-release").read_text()
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (root / "root").stat().st_mode & 0o777 == 0o700
    owners = {(st.st_uid, st.st_gid) for st in (p.lstat() for p in root.rglob("*"))}
    assert owners == {(0, 0)}
    assert rec.os == "busybox" and rec.release[0].isdigit()
    assert rec.architecture == os.uname().machine and rec.command == BUSYBOX_COMMAND
    assert rec.size == files.size(rec.sha256) > 1_000_000
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)


def test_build_is_deterministic(tmp_path: Path) -> None:
    a = build("busybox", ImageFiles(tmp_path / "a"))
    b = build("busybox", ImageFiles(tmp_path / "b"))
    assert a.sha256 == b.sha256
    files = ImageFiles(tmp_path / "a")
    assert build("busybox", files).sha256 == a.sha256   # rebuild dedups
    assert files.shas() == [a.sha256]


def test_chroot_shell_runs(files: ImageFiles) -> None:
    root = files.path(build_busybox(files).sha256)
    out = subprocess.run(
        ["chroot", str(root), "/bin/sh", "-c", "echo ok"],
        capture_output=True, text=True, timeout=10, check=True,
    )
    assert out.stdout == "ok\n"


def _child(pid: int) -> int:
    """The first child of ``pid`` once it has one (bounded wait)."""
    deadline = time.monotonic() + 5
    while not (kids := Path(f"/proc/{pid}/task/{pid}/children").read_text().split()):
        assert time.monotonic() < deadline, f"pid {pid} never started a child"
        time.sleep(0.02)
    return int(kids[0])


def _start_pid1(argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """Run argv as PID 1 of a new pid namespace: (the unshare process, host pid of PID 1)."""
    proc = subprocess.Popen(
        ["unshare", "-pf", "--mount-proc", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    pid1 = _child(proc.pid)
    nspid = next(ln for ln in Path(f"/proc/{pid1}/status").read_text().splitlines()
                 if ln.startswith("NSpid:"))
    assert nspid.split()[-1] == "1"
    return proc, pid1


def test_default_command_stops_on_sigterm_as_pid1() -> None:
    """The image's PID 1 loop exits at once on SIGTERM (with /dev/null, as in a container)."""
    proc, pid1 = _start_pid1(BUSYBOX_COMMAND)
    try:
        sleep = _child(pid1)           # PID 1 is inside `wait` for this sleep
        os.kill(sleep, signal.SIGSTOP)  # which now never ends by itself
        os.kill(pid1, signal.SIGTERM)
        assert proc.wait(timeout=5) == 0   # the trap ran without waiting for the sleep
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid1, signal.SIGKILL)
        proc.communicate(timeout=5)


def test_default_command_does_not_spin_without_dev(files: ImageFiles) -> None:
    """In a bare chroot (no /dev/null) ash cannot start `sleep &`; the loop must not busy-fork."""
    root = files.path(build_busybox(files).sha256)
    proc, pid1 = _start_pid1(["chroot", str(root), *BUSYBOX_COMMAND])
    try:
        time.sleep(1.5)
    finally:
        os.kill(pid1, signal.SIGKILL)   # ends the whole pid namespace
        _, err = proc.communicate(timeout=5)
    assert b"/dev/null" in err             # the failure mode is real here
    assert err.count(b"/dev/null") <= 3    # about one per second, not thousands


def test_failed_build_leaves_no_staging(files: ImageFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_rootfs: Path, _version: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(builders, "_write_etc", boom)
    with pytest.raises(KeyboardInterrupt):
        build_busybox(files)
    assert list(files.staging_root.iterdir()) == []
    assert files.shas() == []


def test_missing_busybox_is_unsupported(files: ImageFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builders, "BUSYBOX", Path("/nonexistent/busybox"))
    with pytest.raises(UnsupportedError, match="apt-get install busybox-static"):
        build_busybox(files)


def test_unknown_builder_lists_known(files: ImageFiles) -> None:
    with pytest.raises(InvalidInputError, match="busybox"):
        build("ubuntu/24.04", files)
