"""cumulo image build debian/12 and app, as a user runs them, against a real daemon.

The Debian build downloads from the Debian mirror (the one network source it has).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.system.conftest import BIN, Daemon

pytestmark = [pytest.mark.system, pytest.mark.root]


def _start_debian_build(daemon: Daemon, alias: str) -> dict[str, Any]:
    """Start building debian/12; return its operation once mmdebstrap is at work."""
    with daemon.client() as c:
        op = c.build_image("debian/12", alias, wait=False)
        # (it may first wait for another build of the suite: the cache is one at a time)
        deadline = time.monotonic() + 240
        while not _builders_running(daemon):
            assert time.monotonic() < deadline, c.operations()
            time.sleep(0.2)
    return op


def _staging_left(daemon: Daemon) -> list[Path]:
    staging = daemon.state_dir / "images" / ".staging"
    return list(staging.iterdir()) if staging.is_dir() else []


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


def _builders_running(daemon: Daemon) -> list[int]:
    """mmdebstrap / apt / dpkg processes working inside this daemon's state dir."""
    found = []
    daemon_pid = daemon.proc.pid if daemon.proc else -1
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if proc.info["pid"] == daemon_pid:
            continue
        text = " ".join(proc.info["cmdline"] or []) + " " + str(proc.info["cwd"] or "")
        if str(daemon.state_dir) in text:
            found.append(proc.info["pid"])
    return found


def _freeze(daemon: Daemon) -> list[int]:
    """SIGSTOP the build's processes (and any forked meanwhile): it stands still."""
    stopped: set[int] = set()
    while new := set(_builders_running(daemon)) - stopped:
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= new
    return sorted(stopped)


def _term_sent(pid: int) -> bool:
    """Whether a SIGTERM is pending for stopped ``pid``, or it is gone (killed)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    pending = int(fields["ShdPnd"], 16) | int(fields["SigPnd"], 16)
    return bool(pending & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize(("args", "message"), [
    (["debian/99"], "unknown Debian release '99'"),
    (["debian/12", "--variant", "tiny"], "unknown variant 'tiny'"),
    (["debian/12", "--packages", "curl,Bad_Pkg"], "invalid package name 'Bad_Pkg'"),
    (["debian/12", "--binary", "/bin/true"], "--binary does not apply to the debian builder"),
    (["ubuntu/24.04"], "unknown image 'ubuntu/24.04'"),
    (["app"], "the app builder needs --binary PATH"),
    (["app", "--binary", "/etc/hostname"], "is not an ELF program"),
    (["app", "--binary", "/nonexistent/prog"], "cannot read --binary"),
])
def test_bad_build_input_is_one_line_error_and_starts_nothing(
        module_daemon: Daemon, args: list[str], message: str) -> None:
    daemon = module_daemon   # one daemon for all the cases: none may leave anything
    r = daemon.cli("image", "build", *args, check=False)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("Error: ") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    with daemon.client() as c:
        assert c.images() == [] and c.operations() == []
    assert _staging_left(daemon) == []


def test_ctrl_c_cancels_a_debian_build_and_leaves_nothing(daemon: Daemon) -> None:
    cli = subprocess.Popen([str(BIN / "cumulo"), "image", "build", "debian/12"],
                           env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        deadline = time.monotonic() + 60
        with daemon.client() as c:   # wait until mmdebstrap is really at work
            while time.monotonic() < deadline:
                ops = c.operations()
                if ops and ops[0]["progress"] >= 0.08 and _builders_running(daemon):
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"the build did not start: {c.operations()}")
        # frozen, it cannot finish before the Ctrl-C (with the packages cached it is quick);
        # thawed once the daemon's kill reached it
        frozen = _freeze(daemon)
        cli.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        while not any(_term_sent(pid) for pid in frozen):
            assert time.monotonic() < deadline and cli.poll() is None, "no kill after Ctrl-C"
            time.sleep(0.1)
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        out, err = cli.communicate(timeout=90)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 1 and "building debian/12 cancelled: nothing was kept" in err, err
    with daemon.client() as c:
        op = c.operations()[0]
        assert (op["status"], op["error"]) == ("failure", "cancelled")
        assert c.images() == []
    assert _staging_left(daemon) == []
    assert _mounts_under(daemon.state_dir) == []
    assert _builders_running(daemon) == []


@pytest.mark.slow
@pytest.mark.runtime
def test_debian_12_minbase_runs_in_a_container(daemon: Daemon) -> None:
    r = daemon.cli("image", "build", "debian/12", "--variant", "minbase", timeout=1800)
    assert "Built debian/12" in r.stderr and "container" in r.stderr
    info = json.loads(daemon.cli("image", "info", "debian/12", "--format", "json").stdout)
    assert info["kind"] == "container" and info["os"] == "debian" and info["release"] == "12"
    assert info["properties"]["variant"] == "minbase"
    assert info["properties"]["debian_version"].startswith("12.")
    assert info["size"] > 50_000_000
    daemon.cli("launch", "debian/12", "deb")
    r = daemon.cli("exec", "deb", "--", "cat", "/etc/debian_version")
    assert r.stdout.strip() == info["properties"]["debian_version"]
    r = daemon.cli("exec", "deb", "--", "sh", "-c", "test ! -e /var/cache/apt/archives/*.deb")
    assert _staging_left(daemon) == [] and _mounts_under(daemon.state_dir / "images") == []
    daemon.cli("delete", "deb", "--force")


HELLO_C = r"""
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static void bye(int sig) { (void)sig; _exit(0); }
int main(int argc, char **argv) {
    signal(SIGTERM, bye);
    printf("hello from %s, %d args\n", argv[0], argc);
    fflush(stdout);
    for (;;) pause();
}
"""


def _wait_logs(daemon: Daemon, name: str, text: str) -> str:
    deadline = time.monotonic() + 15
    while text not in (logs := daemon.cli("logs", name).stdout):
        assert time.monotonic() < deadline, logs
        time.sleep(0.1)
    return logs


@pytest.mark.runtime
@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_app_image_of_a_c_program(daemon: Daemon, tmp_path: Path, static: bool) -> None:
    (tmp_path / "hello.c").write_text(HELLO_C)
    prog = tmp_path / "hello"
    subprocess.run(["gcc", "-O2", *(["-static"] if static else []), "-o", str(prog),
                    str(tmp_path / "hello.c")], check=True, timeout=120)
    r = daemon.cli("image", "build", "app", "--binary", str(prog))
    assert "Built hello" in r.stderr and "app" in r.stderr
    info = json.loads(daemon.cli("image", "info", "hello", "--format", "json").stdout)
    assert info["kind"] == "app" and info["command"] == ["/bin/hello"]
    assert info["properties"]["linking"] == ("static" if static else "dynamic")
    rootfs = daemon.state_dir / "images" / info["fingerprint"] / "rootfs"
    files = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*") if p.is_file())
    if static:
        assert files == ["bin/hello", "etc/group", "etc/hostname", "etc/hosts", "etc/passwd"]
    else:
        assert "bin/hello" in files and any("libc.so" in f for f in files)
        assert any("ld-linux" in f for f in files) and len(files) <= 8, files
    daemon.cli("launch", "hello", "h1")
    assert _wait_logs(daemon, "h1", "hello from") == "hello from /bin/hello, 1 args\n"
    daemon.cli("stop", "h1", "--timeout", "5")
    r = daemon.cli("image", "delete", "hello", check=False)
    assert r.returncode == 1 and "image 'hello' is used by default/h1" in r.stderr
    daemon.cli("delete", "h1")
    daemon.cli("image", "delete", "hello")
    assert not (daemon.state_dir / "images" / info["fingerprint"]).exists()


@pytest.mark.runtime
def test_app_image_of_busybox(daemon: Daemon) -> None:
    r = daemon.cli("image", "build", "app", "--binary", "/bin/busybox", "--alias", "bb-app")
    assert "Built bb-app" in r.stderr
    info = json.loads(daemon.cli("image", "info", "bb-app", "--format", "json").stdout)
    assert info["command"] == ["/bin/busybox"] and info["properties"]["linking"] == "static"
    daemon.cli("launch", "bb-app", "b1", "--", "/bin/busybox", "sleep", "300")
    r = daemon.cli("exec", "b1", "--", "/bin/busybox", "ls", "/bin")
    assert r.stdout.split() == ["busybox"]
    daemon.cli("delete", "b1", "--force")


def test_operation_cancel_command(daemon: Daemon) -> None:
    op = _start_debian_build(daemon, "deb-cancel")
    r = daemon.cli("operation", "cancel", op["id"])
    assert f"Operation {op['id']} ended: cancelled" in r.stderr
    r = daemon.cli("operation", "cancel", op["id"], check=False)
    assert r.returncode == 1 and "is not running: nothing to cancel" in r.stderr
    assert _staging_left(daemon) == [] and _builders_running(daemon) == []
    assert _mounts_under(daemon.state_dir) == []


def test_failed_debian_build_says_why_and_leaves_nothing(daemon: Daemon) -> None:
    gpg_homes = set(Path("/tmp").glob("mmdebstrap.*"))   # (another run's may be there)
    r = daemon.cli("image", "build", "debian/12", "--packages", "no-such-package-cumulo",
                   check=False, timeout=300)
    assert set(Path("/tmp").glob("mmdebstrap.*")) <= gpg_homes   # its temp files: its own
    assert r.returncode == 1 and r.stderr.startswith("Error: mmdebstrap failed: "), r.stderr
    assert "no-such-package-cumulo" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with daemon.client() as c:
        assert c.images() == [] and c.operations()[0]["status"] == "failure"
    assert _staging_left(daemon) == [] and _builders_running(daemon) == []
    assert _mounts_under(daemon.state_dir) == []


def test_daemon_killed_mid_build_leaves_no_build_behind(daemon: Daemon) -> None:
    op = _start_debian_build(daemon, "deb-killed")
    daemon.stop(signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _builders_running(daemon):   # setpriv --pdeathsig, then the pid namespace
        assert time.monotonic() < deadline, _builders_running(daemon)
        time.sleep(0.2)
    daemon.start()   # the next start removes the staging dir and fails the operation
    with daemon.client() as c:
        assert c.images() == []
        assert [o["status"] for o in c.operations() if o["id"] == op["id"]] == ["failure"]
    assert _staging_left(daemon) == [] and _mounts_under(daemon.state_dir) == []
