"""The CLI against a running daemon with the real container driver, as a user runs it."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from cumulo.host import cgroups, procs
from tests.system.conftest import BIN, Daemon, leftovers

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime]


def memory_limit_inside(daemon: Daemon, name: str) -> int | None:
    """The memory limit as the container sees it (cgroup v1 hosts; None on v2)."""
    if cgroups.version() != 1:
        return None
    path = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    return int(daemon.cli("exec", name, "--", "cat", path).stdout)


def test_user_flow(daemon: Daemon) -> None:
    out = daemon.cli("image", "build", "busybox")
    assert "Built busybox" in out.stderr
    imgs = json.loads(daemon.cli("image", "list", "--format", "json").stdout)
    assert imgs[0]["aliases"] == ["busybox"] and imgs[0]["size"] > 1_000_000

    out = daemon.cli("launch", "busybox", "web", "--memory", "64MiB", "--cpu", "0.5",
                     "--pids", "64")
    assert out.stderr == "Launched web\n"
    r = daemon.cli("exec", "web", "--", "sh", "-c", "echo hello from $(hostname); exit 5",
                   check=False)
    assert (r.returncode, r.stdout) == (5, "hello from web\n")
    r = daemon.cli("exec", "web", "--", "cat", input="piped in\n")
    assert r.stdout == "piped in\n"
    r = daemon.cli("exec", "web", "--", "sh", "-c", "echo oops >&2; exit 0")
    assert r.stderr == "oops\n" and r.stdout == ""

    rows = json.loads(daemon.cli("list", "--format", "json").stdout)
    assert [(i["name"], i["state"]) for i in rows] == [("web", "running")]
    assert "web" in daemon.cli("list").stdout

    info = json.loads(daemon.cli("info", "web", "--format", "json").stdout)
    assert info["pid"] > 1 and info["limits"]["memory"] == 64 << 20
    assert info["usage"]["memory_bytes"] > 0 and info["usage"]["pids"] >= 1
    assert psutil.Process(info["pid"]).uids().real != 0  # root inside is not root outside
    assert "memory" in daemon.cli("info", "web").stdout

    daemon.cli("config", "set", "web", "memory", "128MiB")
    info = json.loads(daemon.cli("info", "web", "--format", "json").stdout)
    assert info["limits"]["memory"] == 128 << 20
    assert memory_limit_inside(daemon, "web") in (128 << 20, None)

    daemon.cli("launch", "busybox", "talker", "--", "sh", "-c",
               "echo to-console; echo err-console >&2; sleep 300")
    deadline = time.monotonic() + 10
    while "err-console" not in (logs := daemon.cli("logs", "talker").stdout):
        assert time.monotonic() < deadline, logs
        time.sleep(0.1)
    assert logs == "to-console\nerr-console\n"
    follow = subprocess.Popen([str(BIN / "cumulo"), "logs", "--follow", "talker"],
                              env=daemon.env, stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    daemon.cli("stop", "talker", "--force")
    assert follow.communicate(timeout=10)[0] == "to-console\nerr-console\n"
    assert follow.returncode == 0  # --follow ends when the instance stops
    daemon.cli("delete", "talker")

    daemon.cli("pause", "web")
    assert json.loads(daemon.cli("info", "web", "--format", "json").stdout)["state"] == "paused"
    daemon.cli("resume", "web")
    daemon.cli("stop", "web", "--timeout", "5")
    assert json.loads(daemon.cli("info", "web", "--format", "json").stdout)["state"] == "stopped"
    daemon.cli("config", "set", "web", "memory", "96MiB")  # stopped: kept for next start
    daemon.cli("start", "web")
    assert memory_limit_inside(daemon, "web") in (96 << 20, None)
    daemon.cli("restart", "web", "--timeout", "5")
    assert daemon.cli("exec", "web", "--", "hostname").stdout == "web\n"

    r = daemon.cli("delete", "web", check=False)
    assert r.returncode != 0 and "cannot delete instance 'web': it is running" in r.stderr
    daemon.cli("delete", "web", "--force")
    assert json.loads(daemon.cli("list", "--format", "json").stdout) == []
    assert not list((daemon.state_dir / "instances").iterdir())
    assert not leftovers(daemon.cgroup_parent)


def test_bad_input_is_one_line_error_and_creates_nothing(daemon: Daemon) -> None:
    daemon.cli("image", "build", "busybox")
    daemon.cli("launch", "busybox", "one")
    cases = [
        (["launch", "nosuchimage", "x"], "image 'nosuchimage' not found"),
        (["launch", "busybox", "Bad_Name"], "invalid instance name"),
        (["launch", "busybox", "../../etc"], "invalid instance name"),
        (["launch", "busybox", "x", "--memory", "12XB"], "invalid size '12XB'"),
        (["launch", "busybox", "x", "--cpu", "99"], "exceeds what this host has"),
        (["launch", "busybox", "x", "--memory", "100TiB"], "exceeds what this host has"),
        (["launch", "busybox", "one"], "instance 'one' already exists"),
        (["start", "one"], "cannot start instance 'one': it is running"),
        (["delete", "one"], "it is running"),
        (["info", "ghost"], "instance 'ghost' not found"),
        (["config", "set", "one", "memory", "lots"], "invalid size 'lots'"),
        (["config", "set", "one", "disk", "1"], "unknown limit"),
    ]
    for args, message in cases:
        r = daemon.cli(*args, check=False)
        assert r.returncode != 0, args
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    daemon.cli("stop", "one", "--force")
    r = daemon.cli("exec", "one", "--", "true", check=False)
    assert r.returncode != 0 and "cannot exec instance 'one': it is stopped" in r.stderr
    names = [i["name"] for i in json.loads(daemon.cli("list", "--format", "json").stdout)]
    assert names == ["one"]
    assert [p.name for p in (daemon.state_dir / "instances").iterdir()] == ["default_one"]


def test_unreachable_daemon_is_a_clear_error(daemon: Daemon) -> None:
    env = {**daemon.env, "CUMULO_SOCKET": str(daemon.state_dir / "nope.sock")}
    r = subprocess.run([str(BIN / "cumulo"), "list"], capture_output=True,
                       text=True, env=env, timeout=30)
    assert r.returncode == 1 and "cannot reach cumulod" in r.stderr


def test_container_survives_daemon_crash_and_restart(daemon: Daemon) -> None:
    daemon.cli("image", "build", "busybox")
    daemon.cli("launch", "busybox", "keep")
    daemon.cli("launch", "busybox", "dies", "--", "sh", "-c", "sleep 2; exit 3")
    pid = json.loads(daemon.cli("info", "keep", "--format", "json").stdout)["pid"]
    doomed = json.loads(daemon.cli("info", "dies", "--format", "json").stdout)["pid"]
    # a PID 1's parent is its conmon (a subreaper), not the daemon nor the host's init
    assert psutil.Process(pid).parent().name() == "conmon"  # type: ignore[union-attr]
    daemon.stop(signal.SIGKILL)  # a crash, not a clean stop
    assert procs.wait_dead(doomed, 60)   # "dies" exits while no daemon watches
    # and conmon reaps it at once: no zombie waits for the host's init (which reaps late)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{doomed}").exists():
        assert time.monotonic() < deadline, Path(f"/proc/{doomed}/status").read_text()
        time.sleep(0.02)
    assert psutil.pid_exists(pid)
    daemon.start()
    info = json.loads(daemon.cli("info", "keep", "--format", "json").stdout)
    assert (info["state"], info["pid"]) == ("running", pid)
    assert daemon.cli("exec", "keep", "--", "echo", "still here").stdout == "still here\n"
    dead = json.loads(daemon.cli("info", "dies", "--format", "json").stdout)
    assert (dead["state"], dead["exit_code"]) == ("stopped", 3)


def test_daemon_refuses_bad_start(tmp_path: Path) -> None:
    cumulod = str(BIN / "cumulod")
    # as nobody, who may still read the checkout (it may lie under a dir only root enters,
    # such as a 0700 temp dir): that one capability, nothing else of root's
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
                        cumulod, "--state-dir", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "cumulod must run as root" in r.stderr
    r = subprocess.run([cumulod, "--state-dir", str(tmp_path / "s"), "--socket",
                        str(tmp_path / "s.sock"), "--listen", "nonsense"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "invalid --listen 'nonsense'" in r.stderr
    assert not (tmp_path / "s.sock").exists()


def ws_status(port: int, path: str) -> int:
    """The HTTP status a websocket upgrade to ``path`` gets over TLS, without a token."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        return int(s.recv(4096).split()[1])


def test_cli_over_tcp_with_cumulo_url(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen(
        [str(BIN / "cumulod"), "--state-dir", str(tmp_path / "s"), "--socket",
         str(tmp_path / "s.sock"), "--listen", f"127.0.0.1:{port}", "--driver",
         "container=fake", "--no-default-network"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    env = {"PATH": "/usr/bin:/bin", "CUMULO_URL": f"https://127.0.0.1:{port}"}
    local = {"PATH": "/usr/bin:/bin", "CUMULO_SOCKET": str(tmp_path / "s.sock")}
    try:
        deadline = time.monotonic() + 20
        while True:
            r = subprocess.run([str(BIN / "cumulo"), "host", "fingerprint"], env=local,
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        env["CUMULO_FINGERPRINT"] = r.stdout.strip()
        r = subprocess.run([str(BIN / "cumulo"), "list", "--format", "json"], env=env,
                           capture_output=True, text=True, timeout=30)
        # over TCP nothing works without a token the daemon issued
        assert r.returncode == 1 and "needs a token" in r.stderr, r.stderr
        r = subprocess.run([str(BIN / "cumulo"), "list"], capture_output=True, text=True,
                           env={**env, "CUMULO_TOKEN": "forged"}, timeout=30)
        assert r.returncode == 1 and "not known here" in r.stderr
        for route in ("instances/x/exec-ws", "instances/x/console-ws", "events"):
            assert ws_status(port, f"/1.0/{route}") == 401, route   # no token: no handshake
        token = subprocess.run([str(BIN / "cumulo"), "identity", "create", "ci", "--role",
                                "admin"], env=local, capture_output=True, text=True,
                               timeout=30, check=True).stdout.strip()
        env["CUMULO_TOKEN"] = token
        r = subprocess.run([str(BIN / "cumulo"), "list", "--format", "json"], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr
        r = subprocess.run([str(BIN / "cumulo"), "info", "nope"], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and r.stderr == "Error: instance 'nope' not found\n"
    finally:
        daemon.terminate()
        daemon.wait(30)
