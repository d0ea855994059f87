"""The stock docker CLI against cumulod's Docker API: run, exec, logs, attach, images,
volumes, networks, events, and Docker's own shapes of error for bad input."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker_images import oci_archive
from tests.helpers import checkpoint_skip_reason, container_skip_reason
from tests.system.dockerlib import DockerHost, docker_host

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime,
              pytest.mark.skipif(container_skip_reason() is not None,
                                 reason=str(container_skip_reason()))]


@pytest.fixture(scope="module")
def dk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerHost]:
    with docker_host(tmp_path_factory.mktemp("docker")) as host:
        yield host


def _raw(sock: Path, request: bytes) -> bytes:
    """One raw HTTP exchange on the Docker socket (the answer until the server closes)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_version_negotiation_ping_and_error_shapes(dk: DockerHost) -> None:
    r = dk.run("version", "--format", "{{.Server.APIVersion}} {{.Server.MinAPIVersion}} "
               "{{.Client.APIVersion}}")
    server, minimum, client = r.stdout.split()
    assert (server, minimum) == ("1.45", "1.24")
    # a newer client comes down to ours; an older one (Debian's 20.10: 1.41) keeps its own
    assert client == "1.45" or tuple(map(int, client.split("."))) < (1, 45), client
    for method in (b"HEAD", b"GET"):
        head = _raw(dk.socket, method + b" /_ping HTTP/1.1\r\nHost: d\r\nConnection: close"
                    b"\r\n\r\n").decode().lower()
        assert head.startswith("http/1.1 200")
        for h in ("api-version: 1.45", "docker-experimental: false", "ostype: linux"):
            assert h in head, head
    assert b"OK" in _raw(dk.socket, b"GET /v1.24/_ping HTTP/1.1\r\nHost: d\r\n"
                         b"Connection: close\r\n\r\n")
    for path, status, words in ((b"/v1.12/info", b"400", b"too old"),
                                (b"/v1.45/nothing/here", b"404", b"page not found"),
                                (b"/v1.45/containers/nosuch/json", b"404", b"No such container")):
        answer = _raw(dk.socket, b"GET " + path + b" HTTP/1.1\r\nHost: d\r\n"
                      b"Connection: close\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 " + status), answer
        assert b"\r\ncontent-type: application/json\r\n" in head.lower() + b"\r\n", head
        assert words in json.loads(body)["message"].encode()
    info = json.loads(dk.run("info", "--format", "{{json .}}").stdout)
    assert info["Images"] >= 1 and info["OSType"] == "linux"


def test_run_rm_gives_the_exit_status_and_both_streams(dk: DockerHost) -> None:
    r = dk.run("run", "--rm", "--name", "exit3", "busybox", "sh", "-c",
               "echo to-out; echo to-err >&2; exit 3", check=False)
    assert r.returncode == 3, r
    assert r.stdout == "to-out\n" and r.stderr == "to-err\n"
    assert "exit3" not in dk.run("ps", "-a", "--format", "{{.Names}}").stdout
    assert "exit3" not in dk.daemon.cli("list").stdout
    r = dk.run("run", "--rm", "-i", "busybox", "cat", input="through stdin\n")
    assert r.stdout == "through stdin\n"


def test_run_interactive_with_a_tty(dk: DockerHost, tmp_path: Path) -> None:
    """``docker run -it --rm busybox sh`` on a pty (``script``): a prompt, typed commands
    echoed and run, the shell's exit status as the CLI's."""
    docker_tty(dk, "docker run -it --rm --name tty1 busybox sh")
    assert "tty1" not in dk.run("ps", "-a", "--format", "{{.Names}}").stdout


def docker_tty(dk: DockerHost, command: str) -> None:
    """``command`` (a docker CLI line giving a busybox shell at ``/``) on a pty
    (``script``), through ``_tty_session``."""
    with subprocess.Popen(["script", "-qfec", f"stty rows 33 cols 101; {command}",
                           "/dev/null"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=dk.env) as proc:
        try:
            _tty_session(dk, proc)
        finally:   # a failed session must not leave the with block waiting for the CLI
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def _tty_session(dk: DockerHost, proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    seen = bytearray()
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(4096):
            seen.extend(chunk)
        done.set()

    threading.Thread(target=read, daemon=True).start()

    def wait_for(text: bytes, what: str) -> None:
        try:
            dk.wait_for(lambda: text in seen, what)
        except AssertionError as err:
            raise AssertionError(f"{err}; the terminal showed {bytes(seen)!r}") from None
    wait_for(b"/ # ", "the shell's prompt")
    proc.stdin.write(b"echo tty-$((6*7)); [ -t 0 ] && echo is-$((1+1))-tty\n")
    proc.stdin.flush()
    wait_for(b"is-2-tty", "the command's output")   # not the echo
    assert b"tty-42" in seen
    proc.stdin.write(b"stty size\n")     # the client's window, through the resize call
    proc.stdin.flush()
    wait_for(b"33 101", "the window size")
    proc.stdin.write(b"exit 4\n")
    proc.stdin.flush()
    assert proc.wait(60) == 4, bytes(seen)
    done.wait(10)


def test_detached_container_exec_logs_stats_and_limits(dk: DockerHost) -> None:
    dk.run("run", "-d", "--name", "web", "-e", "FOO=bar", "-w", "/tmp", "--memory", "64m",
           "--cpus", "0.5", "--pids-limit", "40", "--label", "role=test", "busybox", "sh",
           "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done")
    try:
        assert dk.run("exec", "web", "sh", "-c", "echo $FOO; pwd").stdout == "bar\n/tmp\n"
        assert dk.run("exec", "-u", "1000:1000", "web", "id", "-u").stdout == "1000\n"
        r = dk.run("exec", "-e", "X=1", "-w", "/bin", "web", "sh", "-c", "echo $X; pwd; exit 7",
                   check=False)
        assert (r.returncode, r.stdout) == (7, "1\n/bin\n")
        assert dk.run("exec", "web", "nosuch", check=False).returncode == 127
        assert dk.run("exec", "web", "/etc/passwd", check=False).returncode == 126
        assert dk.run("exec", "-i", "web", "cat", input="piped\n").stdout == "piped\n"
        r = dk.run("exec", "-d", "web", "sh", "-c", "echo detached > /tmp/d")
        dk.wait_for(lambda: dk.run("exec", "web", "cat", "/tmp/d", check=False).stdout
                    == "detached\n", "the detached exec")
        dk.wait_for(lambda: "tick 3" in dk.run("logs", "web").stdout, "four ticks")
        tail = dk.run("logs", "--tail", "2", "web").stdout.splitlines()
        assert len(tail) == 2 and all(t.startswith("tick ") for t in tail)
        stamped = dk.run("logs", "-t", "--tail", "1", "web").stdout
        assert stamped[:4].isdigit() and "Z tick " in stamped, stamped
        stats = dk.run("stats", "--no-stream", "--format",
                       "{{.Name}} {{.MemUsage}} {{.PIDs}}", "web").stdout.split()
        assert stats[0] == "web" and stats[3] == "64MiB" and int(stats[-1]) >= 1, stats
        assert "tick" in dk.run("top", "web").stdout or "sh -c" in dk.run("top", "web").stdout
        hc = json.loads(dk.run("inspect", "--format", "{{json .HostConfig}}", "web").stdout)
        assert hc["Memory"] == 64 << 20 and hc["NanoCpus"] == 500_000_000
        assert hc["PidsLimit"] == 40 and hc["RestartPolicy"]["Name"] == "no"
        assert hc["ShmSize"] == 67108864 and hc["LogConfig"]["Type"]   # defaults filled in
        labels = dk.run("inspect", "--format", "{{json .Config.Labels}}", "web").stdout
        assert json.loads(labels) == {"role": "test"}
        assert "web" in dk.daemon.cli("list").stdout           # a Cumulo instance too
        ps = dk.run("ps", "--filter", "label=role=test", "--format", "{{.Names}}").stdout
        assert ps.split() == ["web"]
        dk.fails("rm", "web", match="container is running: stop the container before"
                 " removing or force remove", code=1)
        dk.run("pause", "web")
        assert dk.run("inspect", "-f", "{{.State.Status}}", "web").stdout.strip() == "paused"
        dk.run("unpause", "web")
        dk.run("kill", "web")
        assert dk.run("wait", "web").stdout.strip() == "137"
        assert "Exited (137)" in dk.run("ps", "-a", "--filter", "name=web",
                                        "--format", "{{.Status}}").stdout
        dk.run("start", "web")
        assert dk.run("inspect", "-f", "{{.State.Running}}", "web").stdout.strip() == "true"
        dk.run("stop", "-t", "1", "web")
    finally:
        dk.run("rm", "-f", "web", check=False)
    assert "web" not in dk.daemon.cli("list").stdout


def test_ps_newest_first_and_wait_of_a_created_container(dk: DockerHost) -> None:
    dk.run("create", "--name", "first", "busybox", "sh", "-c", "exit 2")
    dk.run("create", "--name", "second", "busybox", "true")
    try:
        names = dk.run("ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert names.index("second") < names.index("first")
        assert "first" not in dk.run("ps", "--format", "{{.Names}}").stdout.split()
        r = dk.run("start", "-a", "first", check=False)
        assert r.returncode == 2
        assert dk.run("wait", "first").stdout.strip() == "2"
        exited = dk.run("ps", "-a", "--filter", "status=exited", "--format",
                        "{{.Names}}").stdout.split()
        assert "first" in exited and "second" not in exited
    finally:
        dk.run("rm", "-f", "first", "second", check=False)


def test_images_load_save_round_trip_tag_and_rmi(dk: DockerHost, tmp_path: Path) -> None:
    dk.run("tag", "busybox", "mybox:v1")
    assert "mybox:v1" in dk.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    saved = tmp_path / "mybox.tar"
    dk.run("save", "-o", str(saved), "mybox:v1")
    assert "Untagged: mybox:v1" in dk.run("rmi", "mybox:v1").stdout
    assert "mybox" not in dk.run("images").stdout
    assert "Loaded image: mybox:v1" in dk.run("load", "-i", str(saved)).stdout
    assert dk.run("run", "--rm", "mybox:v1", "echo", "from-saved").stdout == "from-saved\n"
    assert dk.run("history", "-q", "mybox:v1").stdout.strip()
    cfg = json.loads(dk.run("image", "inspect", "-f", "{{json .Config}}", "mybox:v1").stdout)
    assert cfg["Cmd"] == ["sh"] and cfg["Labels"] == {"made-by": "cumulo-tests"}
    dk.run("rmi", "mybox:v1")
    r = dk.run("pull", "busybox")
    assert "Image is up to date for busybox:latest" in r.stdout
    dk.fails("pull", "nosuchimage", match="pull access denied for nosuchimage", code=1)


def test_import_of_a_root_filesystem(dk: DockerHost) -> None:
    rootfs = dk.archive.parent / "rootfs"
    tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True,
                         check=True).stdout
    r = subprocess.run(["docker", "import", "-", "imported:1"], input=tar,
                       capture_output=True, env=dk.env, check=True)
    assert r.stdout.startswith(b"sha256:")
    assert dk.run("run", "--rm", "imported:1", "echo", "imp").stdout == "imp\n"
    dk.run("rmi", "imported:1")


def test_named_volume_persists_and_internal_network(dk: DockerHost) -> None:
    dk.run("volume", "create", "data")
    try:
        dk.run("run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f")
        r = dk.run("run", "--rm", "-v", "data:/data", "busybox", "cat", "/data/f")
        assert r.stdout == "kept\n"
        assert "data" in dk.run("volume", "ls", "--format", "{{.Name}}").stdout.split()
    finally:
        dk.run("volume", "rm", "data")
    assert "data" not in dk.run("volume", "ls", "--format", "{{.Name}}").stdout.split()
    dk.run("network", "create", "--internal", "--subnet", "10.231.7.0/24", "inner")
    try:
        assert "inner" in dk.run("network", "ls", "--format", "{{.Name}}").stdout.split()
        r = dk.run("run", "--rm", "--network", "inner", "busybox", "cat", "/proc/net/fib_trie")
        assert "10.231.7." in r.stdout
        subnet = dk.run("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}",
                        "inner").stdout.strip()
        assert subnet == "10.231.7.0/24"
    finally:
        dk.run("network", "rm", "inner")


def test_events_of_a_run(dk: DockerHost) -> None:
    events = subprocess.Popen(["docker", "events", "--filter", "type=container",
                               "--format", "{{.Action}} {{.Actor.Attributes.name}}"],
                              stdout=subprocess.PIPE, text=True, env=dk.env)
    try:
        dk.wait_for(lambda: dk.run("info", "--format", "{{.NEventsListener}}").stdout.strip()
                    != "0", "the events listener")
        dk.run("run", "--rm", "--name", "evt", "busybox", "true")
    finally:
        dk.wait_for(lambda: "evt" not in dk.run("ps", "-a").stdout, "removal")
        events.terminate()
        out, _ = events.communicate(30)
    lines = [ln for ln in out.splitlines() if ln.endswith(" evt")]
    assert [ln.split()[0] for ln in lines] == ["create", "start", "die", "destroy"], out


def test_bad_input_gets_dockers_answers(dk: DockerHost) -> None:
    dk.fails("run", "--rm", "nosuchimage", "true", match="pull access denied for nosuchimage")
    dk.fails("create", "--name", "Bad_Name", "busybox", match="Invalid container name",
             code=1)
    dk.fails("run", "--rm", "-m", "1m", "busybox", "true",
             match="Minimum memory limit allowed is 6MB")
    dk.fails("run", "--rm", "-m", "100000g", "busybox", "true", match="exceeds")
    dk.run("create", "--name", "taken", "busybox", "true")
    try:
        dk.fails("create", "--name", "taken", "busybox", "true",
                 match='The container name "/taken" is already in use', code=1)
    finally:
        dk.run("rm", "taken")
    dk.fails("stop", "nosuch", match="No such container: nosuch", code=1)
    dk.fails("swarm", "join-token", "worker", match="This node is not a swarm manager",
             code=1)
    r = dk.run("run", "--rm", "busybox", "nosuchcommand", check=False)
    assert r.returncode == 127, r
    assert "executable file not found" in r.stderr
    assert dk.run("ps", "-aq").stdout == ""    # nothing half-made is left


def test_cumulo_instances_are_docker_containers(dk: DockerHost) -> None:
    dk.daemon.cli("launch", "busybox", "native", "--", "sleep", "300")
    try:
        assert "native" in dk.run("ps", "--format", "{{.Names}}").stdout.split()
        assert dk.run("exec", "native", "echo", "hi").stdout == "hi\n"
    finally:
        dk.daemon.cli("delete", "--force", "native")


@pytest.mark.qemu
@pytest.mark.slow
def test_run_with_vm_isolation(dk: DockerHost) -> None:
    """``--runtime cumulo-vm``: the image's tree as a VM's root, the command as its init;
    output and exit status as for a container (and ``--isolation vm`` the same); exec is
    in test_docker_vm_exec.py."""
    from cumulo.drivers.vm.initramfs import find_kernel

    try:
        find_kernel()
    except Exception as err:   # the guest kernel is cached by scripts/install.sh
        pytest.skip(f"no guest kernel: {err}")
    r = dk.run("run", "--rm", "--runtime", "cumulo-vm", "busybox", "sh", "-c",
               "echo in-a-vm; uname -r; exit 3", check=False, timeout=300)
    assert r.returncode == 3, r
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[0] == "in-a-vm", r
    assert lines[1] != os.uname().release, r.stdout   # its own kernel
    r = dk.run("run", "--rm", "--isolation", "vm", "busybox", "echo", "isolated", timeout=300)
    assert r.stdout == "isolated\n"
    dk.run("run", "-d", "--runtime", "cumulo-vm", "--name", "vmd", "busybox", "sh", "-c",
           "echo vm-out; echo vm-err >&2; for i in 1 2 3; do echo tick $i; sleep 0.3; done;"
           " exit 5", timeout=300)
    try:
        # logs of a VM: its console, what its command wrote (one stream: the serial); the
        # sleeps end (a guest timer that never fired hung them)
        assert dk.run("logs", "-f", "vmd", timeout=300).stdout == \
            "vm-out\nvm-err\ntick 1\ntick 2\ntick 3\n"
        assert dk.run("wait", "vmd", timeout=120).stdout.strip() == "5"
        assert dk.run("logs", "--tail", "1", "vmd").stdout == "tick 3\n"
    finally:
        dk.run("rm", "-f", "vmd", check=False)


def test_cp_both_ways_with_owners_inside(dk: DockerHost, tmp_path: Path) -> None:
    dk.run("run", "-d", "--name", "cp1", "busybox", "sleep", "300")
    try:
        src = tmp_path / "in.txt"
        src.write_text("copied in\n")
        dk.run("cp", str(src), "cp1:/tmp/")
        assert dk.run("exec", "cp1", "cat", "/tmp/in.txt").stdout == "copied in\n"
        owner = dk.run("exec", "cp1", "stat", "-c", "%u:%g", "/tmp/in.txt", check=False)
        if owner.returncode == 0:   # (stat is not among the test image's applets)
            assert owner.stdout.strip() == "0:0"
        assert " 0 " in dk.run("exec", "cp1", "ls", "-ln", "/tmp/in.txt").stdout
        dk.run("exec", "cp1", "sh", "-c", "mkdir /tmp/d; echo x > /tmp/d/y; ln -s /etc /tmp/d/l")
        dk.run("cp", "cp1:/tmp/d", str(tmp_path / "out"))
        assert (tmp_path / "out" / "y").read_text() == "x\n"
        assert (tmp_path / "out" / "l").readlink() == Path("/etc")
        r = dk.run("cp", "cp1:/nosuch", str(tmp_path / "x"), check=False)
        # newer clients quote the daemon's 404; Debian's 20.10 client says it its own way
        assert r.returncode == 1 and ("Could not find the file /nosuch in container" in r.stderr
                                      or "No such container:path: cp1:/nosuch" in r.stderr), r
    finally:
        dk.run("rm", "-f", "cp1")


def test_publish_without_a_network_is_refused_and_leaves_nothing(dk: DockerHost) -> None:
    """(The daemon has no default network here; -p itself: tests/integration.)"""
    dk.fails("run", "-d", "-p", "8080:80", "busybox", "true",
             match="publishing a port needs a network")
    assert dk.run("ps", "-aq").stdout == ""


def test_restart_policy_and_logs_follow(dk: DockerHost) -> None:
    dk.run("run", "-d", "--name", "retry", "--restart", "on-failure:2", "busybox", "sh", "-c",
           "echo try; exit 1")
    try:
        def settled() -> bool:
            out = dk.run("inspect", "-f", "{{.State.Status}} {{.RestartCount}}", "retry").stdout
            return out.split() == ["exited", "2"]
        dk.wait_for(settled, "two restarts, then rest")
        assert dk.run("logs", "retry").stdout == "try\n" * 3
    finally:
        dk.run("rm", "-f", "retry")
    dk.run("run", "-d", "--name", "counter", "busybox", "sh", "-c",
           "for i in 1 2 3; do echo $i; sleep 0.3; done")
    try:   # -f ends by itself once the container stops, with every line
        assert dk.run("logs", "-f", "counter", timeout=60).stdout == "1\n2\n3\n"
    finally:
        dk.run("rm", "-f", "counter")


def test_rename_of_a_running_container_and_reuse_of_its_old_name(dk: DockerHost) -> None:
    dk.run("run", "-d", "--name", "before", "busybox", "sleep", "300")
    try:
        pid = dk.run("inspect", "-f", "{{.State.Pid}}", "before").stdout.strip()
        dk.run("rename", "before", "after")
        assert dk.run("inspect", "-f", "{{.Name}} {{.State.Status}} {{.State.Pid}}",
                      "after").stdout.split() == ["/after", "running", pid]
        assert dk.run("exec", "after", "echo", "still here").stdout == "still here\n"
        assert "after" in dk.daemon.cli("list").stdout
        dk.fails("stop", "before", match="No such container: before", code=1)
        # the old name is free again: a new container under it is a separate one
        dk.run("run", "-d", "--name", "before", "busybox", "sleep", "300")
        assert dk.run("exec", "before", "echo", "new").stdout == "new\n"
        dk.fails("rename", "after", "before", code=1,
                 match='Error when allocating new name: Conflict. The container name'
                       ' "/before" is already in use')
        dk.fails("rename", "after", "Bad_Name", code=1, match="Invalid container name")
        dk.run("stop", "-t", "1", "after")
        dk.run("rename", "after", "again")
        dk.run("start", "again")
        assert dk.run("exec", "again", "echo", "restarted").stdout == "restarted\n"
    finally:
        dk.run("rm", "-f", "before", "after", "again", check=False)
    assert dk.run("ps", "-aq").stdout == ""


def test_bind_mounts_of_host_directories(dk: DockerHost) -> None:
    # (in /tmp, world-traversable: root inside is an unprivileged uid on the host)
    share = Path(tempfile.mkdtemp(prefix="cumulo-bind-", dir="/tmp"))
    try:
        share.chmod(0o777)
        (share / "hello").write_text("from the host\n")
        r = dk.run("run", "--rm", "-v", f"{share}:/mnt/share:ro", "busybox", "sh", "-c",
                   "cat /mnt/share/hello; touch /mnt/share/x 2>/dev/null || echo read-only")
        assert r.stdout == "from the host\nread-only\n"
        dk.run("run", "--name", "binder", "--mount", f"type=bind,source={share},target=/w",
               "busybox", "sh", "-c", "echo back > /w/out")
        assert (share / "out").read_text() == "back\n"
        mounts = json.loads(dk.run("inspect", "-f", "{{json .Mounts}}", "binder").stdout)
        assert [(m["Type"], m["Source"], m["Destination"]) for m in mounts] == [
            ("bind", str(share), "/w")]
        dk.run("start", "-a", "binder")   # bound again at a second start
        dk.run("rm", "binder")
        dk.fails("run", "--rm", "-v", f"{share}/nosuch:/x", "busybox", "true",
                 match="bind source path does not exist")
        dk.daemon.cli("project", "set", "default", "restricted.devices.disk.paths", "/srv")
        try:   # (/tmp/cumulo-bind-x is not below /srv, nor is /srvx)
            dk.fails("run", "--rm", "-v", f"{share}:/x", "busybox", "true",
                     match="restricted.devices.disk.paths")
        finally:
            dk.daemon.cli("project", "unset", "default", "restricted.devices.disk.paths")
        dk.daemon.cli("project", "set", "default", "restricted.devices.disk", "managed")
        try:
            dk.fails("run", "--rm", "-v", f"{share}:/x", "busybox", "true",
                     match="restricted.devices.disk=managed")
        finally:
            dk.daemon.cli("project", "unset", "default", "restricted.devices.disk")
    finally:
        dk.run("rm", "-f", "binder", check=False)
        shutil.rmtree(share)
    assert dk.run("ps", "-aq").stdout == ""


def test_cp_both_ways_on_a_stopped_container(dk: DockerHost, tmp_path: Path) -> None:
    dk.run("create", "--name", "cp2", "busybox", "sh", "-c",
           "ls -ln /etc/given; cat /etc/given; echo made > /tmp/made")
    try:
        src = tmp_path / "given"
        src.write_text("before start\n")
        dk.run("cp", str(src), "cp2:/etc/")          # created, never started
        dk.run("cp", str(src), "cp2:/etc/other")     # (to a new name: a HEAD of it first)
        out = dk.run("start", "-a", "cp2").stdout
        assert out.endswith("before start\n") and " 0 " in out.splitlines()[0], out
        dk.run("cp", "cp2:/tmp/made", str(tmp_path / "made"))   # exited
        assert (tmp_path / "made").read_text() == "made\n"
        dk.run("cp", "cp2:/etc/other", str(tmp_path / "other"))
        assert (tmp_path / "other").read_text() == "before start\n"
        dk.fails("cp", "cp2:/nosuch", str(tmp_path / "x"),
                 match="Could not find the file /nosuch in container", code=1)
    finally:
        dk.run("rm", "-f", "cp2")


def test_events_since_until_replay_what_happened(dk: DockerHost) -> None:
    start = time.time() - 1   # (whole seconds: docker sends --since as given)
    dk.run("run", "--name", "past", "busybox", "true")
    dk.run("rename", "past", "history")
    dk.run("rm", "history")
    end = time.time() + 1
    out = dk.run("events", "--since", f"{start:.3f}", "--until", f"{end:.3f}", "--filter",
                 "type=container", "--format",
                 '{{.Action}} {{.Actor.Attributes.name}} {{index .Actor.Attributes "oldName"}}',
                 timeout=30).stdout
    lines = [ln.split() for ln in out.splitlines()
             if ln.split()[1:2] in (["past"], ["history"])]
    assert lines == [["create", "past"], ["start", "past"], ["die", "past"],
                     ["rename", "history", "/past"], ["destroy", "history"]], out
    # nothing before --since
    later = dk.run("events", "--since", f"{end:.3f}", "--until", f"{time.time() + 1:.3f}",
                   timeout=30).stdout
    assert "past" not in later and "history" not in later, later


def _post(dk: DockerHost, path: str) -> bytes:
    """The status line of a bodiless POST on the Docker socket."""
    answer = _raw(dk.socket, b"POST /v1.45" + path.encode() + b" HTTP/1.1\r\nHost: d\r\n"
                  b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    return answer.split(b"\r\n", 1)[0]


def test_signals_restart_logs_since_until_and_no_op_answers(dk: DockerHost) -> None:
    """``kill -s USR1`` reaches a trap, ``restart`` runs PID 1 anew, ``logs --since/--until``
    cut at a line's own time (both ends included, as Docker), and starting a started or
    stopping a stopped container is Docker's 304: the CLI says nothing wrong."""
    dk.run("run", "-d", "--name", "sig", "busybox", "sh", "-c",
           'trap "echo got-usr1" USR1; i=0; while true; do echo line $i; i=$((i+1));'
           " sleep 0.2; done")
    try:
        dk.wait_for(lambda: "line 5" in dk.run("logs", "sig").stdout, "six lines")
        stamped = [ln.split(" ", 1) for ln in dk.run("logs", "-t", "sig").stdout.splitlines()]
        texts = [text for _stamp, text in stamped]
        since = dk.run("logs", "--since", stamped[2][0], "sig").stdout.splitlines()
        assert since[:len(texts) - 2] == texts[2:], (since, stamped)   # (and new lines)
        until = dk.run("logs", "--until", stamped[1][0], "sig").stdout.splitlines()
        assert until == texts[:2], (until, stamped)
        both = dk.run("logs", "-t", "--since", stamped[1][0], "--until", stamped[3][0],
                      "sig").stdout.splitlines()
        assert [ln.split(" ", 1) for ln in both] == stamped[1:4], both

        dk.run("kill", "-s", "SIGUSR1", "sig")
        dk.wait_for(lambda: "got-usr1" in dk.run("logs", "sig").stdout, "the trap's line")
        assert dk.run("inspect", "-f", "{{.State.Status}}", "sig").stdout.strip() == "running"

        assert _post(dk, "/containers/sig/start") == b"HTTP/1.1 304 Not Modified"
        r = dk.run("start", "sig")
        assert r.stdout.strip() == "sig" and r.stderr == "", r

        before = dk.run("inspect", "-f", "{{.State.Pid}} {{.State.StartedAt}}",
                        "sig").stdout.split()
        dk.run("restart", "-t", "1", "sig")
        after = dk.run("inspect", "-f", "{{.State.Pid}} {{.State.StartedAt}} {{.State.Status}}"
                       " {{.RestartCount}}", "sig").stdout.split()
        assert after[0] != before[0] and after[1] > before[1], (before, after)
        assert after[2:] == ["running", "0"], after   # a restart by hand is no policy's
        dk.wait_for(lambda: dk.run("logs", "sig").stdout.count("line 0\n") == 2,
                    "the second run's first line")

        dk.run("stop", "-t", "1", "sig")
        assert _post(dk, "/containers/sig/stop") == b"HTTP/1.1 304 Not Modified"
        r = dk.run("stop", "sig")
        assert r.stdout.strip() == "sig" and r.stderr == "", r
        dk.fails("kill", "-s", "USR1", "sig", match="is not running", code=1)
    finally:
        dk.run("rm", "-f", "sig", check=False)


def test_rm_v_removes_the_containers_anonymous_volumes_only(dk: DockerHost) -> None:
    dk.run("volume", "create", "keepme")
    unnamed = dk.run("volume", "create").stdout.strip()   # made by hand: not the container's
    dk.run("create", "--name", "vols", "-v", "/anon", "-v", "keepme:/named", "--mount",
           "type=volume,target=/anon2", "busybox", "true")
    try:
        mounts = json.loads(dk.run("inspect", "-f", "{{json .Mounts}}", "vols").stdout)
        by_path = {m["Destination"]: m["Name"] for m in mounts if m["Type"] == "volume"}
        assert sorted(by_path) == ["/anon", "/anon2", "/named"], mounts
        assert by_path["/named"] == "keepme"
        anonymous = {by_path["/anon"], by_path["/anon2"]}
        info = json.loads(dk.run("volume", "inspect", by_path["/anon"]).stdout)[0]
        assert info["Labels"] == {"com.docker.volume.anonymous": ""}, info
        dk.run("start", "-a", "vols")
        dk.run("rm", "-v", "vols")
        left = set(dk.run("volume", "ls", "-q").stdout.split())
        assert not anonymous & left and {"keepme", unnamed} <= left, (anonymous, left)
        info = json.loads(dk.run("volume", "inspect", "keepme").stdout)[0]
        assert (info["Name"], info["Driver"], info["Scope"]) == ("keepme", "local", "local")
        assert info["CreatedAt"][:4].isdigit() and info["Labels"] == {}, info
        dk.fails("volume", "inspect", "nosuchvol", match="no such volume", code=1)
    finally:
        dk.run("rm", "-f", "vols", check=False)
        dk.run("volume", "rm", "keepme", unnamed, check=False)


def test_prunes_take_only_what_nothing_uses(dk: DockerHost) -> None:
    dk.run("network", "create", "--internal", "--subnet", "10.231.8.0/24", "usednet")
    dk.run("network", "create", "--internal", "--subnet", "10.231.9.0/24", "idlenet")
    dk.run("run", "-d", "--name", "alive", "-v", "/inuse", "--network", "usednet", "busybox",
           "sleep", "300")
    dk.run("run", "--name", "done1", "-v", "/gone", "busybox", "true")
    dk.run("create", "--name", "made1", "busybox", "true")
    dk.run("volume", "create", "idlevol")
    try:
        ids = {n: dk.run("inspect", "-f", "{{.Id}}", n).stdout.strip() for n in ("done1",
                                                                              "made1")}
        gone = json.loads(dk.run("inspect", "-f", "{{json .Mounts}}", "done1").stdout)[0]
        r = dk.run("container", "prune", "-f")   # exited and never started, as Docker
        assert set(ids.values()) <= set(r.stdout.split()), r.stdout
        assert dk.run("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["alive"]

        r = dk.run("network", "prune", "-f")
        nets = dk.run("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert "idlenet" in r.stdout and "usednet" not in r.stdout, r.stdout
        assert "usednet" in nets and "idlenet" not in nets, nets

        # a newer client prunes only anonymous volumes unless told -a (API 1.42)
        r = dk.run("volume", "prune", "-f")
        vols = dk.run("volume", "ls", "-q").stdout.split()
        assert gone["Name"] in r.stdout and "idlevol" in vols, (r.stdout, vols)
        inuse = json.loads(dk.run("inspect", "-f", "{{json .Mounts}}", "alive").stdout)[0]
        assert inuse["Name"] in vols   # attached to a container: kept
        r = dk.run("volume", "prune", "-a", "-f")
        vols = dk.run("volume", "ls", "-q").stdout.split()
        assert "idlevol" in r.stdout and "idlevol" not in vols and inuse["Name"] in vols

        rootfs = dk.archive.parent / "rootfs"
        def tar(*paths: str) -> bytes:   # (two contents: the same would be one image)
            return subprocess.run(["tar", "-C", str(rootfs), "-c", *paths],
                                  capture_output=True, check=True).stdout
        dangling = subprocess.run(["docker", "import", "-"], input=tar("./bin/busybox"),
                                  capture_output=True, env=dk.env,
                                  check=True).stdout.decode().strip()
        subprocess.run(["docker", "import", "-", "prunable:1"],
                       input=tar("./bin/busybox", "./bin/sh"), capture_output=True,
                       env=dk.env, check=True)
        r = dk.run("image", "prune", "-f")
        assert dangling in r.stdout, r.stdout
        ids = dk.run("images", "-q", "--no-trunc").stdout.split()
        assert dangling not in ids and "prunable" in dk.run("images").stdout
        r = dk.run("image", "prune", "-a", "-f")
        images = dk.run("images", "--format", "{{.Repository}}").stdout.split()
        assert "prunable" not in images and "busybox" in images, (r.stdout, images)
    finally:
        dk.run("rm", "-f", "alive", "done1", "made1", check=False)
        dk.run("network", "rm", "usednet", "idlenet", check=False)
        dk.run("volume", "prune", "-a", "-f", check=False)
        dk.run("rmi", "prunable:1", check=False)


def test_build_plugins_login_and_push_are_dockers_501(dk: DockerHost, tmp_path: Path) -> None:
    for path in (b"POST /v1.45/build", b"GET /v1.45/plugins", b"POST /v1.45/auth",
                 b"POST /v1.45/images/busybox/push"):
        answer = _raw(dk.socket, path + b" HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n"
                      b"Connection: close\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 501 "), answer
        assert b"\r\ncontent-type: application/json\r\n" in head.lower() + b"\r\n", head
        assert "Cumulo" in json.loads(body)["message"], body
    (tmp_path / "Dockerfile").write_text("FROM busybox\n")
    r = subprocess.run(["docker", "build", "-t", "x", str(tmp_path)], capture_output=True,
                       text=True, env={**dk.env, "DOCKER_BUILDKIT": "0"}, timeout=60)
    assert r.returncode == 1 and "Error response from daemon: docker build is not" \
        " supported by Cumulo's Docker API" in r.stderr, r
    dk.fails("plugin", "ls", match="/plugins is not supported by Cumulo", code=1)
    r = dk.run("login", "-u", "someone", "--password-stdin", "localhost:1", input="pw\n",
               check=False)
    assert r.returncode == 1 and "Error response from daemon: " in r.stderr \
        and "/auth is not supported" in r.stderr, r
    dk.fails("push", "busybox", match="Cumulo has no registry access", code=1)


def test_load_of_an_oci_layout_archive(dk: DockerHost, tmp_path: Path) -> None:
    archive = oci_archive(dk.archive, tmp_path / "oci.tar", "ocibox:v2")
    r = dk.run("load", "-i", str(archive))
    assert "Loaded image: ocibox:v2" in r.stdout, r.stdout
    try:
        assert dk.run("run", "--rm", "ocibox:v2", "echo", "from-oci").stdout == "from-oci\n"
        cfg = json.loads(dk.run("image", "inspect", "-f", "{{json .Config}}",
                                "ocibox:v2").stdout)
        assert cfg["Labels"] == {"made-by": "cumulo-tests"}, cfg
    finally:
        dk.run("rmi", "ocibox:v2", check=False)


@pytest.mark.criu
@pytest.mark.skipif(checkpoint_skip_reason() is not None,
                    reason=str(checkpoint_skip_reason()))
def test_cumulo_limits_and_checkpoint_on_a_docker_container(dk: DockerHost) -> None:
    """A Docker container is a Cumulo instance: ``cumulo config set`` changes show in
    ``docker inspect``, and ``cumulo checkpoint`` + ``restore`` carry its PID 1 on."""
    dk.run("run", "-d", "--name", "ckpt", "-m", "64m", "--restart", "always", "busybox",
           "sh", "-c",
           "i=0; while true; do i=$((i+1)); echo count $i; sleep 0.2; done")
    try:
        dk.daemon.cli("config", "set", "ckpt", "memory", "96MiB")
        dk.daemon.cli("config", "set", "ckpt", "pids", "50")
        dk.daemon.cli("config", "set", "ckpt", "cpu", "0.5")
        hc = json.loads(dk.run("inspect", "-f", "{{json .HostConfig}}", "ckpt").stdout)
        assert (hc["Memory"], hc["PidsLimit"], hc["NanoCpus"]) == (96 << 20, 50, 500_000_000)
        stats = dk.run("stats", "--no-stream", "--format", "{{.MemUsage}}", "ckpt").stdout
        assert stats.strip().endswith("/ 96MiB"), stats
        dk.wait_for(lambda: "count 3\n" in dk.run("logs", "ckpt").stdout, "three counts")
        pid = dk.run("inspect", "-f", "{{.State.Pid}}", "ckpt").stdout.strip()
        dk.daemon.cli("checkpoint", "ckpt")
        dk.wait_for(lambda: not dk.run("inspect", "-f", "{{.State.FinishedAt}}", "ckpt"
                                       ).stdout.startswith("0001"), "the end seen")
        # checkpointed, not ended: its restart policy does not start it afresh
        assert dk.run("inspect", "-f", "{{.State.Status}}", "ckpt").stdout.strip() == "exited"
        stopped_at = dk.run("logs", "ckpt").stdout.count("count ")
        dk.daemon.cli("restore", "ckpt")
        assert dk.run("inspect", "-f", "{{.State.Status}}", "ckpt").stdout.strip() == "running"
        dk.wait_for(lambda: dk.run("logs", "ckpt").stdout.count("count ") > stopped_at + 2,
                    "counting on after the restore")
        counts = [int(ln.split()[1]) for ln in dk.run("logs", "ckpt").stdout.splitlines()]
        assert counts == list(range(1, len(counts) + 1)), counts   # one PID 1 all along
        assert dk.run("exec", "ckpt", "cat", "/proc/1/cmdline").stdout.startswith("sh")
        hc = json.loads(dk.run("inspect", "-f", "{{json .HostConfig}}", "ckpt").stdout)
        assert hc["Memory"] == 96 << 20
        assert pid   # (a restored PID 1 may have another host pid)
        dk.run("stop", "-t", "1", "ckpt")
        assert dk.run("inspect", "-f", "{{.State.Status}}", "ckpt").stdout.strip() == "exited"
    finally:
        dk.run("rm", "-f", "ckpt", check=False)
