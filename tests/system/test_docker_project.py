"""The Docker socket acts in one project (``--docker-project``), under that project's
quotas and restrictions, and may be handed to a group (``--docker-group``) as Docker's
socket is to the ``docker`` group."""

from __future__ import annotations

import grp
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.docker_images import busybox_archive
from tests.helpers import container_skip_reason
from tests.system.conftest import running_daemon
from tests.system.dockerlib import DEBIAN_CLIENT_DIR

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime,
              pytest.mark.skipif(container_skip_reason() is not None,
                                 reason=str(container_skip_reason()))]


def test_the_docker_project_its_quotas_restrictions_and_group(tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    group = grp.getgrgid(min(g.gr_gid for g in grp.getgrall() if g.gr_gid > 0)).gr_name
    with running_daemon(tmp_path, extra=("--docker-socket", str(sock), "--docker-project",
                                         "dk", "--docker-group", group)) as d:
        st = os.stat(sock)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == grp.getgrnam(group).gr_gid
        config = tmp_path / "docker-config"
        config.mkdir()
        env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", "DOCKER_CONFIG": str(config),
               "PATH": f"{os.environ.get('PATH', '')}:{DEBIAN_CLIENT_DIR}"}

        def docker(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["docker", *args], capture_output=True, text=True, env=env,
                                  timeout=120)

        assert docker("load", "-i", str(busybox_archive(tmp_path / "image"))).returncode == 0
        try:
            assert docker("run", "-d", "--name", "a", "busybox", "sleep", "600"
                          ).returncode == 0
            listed = json.loads(d.cli("list", "--project", "dk", "--format", "json").stdout)
            assert [i["name"] for i in listed] == ["a"]
            assert json.loads(d.cli("list", "--format", "json").stdout) == []   # default

            d.cli("project", "set", "dk", "limits.containers", "1")
            r = docker("run", "-d", "--name", "b", "busybox", "sleep", "600")
            assert r.returncode == 125 and "Error response from daemon: " in r.stderr \
                and "limits.containers" in r.stderr, r.stderr
            d.cli("project", "unset", "dk", "limits.containers")

            d.cli("project", "set", "dk", "limits.memory", "64MiB")
            r = docker("run", "-d", "--name", "b", "-m", "128m", "busybox", "sleep", "600")
            assert r.returncode == 125 and "limits.memory" in r.stderr, r.stderr
            d.cli("project", "unset", "dk", "limits.memory")

            d.cli("project", "set", "dk", "restricted.containers.privilege", "unprivileged")
            r = docker("run", "--rm", "--privileged", "busybox", "true")
            assert r.returncode == 125 and "privilege" in r.stderr, r.stderr
            out = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
            assert out == ["a"]   # nothing left of the refused ones
        finally:
            docker("rm", "-f", "a")
