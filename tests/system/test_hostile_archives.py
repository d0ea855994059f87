"""Hostile tar archives at every door that unpacks one (issue 23, "Malformed and hostile
input"): `cumulo image import`, `docker load` and `docker cp` into a container. Members
that are absolute, that climb out with ``..``, symlinks and hardlinks that point outside
and a file written through such a symlink, a non-UTF-8 name: each is refused with one
line or unpacked harmlessly, and nothing outside the place it unpacks to is written or
linked (a host file next to the test's archives is the bait). Uploads above the
configured maximum (``CUMULO_MAX_UPLOAD``) are refused from their Content-Length, unread.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.dockerlib import DockerHost, docker_host

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime]

MAX_UPLOAD = 8 << 20


@pytest.fixture(scope="module")
def dk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerHost]:
    os.environ["CUMULO_MAX_UPLOAD"] = str(MAX_UPLOAD)   # the daemon inherits it
    try:
        with docker_host(tmp_path_factory.mktemp("hostile")) as host:
            yield host
    finally:
        del os.environ["CUMULO_MAX_UPLOAD"]


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"pwned\n", **kw: object) -> None:
    info = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(info, k, v)
    if info.type == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def hostile(tmp: Path, kind: str, outside: Path) -> Path:
    """A small rootfs tarball (a /bin/sh, so it looks like one) with one hostile trick."""
    path = tmp / f"{kind}.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "bin/sh", b"#!/bin/true\n", mode=0o755)
        if kind == "absolute":
            _add(tar, str(outside / "abs-pwned"))
        elif kind == "dotdot":
            _add(tar, "../" * 12 + str(outside / "dotdot-pwned").lstrip("/"))
        elif kind == "symlink":
            _add(tar, "evil", type=tarfile.SYMTYPE, linkname=str(outside))
            _add(tar, "evil/symlink-pwned")
        elif kind == "symlink-dotdot":
            _add(tar, "evil", type=tarfile.SYMTYPE, linkname="../" * 12 + str(outside)[1:])
            _add(tar, "evil/symlink-pwned")
        elif kind == "hardlink":
            _add(tar, "hl", type=tarfile.LNKTYPE, linkname=str(outside / "secret"))
        elif kind == "hardlink-dotdot":
            _add(tar, "hl", type=tarfile.LNKTYPE,
                 linkname="../" * 12 + str(outside / "secret").lstrip("/"))
        elif kind == "non-utf8":
            info = tarfile.TarInfo("x")
            info.name = b"bin/\xff\xfe-name".decode("utf-8", "surrogateescape")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"hi\n"))
    return path


KINDS = ("absolute", "dotdot", "symlink", "symlink-dotdot", "hardlink", "hardlink-dotdot",
         "non-utf8")


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """The bait: a directory the archives aim at, holding one file."""
    bait = tmp_path / "outside"
    bait.mkdir()
    (bait / "secret").write_text("host secret\n")
    yield bait
    assert sorted(p.name for p in bait.iterdir()) == ["secret"], list(bait.iterdir())
    assert (bait / "secret").read_text() == "host secret\n"
    assert (bait / "secret").stat().st_nlink == 1, "a hardlink to a host file was made"


def one_line(stderr: str) -> None:
    line = stderr.strip()
    assert line and "\n" not in line and "Traceback" not in line, stderr


@pytest.mark.parametrize("kind", KINDS)
def test_image_import(dk: DockerHost, kind: str, tmp_path: Path, outside: Path) -> None:
    d = dk.daemon
    r = d.cli("image", "import", str(hostile(tmp_path, kind, outside)), "--alias", "evil",
              check=False, timeout=120)
    print(kind, r.returncode, r.stderr.strip())
    if r.returncode != 0:
        one_line(r.stderr)
        assert "Exiting with failure" not in r.stderr, r.stderr   # says which member
        return
    # imported: what it holds stays inside the image (run it and look)
    d.cli("launch", "evil", "e", "--network", "none", "--", "/bin/busybox", "sleep", "60",
          check=False)
    d.cli("delete", "e", "--force", check=False)
    d.cli("image", "delete", "evil")


@pytest.mark.parametrize("kind", KINDS)
def test_docker_load(dk: DockerHost, kind: str, tmp_path: Path, outside: Path) -> None:
    r = dk.run("load", "-i", str(hostile(tmp_path, kind, outside)), check=False)
    print(kind, r.returncode, r.stderr.strip())
    assert r.returncode != 0   # none is an image archive
    one_line(r.stderr)


@pytest.mark.parametrize("kind", KINDS)
def test_docker_cp_upload(dk: DockerHost, kind: str, tmp_path: Path, outside: Path) -> None:
    name = f"cp-{kind}"
    dk.run("run", "-d", "--name", name, "busybox", "sleep", "600")
    try:
        with open(hostile(tmp_path, kind, outside), "rb") as f:
            r = dk.run("cp", "-", f"{name}:/tmp", check=False,
                       input=f.read().decode("latin-1"))
        print(kind, r.returncode, r.stderr.strip())
        if r.returncode != 0:
            one_line(r.stderr)
            # a member's trick is a 400 that says so, not a Python class name
            assert "LinkError" not in r.stderr and "KeyError" not in r.stderr, r.stderr
        # inside the container nothing points at the host's files either
        ls = dk.run("exec", name, "ls", "-la", "/tmp").stdout
        assert str(outside) not in ls or "evil ->" in ls, ls
    finally:
        dk.run("rm", "-f", name)


def announce(sock: Path, method: str, path: str, length: str) -> tuple[int, str]:
    """Send headers announcing ``length`` bytes and only a few of them; the answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(sock))
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: cumulo\r\nContent-Length: {length}\r\n"
                  f"Content-Type: application/x-tar\r\n\r\n".encode() + b"x" * 16)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
                re.search(rb"(?i)content-length: (\d+)", data).group(1)):  # type: ignore[union-attr]
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def test_uploads_above_the_maximum_are_refused_unread(dk: DockerHost) -> None:
    """Content-Length over the bound: refused at once with one line; nothing staged."""
    d = dk.daemon
    too_big = str(MAX_UPLOAD + 1)
    staging = d.state_dir / "images" / ".staging"
    before = set(staging.iterdir()) if staging.is_dir() else set()
    for sock, path in ((d.socket, "/1.0/image-imports?filename=x.tar"),
                       (dk.socket, "/v1.41/images/load"),
                       (dk.socket, "/v1.41/containers/nosuch/archive?path=/tmp")):
        method = "PUT" if "archive" in path else "POST"
        status, text = announce(sock, method, path, too_big)
        print(path, status, text)
        assert status == 413, (path, status, text)
        body = json.loads(text)
        msg = body.get("error") or body.get("message")
        assert "at most 8.0MiB" in msg and "\n" not in msg, msg
    after = set(staging.iterdir()) if staging.is_dir() else set()
    assert after == before
