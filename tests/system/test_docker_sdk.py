"""docker-py (PyPI ``docker``) against cumulod's Docker API: what a Python program using
the Docker SDK does, unchanged, and the SDK's own exception types for bad input."""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import APIError, ContainerError, ImageNotFound, NotFound

from tests.helpers import container_skip_reason
from tests.system.dockerlib import DockerHost, docker_host

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime,
              pytest.mark.skipif(container_skip_reason() is not None,
                                 reason=str(container_skip_reason()))]


@pytest.fixture(scope="module")
def dk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerHost]:
    with docker_host(tmp_path_factory.mktemp("sdk")) as host:
        yield host


@pytest.fixture
def client(dk: DockerHost) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=f"unix://{dk.socket}", version="auto", timeout=120)
    try:
        yield c
    finally:
        c.close()


def test_ping_version_and_images(client: docker.DockerClient, dk: DockerHost) -> None:
    assert client.ping() is True
    assert client.version()["ApiVersion"] == "1.45"
    assert client.api.api_version == "1.45"
    image = client.images.get("busybox")
    assert "busybox:latest" in image.tags
    with open(dk.archive, "rb") as f:
        loaded = client.images.load(f.read())
    assert [i.id for i in loaded] == [image.id]
    assert image.tag("sdkbox", "t1") is True
    assert "sdkbox:t1" in client.images.get("sdkbox:t1").tags
    client.images.remove("sdkbox:t1")
    with pytest.raises(ImageNotFound):
        client.images.get("sdkbox:t1")


def test_run_exec_logs_wait_and_remove(client: docker.DockerClient) -> None:
    out = client.containers.run("busybox", ["sh", "-c", "echo hello; echo oops >&2"],
                                remove=True, stdout=True, stderr=False)
    assert out == b"hello\n"
    with pytest.raises(ContainerError) as err:
        client.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
    assert err.value.exit_status == 3
    c = client.containers.run("busybox", ["sh", "-c", "echo started; sleep 300"], detach=True,
                              name="sdk1", environment={"A": "b"}, mem_limit="32m",
                              labels={"k": "v"})
    try:
        assert c.status in ("created", "running")
        c.reload()
        assert c.status == "running" and c.labels == {"k": "v"}
        assert c.attrs["HostConfig"]["Memory"] == 32 << 20
        code, output = c.exec_run(["sh", "-c", "echo $A; exit 5"])
        assert (code, output) == (5, b"b\n")
        code, output = c.exec_run("nosuch")
        assert code == 127
        code, output = c.exec_run(["cat", "/proc/1/cmdline"], tty=True)
        assert code == 0 and b"sleep" in output
        assert b"started" in c.logs()
        stats = c.stats(stream=False)
        assert stats["memory_stats"]["limit"] == 32 << 20 and stats["pids_stats"]["current"] >= 1
        assert c.top()["Processes"]
        assert [x.name for x in client.containers.list(filters={"label": "k=v"})] == ["sdk1"]
        with pytest.raises(APIError) as conflict:
            c.remove()
        assert conflict.value.status_code == 409
        c.kill()
        assert c.wait()["StatusCode"] == 137
    finally:
        c.remove(force=True)
    with pytest.raises(NotFound):
        client.containers.get("sdk1")


def test_attach_socket_without_tty(client: docker.DockerClient) -> None:
    """The hijacked attach: stdin in, 8-byte multiplexed frames out."""
    c = client.containers.create("busybox", ["cat"], stdin_open=True, name="sdk-attach")
    try:
        sock = client.api.attach_socket(c.id, params={"stdin": 1, "stdout": 1, "stream": 1})
        c.start()
        raw = sock._sock
        raw.sendall(b"over the socket\n")
        raw.shutdown(1)   # end of input: cat ends
        data = b""
        while chunk := raw.recv(4096):
            data += chunk
        sock.close()
        raw.close()
        assert data[:8] == b"\x01\x00\x00\x00\x00\x00\x00\x10"
        assert data[8:] == b"over the socket\n"
        assert c.wait()["StatusCode"] == 0
    finally:
        c.remove(force=True)


def test_errors_in_the_sdks_types(client: docker.DockerClient) -> None:
    with pytest.raises(ImageNotFound):
        client.containers.create("nosuchimage")
    with pytest.raises(NotFound):
        client.containers.get("nosuch")
    client.containers.create("busybox", ["true"], name="sdk-taken")
    try:
        with pytest.raises(APIError) as err:
            client.containers.create("busybox", ["true"], name="sdk-taken")
        assert err.value.status_code == 409 and "already in use" in str(err.value)
    finally:
        client.containers.get("sdk-taken").remove()
    with pytest.raises(APIError) as err:
        client.swarm.init()
    assert err.value.status_code == 503
    with pytest.raises(APIError) as err:
        client.containers.run("busybox", ["true"], mem_limit="1m", remove=True)
    assert err.value.status_code == 400


def test_rename_binds_and_archives_of_a_stopped_container(client: docker.DockerClient) -> None:
    share = Path(tempfile.mkdtemp(prefix="cumulo-sdk-bind-", dir="/tmp"))
    share.chmod(0o755)
    (share / "f").write_text("host file\n")
    c = client.containers.create("busybox", ["sh", "-c", "cat /in/f | tee /tmp/copy"],
                                 name="sdk-old",
                                 volumes={str(share): {"bind": "/in", "mode": "ro"}})
    try:
        c.rename("sdk-new")
        c.reload()
        assert c.name == "sdk-new"
        with pytest.raises(APIError) as err:
            c.rename("sdk-new")
        assert err.value.status_code == 400
        c.start()
        assert c.wait()["StatusCode"] == 0 and c.logs() == b"host file\n"
        chunks, st = c.get_archive("/tmp/copy")   # exited: its root, not PID 1's
        assert st["name"] == "copy"
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile("copy")
            assert member is not None and member.read() == b"host file\n"
        with pytest.raises(APIError) as err:
            client.containers.create("busybox", ["true"],
                                     volumes={f"{share}/nosuch": {"bind": "/x"}})
        assert err.value.status_code == 400 and "does not exist" in str(err.value)
    finally:
        c.remove(force=True)
        shutil.rmtree(share)


def test_streamed_stats_carry_the_previous_sample(client: docker.DockerClient) -> None:
    """``stats(stream=True)``: one sample a second, each with the one before as its
    ``precpu_stats`` (what ``docker stats`` computes CPU % from)."""
    c = client.containers.run("busybox", ["sh", "-c", "while true; do :; done"],
                              detach=True, name="sdk-stats", mem_limit="48m")
    try:
        samples = []
        for sample in c.stats(stream=True, decode=True):
            samples.append(sample)
            if len(samples) == 2:
                break
        first, second = samples
        assert second["read"] > first["read"] and second["preread"] == first["read"]
        assert second["precpu_stats"]["cpu_usage"] == first["cpu_stats"]["cpu_usage"]
        used = [s["cpu_stats"]["cpu_usage"]["total_usage"] for s in samples]
        assert 0 < used[0] < used[1], used   # a busy loop: CPU time between the two
        assert second["cpu_stats"]["system_cpu_usage"] > first["cpu_stats"][
            "system_cpu_usage"]
        assert all(s["memory_stats"]["limit"] == 48 << 20 for s in samples)
        assert second["name"] == "/sdk-stats" and second["id"] == c.id
    finally:
        c.remove(force=True)
