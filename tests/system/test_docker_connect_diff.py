"""``docker network connect/disconnect`` and ``docker diff`` through cumulod's Docker API,
with both docker CLIs the machines have (28.2, and Debian's 20.10 that
scripts/install.sh unpacks) and with docker-py."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import APIError, NotFound

from tests.helpers import container_skip_reason
from tests.system.dockerlib import DEBIAN_CLIENT_DIR, DockerHost, docker_host

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime,
              pytest.mark.skipif(container_skip_reason() is not None,
                                 reason=str(container_skip_reason()))]

CLIENTS = [p for p in ("/usr/local/bin/docker", f"{DEBIAN_CLIENT_DIR}/docker")
           if Path(p).exists() or shutil.which(p)]


@pytest.fixture(scope="module")
def dk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerHost]:
    with docker_host(tmp_path_factory.mktemp("dconn")) as host:
        yield host


def run(dk: DockerHost, binary: str, *args: str, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([binary, *args], capture_output=True, text=True, env=dk.env,
                       timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"{binary} {' '.join(args)} -> {r.returncode}: {r.stderr}")
    return r


def networks(dk: DockerHost, binary: str, ctr: str) -> dict[str, dict[str, object]]:
    out = run(dk, binary, "inspect", "-f", "{{json .NetworkSettings.Networks}}", ctr).stdout
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("binary", CLIENTS)
def test_network_connect_and_disconnect_with_the_cli(dk: DockerHost, binary: str) -> None:
    tag = "n" + Path(binary).parent.name[:3]
    red, blue, ctr = f"red{tag}", f"blue{tag}", f"c{tag}"
    run(dk, binary, "network", "create", "--internal", red)
    run(dk, binary, "network", "create", "--internal", blue)
    try:
        run(dk, binary, "run", "-d", "--name", ctr, "--network", red, "busybox",
            "sleep", "600")
        subnet = run(dk, binary, "network", "inspect", "-f",
                     "{{(index .IPAM.Config 0).Subnet}}", blue).stdout.strip()
        ip = subnet.rsplit(".", 1)[0] + ".77"
        run(dk, binary, "network", "connect", "--ip", ip, "--alias", "ignored", blue, ctr)
        nets = networks(dk, binary, ctr)
        assert sorted(nets) == sorted([red, blue]) and nets[blue]["IPAddress"] == ip, nets
        out = run(dk, binary, "exec", ctr, "cat", "/proc/net/fib_trie").stdout
        assert f"{ip}\n" in out, out
        names = run(dk, binary, "network", "inspect", "-f",
                    "{{range .Containers}}{{.Name}} {{end}}", blue).stdout.split()
        assert names == [ctr]

        # Docker's answers for bad input; nothing changes
        r = run(dk, binary, "network", "connect", blue, ctr, check=False)
        assert r.returncode == 1 and "endpoint with name" in r.stderr \
            and "already exists in network" in r.stderr, r.stderr
        r = run(dk, binary, "network", "connect", blue, "ghost", check=False)
        assert r.returncode == 1 and "No such container: ghost" in r.stderr, r.stderr
        r = run(dk, binary, "network", "connect", "nonet", ctr, check=False)
        assert r.returncode == 1 and "network nonet not found" in r.stderr, r.stderr
        assert sorted(networks(dk, binary, ctr)) == sorted([red, blue])

        run(dk, binary, "network", "disconnect", blue, ctr)
        assert list(networks(dk, binary, ctr)) == [red]
        out = run(dk, binary, "exec", ctr, "ls", "/sys/class/net").stdout.split()
        assert out == ["eth0", "lo"], out
        r = run(dk, binary, "network", "disconnect", blue, ctr, check=False)
        assert r.returncode == 1 and "is not connected to network" in r.stderr, r.stderr
        run(dk, binary, "rm", "-f", ctr)
    finally:
        run(dk, binary, "rm", "-f", ctr, check=False)
        run(dk, binary, "network", "rm", red, blue, check=False)


def test_network_connect_and_disconnect_with_docker_py(dk: DockerHost) -> None:
    client = docker.DockerClient(base_url=f"unix://{dk.socket}", version="auto", timeout=120)
    try:
        net = client.networks.create("sdkconn", internal=True)
        ctr = client.containers.run("busybox", ["sleep", "600"], detach=True, name="sdkc",
                                    network_mode="none")
        try:
            net.connect(ctr, aliases=["x"])   # aliases: accepted, ignored
            ctr.reload()
            assert list(ctr.attrs["NetworkSettings"]["Networks"]) == ["sdkconn"]
            assert ctr.exec_run(["ls", "/sys/class/net"]).output.split() == [b"eth0", b"lo"]
            net.reload()
            assert [c.name for c in net.containers] == ["sdkc"]
            with pytest.raises(APIError) as err:
                net.connect(ctr)
            assert err.value.status_code == 403
            with pytest.raises(NotFound):
                net.connect("ghost")
            net.disconnect(ctr)
            ctr.reload()
            assert ctr.attrs["NetworkSettings"]["Networks"] == {}
            assert ctr.exec_run(["ls", "/sys/class/net"]).output.split() == [b"lo"]
        finally:
            ctr.remove(force=True)
            net.remove()
    finally:
        client.close()


CHANGES = "mkdir /tmp/new; echo x > /tmp/new/f; rm /bin/ls; rm -r /root; echo y >> /etc/passwd;" \
          " touch /newfile"
# Docker's order: the upper layer's walk, a parent reported modified before what was added
# or deleted in it (never /); /root goes as one deletion, /etc is not reported for a
# file changed in place
EXPECTED = ["C /bin", "D /bin/ls", "C /etc/passwd", "A /newfile", "D /root", "C /tmp",
            "A /tmp/new", "A /tmp/new/f"]


@pytest.mark.parametrize("binary", CLIENTS)
def test_docker_diff_with_the_cli(dk: DockerHost, binary: str) -> None:
    ctr = "diff" + Path(binary).parent.name[:3]
    try:
        run(dk, binary, "create", "--name", ctr, "busybox", "sleep", "600")
        assert run(dk, binary, "diff", ctr).stdout == ""   # nothing changed yet
        run(dk, binary, "start", ctr)
        run(dk, binary, "exec", ctr, "sh", "-c", CHANGES)
        assert run(dk, binary, "diff", ctr).stdout.splitlines() == EXPECTED
        run(dk, binary, "stop", "-t", "1", ctr)
        assert run(dk, binary, "diff", ctr).stdout.splitlines() == EXPECTED   # stopped too
        r = run(dk, binary, "diff", "ghost", check=False)
        assert r.returncode == 1 and "No such container: ghost" in r.stderr, r.stderr
    finally:
        run(dk, binary, "rm", "-f", ctr, check=False)


def test_docker_diff_with_docker_py(dk: DockerHost) -> None:
    client = docker.DockerClient(base_url=f"unix://{dk.socket}", version="auto", timeout=120)
    try:
        ctr = client.containers.run("busybox", ["sleep", "600"], detach=True, name="sdkdiff")
        try:
            assert ctr.diff() is None   # Docker's null: nothing changed
            ctr.exec_run(["sh", "-c", CHANGES])
            kinds = {0: "C", 1: "A", 2: "D"}
            assert [f"{kinds[c['Kind']]} {c['Path']}" for c in ctr.diff()] == EXPECTED
            with pytest.raises(NotFound):
                client.api.diff("ghost")
        finally:
            ctr.remove(force=True)
    finally:
        client.close()
