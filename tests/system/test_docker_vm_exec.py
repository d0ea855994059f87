"""``docker exec`` into a ``--runtime cumulo-vm`` container, with the real docker CLI: the
command runs through the VM's guest agent in the image's tree (chrooted), with the
image's environment and working dir, the user's -e/-w/-u, stdin, exit codes; and
``cumulo exec`` into the same instance. One VM for the module: each boot costs seconds
of TCG."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.helpers import container_skip_reason
from tests.system.dockerlib import DockerHost, docker_host
from tests.system.test_docker_cli import docker_tty

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime, pytest.mark.qemu,
              pytest.mark.slow,
              pytest.mark.skipif(container_skip_reason() is not None,
                                 reason=str(container_skip_reason()))]

NAME = "vmx"
BOOT = 300          # seconds: a VM boots on TCG on a loaded host


@pytest.fixture(scope="module")
def dk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerHost]:
    from cumulo.drivers.vm.initramfs import find_kernel

    try:
        find_kernel()
    except Exception as err:   # the guest kernel is cached by scripts/install.sh
        pytest.skip(f"no guest kernel: {err}")
    with docker_host(tmp_path_factory.mktemp("docker")) as host:
        yield host


@pytest.fixture(scope="module")
def vm(dk: DockerHost) -> Iterator[str]:
    """A cumulo-vm container whose workload wrote files in its working dir (/tmp), then
    sleeps."""
    dk.run("run", "-d", "--runtime", "cumulo-vm", "--name", NAME, "-e", "FROM_RUN=yes",
           "-w", "/tmp", "busybox", "sh", "-c",
           "echo made-by-the-workload > from-workload; echo $FROM_RUN > workload-env;"
           " echo ready; sleep 3600",
           timeout=BOOT)
    try:
        dk.wait_for(lambda: "ready" in dk.run("logs", NAME).stdout, "the workload",
                    timeout=BOOT)
        yield NAME
    finally:
        dk.run("rm", "-f", NAME, check=False)


def test_exec_output_and_exit_code(dk: DockerHost, vm: str) -> None:
    r = dk.run("exec", vm, "echo", "hi", timeout=BOOT)   # the first waits for the agent
    assert (r.stdout, r.stderr) == ("hi\n", "")
    r = dk.run("exec", vm, "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    r = dk.run("exec", vm, "no-such-command", check=False)
    assert r.returncode == 127 and "executable file not found" in r.stderr, r
    r = dk.run("exec", "-t", vm, "sh", "-c", "echo with-t; exit 4", check=False)
    assert r.returncode == 4 and "with-t" in r.stdout, r


def test_exec_with_stdin(dk: DockerHost, vm: str) -> None:
    r = dk.run("exec", "-i", vm, "cat", input="through stdin\nline 2\n", timeout=BOOT)
    assert r.stdout == "through stdin\nline 2\n"


def test_exec_runs_in_the_image_tree(dk: DockerHost, vm: str) -> None:
    """What the workload wrote is there (the same tree, not a copy); the image's tree is
    the root, without the initramfs's own files; the image's busybox runs."""
    r = dk.run("exec", vm, "cat", "/tmp/from-workload", timeout=BOOT)
    assert r.stdout == "made-by-the-workload\n"
    dk.run("exec", vm, "sh", "-c", "echo from-exec > /tmp/from-exec")
    assert dk.run("exec", vm, "cat", "/tmp/from-exec").stdout == "from-exec\n"
    top = dk.run("exec", vm, "ls", "/").stdout.split()
    assert "bin" in top and "image" not in top and "cumulo" not in top and "init" not in top
    # the guest's /proc: its own kernel, not the host's
    version = dk.run("exec", vm, "cat", "/proc/version").stdout
    assert version.startswith("Linux version ") and os.uname().release not in version


def test_exec_env_workdir_user(dk: DockerHost, vm: str) -> None:
    """The container's environment and working dir (set at run), for the workload and
    for exec, and exec's -e, -w, -u."""
    r = dk.run("exec", vm, "sh", "-c", "echo $FROM_RUN; pwd; id -u", timeout=BOOT)
    assert r.stdout == "yes\n/tmp\n0\n"
    # the workload had them too: it wrote $FROM_RUN to a relative path
    assert dk.run("exec", vm, "cat", "/tmp/workload-env").stdout == "yes\n"
    r = dk.run("exec", "-e", "FROM_EXEC=a b", "-w", "/etc", "-u", "1000:1001", vm,
               "sh", "-c", "echo $FROM_RUN $FROM_EXEC; pwd; id -u; id -g")
    assert r.stdout == "yes a b\n/etc\n1000\n1001\n"
    r = dk.run("exec", "-w", "/no/such/dir", vm, "true", check=False)
    assert r.returncode != 0


def test_exec_interactive_with_a_tty(dk: DockerHost, vm: str) -> None:
    """``docker exec -it C sh`` on a pty (``script``): the VM's serial terminal line, so a
    prompt, typed commands echoed and run, the window size, the shell's exit status."""
    docker_tty(dk, f"docker exec -it -w / {vm} sh")
    # the line is free again: a second session
    r = dk.run("exec", "-t", vm, "sh", "-c", "tty; exit 5", check=False)
    assert r.returncode == 5 and "/dev/ttyS1" in r.stdout, r


def test_cumulo_exec_and_files_into_the_same_instance(dk: DockerHost, vm: str) -> None:
    """``cumulo exec`` and ``cumulo file push/pull`` go to the same tree."""
    r = dk.daemon.cli("exec", vm, "--", "cat", "/tmp/from-workload", timeout=BOOT)
    assert r.stdout == "made-by-the-workload\n"
    r = dk.daemon.cli("exec", vm, "--", "sh", "-c", "exit 7", check=False)
    assert r.returncode == 7
    assert dk.daemon.cli("file", "pull", vm, "/tmp/from-workload", "-").stdout == \
        "made-by-the-workload\n"
    dk.daemon.cli("file", "push", vm, "-", "/tmp/pushed", input="pushed in\n")
    assert dk.run("exec", vm, "cat", "/tmp/pushed").stdout == "pushed in\n"


def test_exec_into_a_stopped_vm_container_is_a_clear_error(dk: DockerHost) -> None:
    dk.run("create", "--runtime", "cumulo-vm", "--name", "vmstopped", "busybox", "true")
    try:
        err = dk.fails("exec", "vmstopped", "true", code=1, match="is not running")
        assert len(err.strip().splitlines()) == 1, err
        r = dk.daemon.cli("exec", "vmstopped", "--", "true", check=False)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r
    finally:
        dk.run("rm", "-f", "vmstopped", check=False)
