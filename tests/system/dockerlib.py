"""A cumulod serving the Docker API on a temp socket, and the docker CLI pointed at it."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.docker_images import busybox_archive
from tests.system.conftest import Daemon, running_daemon


@dataclass
class DockerHost:
    daemon: Daemon
    socket: Path
    env: dict[str, str]
    archive: Path

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["docker", *args], capture_output=True, text=True, env=self.env,
                           input=input, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} -> {r.returncode}\n"
                                 f"stdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def fails(self, *args: str, match: str, code: int = 125) -> str:
        """Docker's one-line 'Error response from daemon: ...' and its exit status."""
        r = self.run(*args, check=False)
        assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
        assert "Error response from daemon: " in r.stderr and match in r.stderr, r.stderr
        return r.stderr

    def wait_for(self, predicate: object, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():   # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)


DEBIAN_CLIENT_DIR = "/opt/cumulo/docker/bin"   # scripts/install.sh, where no docker is


@contextmanager
def docker_host(tmp: Path) -> Iterator[DockerHost]:
    """A daemon with its Docker socket, a clean DOCKER_CONFIG, and busybox loaded through
    ``docker load`` from an archive built here from the busybox tree."""
    sock = tmp / "docker.sock"
    with running_daemon(tmp, extra=("--docker-socket", str(sock))) as d:
        config = tmp / "docker-config"
        config.mkdir()
        env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", "DOCKER_CONFIG": str(config),
               "CUMULO_SOCKET": str(d.socket),
               # the machine's docker client, else the one scripts/install.sh unpacked
               "PATH": f"{os.environ.get('PATH', '')}:{DEBIAN_CLIENT_DIR}"}
        host = DockerHost(d, sock, env, busybox_archive(tmp / "image"))
        r = host.run("load", "-i", str(host.archive))
        assert "Loaded image: busybox:latest" in r.stdout, r.stdout
        try:
            yield host
        finally:
            for cid in host.run("ps", "-aq", check=False).stdout.split():
                host.run("rm", "-f", cid, check=False)
