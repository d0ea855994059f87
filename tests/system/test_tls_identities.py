"""cumulod --listen over HTTPS: its own key (0600) and certificate, clients that pin the
certificate's sha256, plain HTTP only on loopback and only when asked for; identities
and remotes through the CLI."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cumulo.client import Client
from cumulo.errors import CertificateError
from tests.system.conftest import BIN

PATH = {"PATH": "/usr/bin:/bin"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cumulo"), *args], env={**PATH, **env},
                          capture_output=True, text=True, timeout=60)


@contextmanager
def daemon(tmp: Path, port: int, *extra: str) -> Iterator[dict[str, str]]:
    """A cumulod with the fake driver on ``tmp``, listening on loopback ``port``; yields
    the environment of a local (unix socket) CLI."""
    proc = subprocess.Popen(
        [str(BIN / "cumulod"), "--state-dir", str(tmp / "s"), "--socket", str(tmp / "s.sock"),
         "--listen", f"127.0.0.1:{port}", "--driver", "container=fake",
         "--no-default-network", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    local = {"CUMULO_SOCKET": str(tmp / "s.sock")}
    try:
        deadline = time.monotonic() + 30
        while cli("host", "info", env=local).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "cumulod did not start"
            time.sleep(0.2)
        yield local
    finally:
        proc.terminate()
        proc.wait(30)


def test_https_key_pinning_and_remotes(tmp_path: Path) -> None:
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    with daemon(tmp_path, port) as local:
        key = tmp_path / "s" / "tls" / "server.key"
        assert key.stat().st_mode & 0o777 == 0o600
        fp = cli("host", "fingerprint", env=local).stdout.strip()
        assert len(fp) == 64
        token = cli("identity", "create", "ci", "--role", "viewer", env=local).stdout.strip()
        remote = {"CUMULO_URL": url, "CUMULO_TOKEN": token}
        r = cli("list", env=remote)   # nothing pinned: refused, the fingerprint shown
        assert r.returncode == 1 and f"sha256 fingerprint {fp}; none is pinned" in r.stderr
        r = cli("list", env={**remote, "CUMULO_FINGERPRINT": "ab" * 32})
        assert r.returncode == 1 and "changed" in r.stderr and "refused" in r.stderr
        r = cli("list", "--format", "json", env={**remote, "CUMULO_FINGERPRINT": fp})
        assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
        # another host: trust on first use shows and pins it; a wrong one is refused
        peer = cli("remote", "token", "--name", "peer", env=local).stdout.strip()
        r = cli("remote", "add", "me", url, "--token", peer, "--fingerprint", "cd" * 32,
                env=local)
        assert r.returncode == 1 and "refused" in r.stderr
        r = cli("remote", "add", "me", url, "--token", peer, env=local)
        assert r.returncode == 0 and fp in r.stderr and "trusted on first use" in r.stderr
        # the remote's token migrates, nothing else
        r = cli("list", env={**remote, "CUMULO_TOKEN": peer, "CUMULO_FINGERPRINT": fp})
        assert r.returncode == 1 and r.stderr == "Error: project 'default' not found\n"
    # a new key (another host at that address, or the key replaced): the pin refuses it
    shutil.rmtree(tmp_path / "s" / "tls")
    with daemon(tmp_path, port) as local:
        assert cli("host", "fingerprint", env=local).stdout.strip() != fp
        with pytest.raises(CertificateError, match="changed"):
            Client(url=url, token=token, fingerprint=fp).server()


def test_plain_http_only_on_loopback_and_when_asked(tmp_path: Path) -> None:
    r = subprocess.run([str(BIN / "cumulod"), "--state-dir", str(tmp_path / "s"),
                        "--socket", str(tmp_path / "s.sock"), "--listen", "0.0.0.0:1",
                        "--insecure-http", "--driver", "container=fake"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "loopback --listen only" in r.stderr
    assert not (tmp_path / "s.sock").exists()
    port = free_port()
    with daemon(tmp_path, port, "--insecure-http") as local:
        assert not (tmp_path / "s" / "tls").exists()
        token = cli("identity", "create", "ci", "--role", "admin", env=local).stdout.strip()
        plain = {"CUMULO_URL": f"http://127.0.0.1:{port}"}
        assert "needs a token" in cli("list", env=plain).stderr
        assert cli("list", env={**plain, "CUMULO_TOKEN": token}).returncode == 0
