"""Path tricks at the doors that take a path inside an instance: ``cumulo file push|pull``
and ``cumulo volume attach``. ``..`` climbing out, absolute host paths, and symlinks made
inside the container that aim at the host's files must all stay inside the container's
root: the host's files are neither read nor written, and no mount lands on the host.

The files are copied by an exec in the container (its own root and mounts), and volume
mount points are resolved by runc inside the rootfs: these tests hold that to account.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.conftest import Daemon

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime]
UP = "/.." * 12     # more than deep enough to climb from any container root to /


def sh(d: Daemon, name: str, script: str) -> str:
    return d.cli("exec", name, "--", "sh", "-c", script).stdout


def host_mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(str(path))]


def test_file_and_volume_paths_stay_inside(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    outside = tmp_path / "outside"          # the host's files a trick would reach
    outside.mkdir()
    secret = outside / "secret"
    secret.write_text("host secret\n")
    d.cli("image", "build", "busybox")
    d.cli("launch", "busybox", "c", "--", "sleep", "3600")
    payload = tmp_path / "payload"
    payload.write_text("from the client\n")

    # file pull: .. and the host's absolute path name nothing in the container
    for path in (f"{UP}{secret}", str(secret), f"/tmp/{UP}{secret}"):
        r = d.cli("file", "pull", "c", path, "-", check=False)
        assert r.returncode != 0 and "host secret" not in r.stdout, (path, r)
        assert "no such file" in r.stderr.lower() and len(r.stderr.strip().splitlines()) == 1

    # file push through .. : written at that path inside the container, not on the host
    d.cli("file", "push", "c", str(payload), f"{UP}/tmp/pushed")
    assert sh(d, "c", "cat /tmp/pushed") == "from the client\n"
    sh(d, "c", f"mkdir -p {outside}")   # the host's path exists inside too, now
    d.cli("file", "push", "c", str(payload), f"{UP}{outside}/pushed")
    assert not (outside / "pushed").exists()
    assert sh(d, "c", f"cat {outside}/pushed") == "from the client\n"

    # symlinks made in the container aiming at the host's files: resolved in its root
    sh(d, "c", f"ln -s {secret} /tmp/abs; ln -s ../../../../../../../..{secret} /tmp/rel;"
               f" ln -s {outside} /tmp/dir; ln -s {UP}{outside} /tmp/updir")
    for link in ("/tmp/abs", "/tmp/rel", "/tmp/dir/secret", "/tmp/updir/secret"):
        r = d.cli("file", "pull", "c", link, "-", check=False)
        assert r.returncode != 0 and "host secret" not in r.stdout, (link, r)
    for link in ("/tmp/abs", "/tmp/rel", "/tmp/dir/via-dir", "/tmp/updir/via-updir"):
        d.cli("file", "push", "c", str(payload), link)
    assert secret.read_text() == "host secret\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert sh(d, "c", f"cat {secret}") == "from the client\n"   # the container's copy

    # paths that are no absolute path inside: refused in one line, nothing written
    # (a NUL cannot go in an argv: tests/unit/test_api_fuzz.py sends it to the API)
    for bad in ("tmp/x", "../x", ""):
        r = d.cli("file", "push", "c", str(payload), bad, check=False)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, (bad, r)
        assert "absolute path" in r.stderr, r

    # volume attach: .. is taken inside the container, and so is a symlink aiming out
    d.cli("volume", "create", "up", "--size", "16MiB")
    d.cli("volume", "create", "via", "--size", "16MiB")
    for bad in ("../x", "data", f"{UP}", "/proc/../proc"):
        r = d.cli("volume", "attach", "up", "c", bad, check=False)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, (bad, r)
    d.cli("volume", "attach", "up", "c", f"{UP}{outside}/mnt-up")
    sh(d, "c", f"ln -s {outside}/mnt-via /mnt-link")
    d.cli("volume", "attach", "via", "c", "/mnt-link")
    d.cli("restart", "c", "--timeout", "1")   # a container mounts its volumes as it starts
    sh(d, "c", f"echo up > {outside}/mnt-up/f; echo via > /mnt-link/f")
    assert sh(d, "c", f"cat {outside}/mnt-via/f") == "via\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert host_mounts_under(outside) == []
    assert secret.read_text() == "host secret\n"
    d.cli("delete", "c", "--force")
    for vol in ("up", "via"):
        d.cli("volume", "delete", vol)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
