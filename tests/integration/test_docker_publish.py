"""``docker run -p`` through Cumulo's port forwards, on the real kernel (nftables).

The daemon runs in a namespace made for the test (``netd``), the world outside in
another one wired to it (``outside``, 192.0.2.0/24); nothing leaves them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import container_skip_reason
from tests.integration.test_firewall import body, get_script, outside
from tests.integration.test_networks import NetDaemon, netd, sh

__all__ = ["netd", "outside"]  # the fixtures, used by name

pytestmark = [pytest.mark.root, pytest.mark.runtime]
if (_reason := container_skip_reason()) is not None:
    pytestmark.append(pytest.mark.skip(reason=_reason))

WEB = "mkdir -p /www && echo hello-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"


def test_publish_a_port_from_the_host_address(netd: NetDaemon, outside: str,
                                              tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    netd.stop()                              # again, with the Docker API
    netd.extra = [*netd.extra, "--docker-socket", str(sock)]
    netd.start()
    (tmp_path / "docker-config").mkdir()
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}",
           "DOCKER_CONFIG": str(tmp_path / "docker-config")}

    def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["docker", *args], capture_output=True, text=True, env=env,
                           timeout=120)
        assert not check or r.returncode == 0, r
        return r

    netd.cli("image", "build", "busybox")    # Docker sees it as busybox:latest
    docker("network", "create", "green")
    try:
        docker("run", "-d", "--name", "web", "--network", "green", "-p", "8088:8080",
               "busybox", "sh", "-c", WEB)
        deadline = time.monotonic() + 30
        while True:   # httpd listens a moment after the container starts
            got = sh("ip", "netns", "exec", outside, *get_script("192.0.2.1", 8088),
                     check=False)
            if body(got.stdout) == "hello-web" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert body(got.stdout) == "hello-web", got
        rows = json.loads(netd.cli("network", "forward", "list", "green", "--format",
                                   "json").stdout)
        assert [(f["listen_address"], f["listen_port"], f["instance"], f["target_port"])
                for f in rows] == [("192.0.2.1", 8088, "web", 8080)]
        assert "8088->8080/tcp" in docker("ps", "--format", "{{.Ports}}").stdout
        docker("rm", "-f", "web")
        assert json.loads(netd.cli("network", "forward", "list", "green", "--format",
                                   "json").stdout) == []
        r = docker("run", "--rm", "--network", "none", "-p", "8089:80", "busybox", "true",
                   check=False)
        assert r.returncode == 125 and "publishing a port needs a network" in r.stderr
    finally:
        docker("rm", "-f", "web", check=False)
        docker("network", "rm", "green", check=False)
