"""The Docker face's pure translations: references, frames, limits, HostConfig defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from cumulo.docker.common import DockerError
from cumulo.docker.execs import docker_code
from cumulo.docker.images import alias_for, normalize
from cumulo.docker.shapes import host_config, limits_from, weight_from_shares
from cumulo.docker.streams import frame
from cumulo.domain.limits import Limits
from cumulo.domain.models import Instance


@pytest.mark.parametrize(("ref", "tag"), [
    ("busybox", "busybox:latest"), ("busybox:1.36", "busybox:1.36"),
    ("docker.io/library/busybox", "busybox:latest"), ("library/alpine:3", "alpine:3"),
    ("registry.local:5000/team/app", "registry.local:5000/team/app:latest"),
])
def test_references_normalise_as_dockers(ref: str, tag: str) -> None:
    if ":5000" in ref:   # a registry with a port is not a name Cumulo keeps
        with pytest.raises(DockerError):
            normalize(ref)
        return
    assert normalize(ref) == tag


def test_bad_references_are_400() -> None:
    for ref in ("Busybox", "a@sha256:00", "bad name"):
        with pytest.raises(DockerError) as err:
            normalize(ref)
        assert err.value.status == 400


def test_only_latest_tags_become_cumulo_aliases() -> None:
    assert alias_for("busybox:latest") == "busybox"
    assert alias_for("busybox:1.36") is None


def test_frame_header() -> None:
    assert frame(1, b"hi") == b"\x01\x00\x00\x00\x00\x00\x00\x02hi"
    assert frame(2, b"x" * 300)[:8] == b"\x02\x00\x00\x00\x00\x00\x01\x2c"


def test_limits_from_host_config() -> None:
    lim = limits_from({"Memory": 64 << 20, "NanoCpus": 1_500_000_000, "PidsLimit": 10,
                       "CpusetCpus": "0", "CpuShares": 1024})
    assert lim == Limits(cpu=1.5, cpu_weight=weight_from_shares(1024), cpuset="0",
                         memory=64 << 20, pids=10)
    assert limits_from({"CpuQuota": 50000, "CpuPeriod": 100000}).cpu == 0.5
    assert limits_from({"PidsLimit": -1, "Memory": 0}) == Limits()
    with pytest.raises(DockerError, match="Minimum memory limit allowed is 6MB"):
        limits_from({"Memory": 1 << 20})


def test_host_config_fills_dockers_defaults_for_zero_values() -> None:
    inst = Instance("default", "c", "container", "f" * 64, limits=Limits(memory=32 << 20))
    hc = host_config(inst, {"ShmSize": 0, "LogConfig": {"Type": "", "Config": {}},
                            "AutoRemove": True, "RestartPolicy": {"Name": "always"}})
    assert hc["ShmSize"] == 64 << 20 and hc["LogConfig"]["Type"] == "json-file"
    assert hc["AutoRemove"] is True and hc["RestartPolicy"]["Name"] == "always"
    assert hc["Memory"] == 32 << 20 and hc["MemorySwap"] == 64 << 20
    assert hc["Runtime"] == "runc"


def test_exec_codes_of_a_command_that_cannot_run() -> None:
    assert docker_code(255, b'exec: "x": executable file not found in $PATH') == 127
    assert docker_code(255, b"exec: /etc/passwd: permission denied") == 126
    assert docker_code(255, b"") == 255
    assert docker_code(3, b"permission denied") == 3


def test_an_auto_remove_waits_for_the_attached_client_to_read_the_end() -> None:
    """``docker run --rm``: the container that exits is removed only once its attach
    stream has read the last output (or after a bound); removing it at once lost the
    output of a program that ends quickly (its log went with it)."""
    import threading
    import time
    from types import SimpleNamespace

    from cumulo.docker import containers

    removed: list[float] = []
    meta = SimpleNamespace(update_container=lambda *a, **k: None)
    svc = SimpleNamespace(instances=SimpleNamespace(instances_dir=Path("/nonexistent"),
                                                    exit_code=lambda inst: inst.exit_code))
    c = containers.Containers(SimpleNamespace(svc=svc, project="p"), meta)
    c.remove = lambda inst, force=False, volumes=False: removed.append(time.monotonic())
    inst = SimpleNamespace(host_id="p_x", exit_code=3)
    data = {"HostConfig": {"AutoRemove": True}}
    with c.attached(inst):
        t = threading.Thread(target=c.after_exit, args=(inst, data))
        t.start()
        time.sleep(0.3)
        assert removed == []          # the client still reads
        closed = time.monotonic()
    t.join(5)
    assert len(removed) == 1 and removed[0] >= closed
    c.after_exit(inst, data)          # nobody attached: at once
    assert len(removed) == 2
    # a `docker wait` that comes after the removal still gets the exit code (a loaded
    # host: the VM ran and was removed before the wait first looked; it said 0)
    assert c.removed_codes["p_x"] == 3


def test_meta_knows_which_docker_containers_run(tmp_path: Path) -> None:
    """The reaper's first look, every 0.5 s, before it reads the store at all."""
    from cumulo.docker.meta import Meta

    meta = Meta(tmp_path)
    assert meta.running() == set() and not meta.any_containers()   # (no thread woken)
    meta.put_container("default_a", {"Id": "1", "Running": True})
    assert meta.any_containers()
    meta.put_container("default_b", {"Id": "2", "Running": False})
    assert meta.running() == {"default_a"}
    meta.update_container(Instance(project="default", name="a", type="container",
                                   image="x"), Running=False)
    assert meta.running() == set()


def test_log_times_to_the_nanosecond_and_lines_of_a_chunk() -> None:
    from cumulo.docker.output import _lines, _stamp_ns

    t = _stamp_ns(b"2026-12-05T05:43:50.905929425Z")
    assert t == _stamp_ns(b"2026-12-05T05:43:50.905929425+00:00") == 1796449430905929425
    assert _stamp_ns(b"2026-12-05T05:43:50Z") == 1796449430 * 10**9
    assert _stamp_ns(b"2026-12-05T05:43:50.9Z") == 1796449430 * 10**9 + 900_000_000
    assert _stamp_ns(b"garbage") == 0
    assert _lines(b"a\r\nb\nc") == [b"a\r\n", b"b\n", b"c"] and _lines(b"") == []
