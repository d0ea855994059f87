"""``docker cp`` both ways: the archive endpoints, on a running or stopped container.

The tar work happens in a forked child chrooted into the container's root (PID 1's
``/proc/PID/root``, or the root still mounted in the instance's dir when it does not
run), so every path, absolute symlinks included, resolves inside the container, never on
the host. Owners are shifted through the container's uid and gid maps: a file root owns
inside is root's inside, whatever its host id.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cumulo.docker.common import DockerError

IdMap = list[tuple[int, int, int]]


@dataclass(frozen=True)
class Root:
    """Where the container's ``/`` is on the host, and its (inside, host, count) id maps."""

    path: str
    uids: IdMap
    gids: IdMap


def running(pid: int) -> Root:
    return Root(f"/proc/{pid}/root", _idmap(pid, "uid"), _idmap(pid, "gid"))


def stopped(root: Path, idmap: IdMap) -> Root:
    """The root of a container that does not run (mounted in its instance dir)."""
    if not os.path.ismount(root):
        raise DockerError(409, "the container's root is not mounted on the host (start the"
                               " container once)")
    return Root(str(root), idmap, idmap)


def _idmap(pid: int, which: str) -> IdMap:
    """(inside, outside, count) ranges of ``/proc/PID/{uid,gid}_map``."""
    out = []
    with open(f"/proc/{pid}/{which}_map") as f:
        for line in f:
            a, b, n = (int(x) for x in line.split())
            out.append((a, b, n))
    return out


def _to_host(ranges: IdMap, inside: int) -> int:
    for a, b, n in ranges:
        if a <= inside < a + n:
            return b + inside - a
    return ranges[0][1] if ranges else inside


def _to_inside(ranges: IdMap, host: int) -> int:
    for a, b, n in ranges:
        if b <= host < b + n:
            return a + host - b
    return 65534


def _in_child(root: Root, work: Any, path: str) -> Any:
    """Run ``work()`` chrooted into the container's root in a forked child; its JSON
    result."""
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:   # pragma: no cover - the child
        code = 0
        try:
            os.close(rfd)
            os.chroot(root.path)
            os.chdir("/")
            result = {"ok": work()}
        except BaseException as err:   # everything goes back as one line
            refused = isinstance(err, (tarfile.TarError, KeyError))   # a member's trick
            text = err.args[0] if isinstance(err, KeyError) and err.args else err
            result = {"error": f"refused archive: {text}" if refused
                      else f"{type(err).__name__}: {err}",
                      "missing": isinstance(err, FileNotFoundError), "refused": refused}
            code = 1
        os.write(wfd, json.dumps(result).encode())
        os._exit(code)
    os.close(wfd)
    data = b""
    while chunk := os.read(rfd, 65536):
        data += chunk
    os.close(rfd)
    os.waitpid(child, 0)
    answer = json.loads(data or b'{"error": "the copy process died"}')
    if "error" in answer:
        if answer.get("missing"):
            raise DockerError(404, f"Could not find the file {path} in container")
        raise DockerError(400 if answer.get("refused") else 500, answer["error"])
    return answer["ok"]


def stat_header(root: Root, path: str) -> str:
    """``X-Docker-Container-Path-Stat``: base64 JSON of the path's name, size, mode."""
    def work() -> dict[str, Any]:
        st = os.lstat(path)
        link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
        mode = stat.S_IMODE(st.st_mode) | (1 << 31 if stat.S_ISDIR(st.st_mode) else 0) | (
            1 << 27 if stat.S_ISLNK(st.st_mode) else 0)
        return {"name": os.path.basename(path.rstrip("/")) or "/", "size": st.st_size,
                "mode": mode, "mtime": "1970-01-01T00:00:00Z", "linkTarget": link}
    return base64.b64encode(json.dumps(_in_child(root, work, path)).encode()).decode()


def pack(root: Root, path: str, dest: Path) -> None:
    """The tar of ``path`` (inside) into ``dest`` (on the host), owners as seen inside."""
    uids, gids = root.uids, root.gids
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def work() -> None:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
            def inside(info: tarfile.TarInfo) -> tarfile.TarInfo:
                info.uid, info.gid = _to_inside(uids, info.uid), _to_inside(gids, info.gid)
                info.uname = info.gname = ""
                return info
            tar.add(path, arcname=os.path.basename(path.rstrip("/")) or ".", filter=inside)

    try:
        _in_child(root, work, path)
    finally:
        os.close(fd)   # the parent's copy; the child closed its own


def unpack(root: Root, source: Path, into: str) -> None:
    """Extract the tar ``source`` (on the host) into the directory ``into`` (inside)."""
    uids, gids = root.uids, root.gids
    fd = os.open(source, os.O_RDONLY)

    def work() -> None:
        if not os.path.isdir(into):
            raise NotADirectoryError(f"{into} is not a directory in the container")
        with os.fdopen(fd, "rb") as f, tarfile.open(fileobj=f, mode="r:*") as tar:
            def shifted(info: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
                info = tarfile.data_filter(info, dest)
                return info.replace(uid=_to_host(uids, info.uid or 0),
                                    gid=_to_host(gids, info.gid or 0), uname="", gname="",
                                    deep=False)
            tar.extractall(into, filter=shifted, numeric_owner=True)

    try:
        _in_child(root, work, into)
    finally:
        os.close(fd)


def temp_file(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=base, suffix=".tar")
    os.close(fd)
    return Path(name)
