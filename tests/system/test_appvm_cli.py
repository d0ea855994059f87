"""Single-application VMs through the CLI: a static program as PID 1 on microvm (TCG here).

Two boots: busybox-static running a shell one-liner, and a tiny C program compiled here
with gcc -static that prints its arguments and exits 7.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import Daemon

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow]

HELLO = r"""#include <stdio.h>
int main(int argc, char **argv) {
    printf("hello from pid 1:");
    for (int i = 1; i < argc; i++) printf(" [%s]", argv[i]);
    printf("\n");
    return 7;
}
"""


def wait_stopped(daemon: Daemon, name: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info: dict[str, Any] = json.loads(daemon.cli("info", name, "--format", "json").stdout)
        if info["state"] == "stopped":
            return info
        assert time.monotonic() < deadline, daemon.cli("logs", name).stdout[-2000:]
        time.sleep(0.5)


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = Path(str(tmp_path_factory.mktemp("hello")))
    (d / "hello.c").write_text(HELLO)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(d / "hello"), str(d / "hello.c")],
                   check=True, timeout=120)
    subprocess.run(["gcc", "-O2", "-o", str(d / "hello-dynamic"), str(d / "hello.c")],
                   check=True, timeout=120)
    return d


def test_static_c_program_prints_and_its_exit_status_is_the_instance_s(
        module_daemon: Daemon, hello: Path) -> None:
    module_daemon.cli("launch", "--type", "appvm", "hello", "--app", str(hello / "hello"),
                      "--", "one", "two words")
    info = wait_stopped(module_daemon, "hello")
    logs = module_daemon.cli("logs", "hello").stdout
    assert "hello from pid 1: [one] [two words]" in logs, logs
    assert info["type"] == "appvm" and info["exit_code"] == 7, info
    image = module_daemon.cli("image", "info", info["image"], "--format", "json").stdout
    assert json.loads(image)["kind"] == "app"
    module_daemon.cli("delete", "hello")

    # the same program as a container: an app image runs on both kinds of instance
    r = module_daemon.cli("launch", info["image"], "hello-ct", "--", "/bin/hello", "x",
                          check=False)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 30
    while "hello from pid 1: [x]" not in (out := module_daemon.cli("logs", "hello-ct").stdout):
        assert time.monotonic() < deadline, out
        time.sleep(0.2)
    module_daemon.cli("delete", "--force", "hello-ct")


def test_app_image_built_by_image_build_app_boots_as_an_app_vm(
        module_daemon: Daemon, hello: Path) -> None:
    module_daemon.cli("image", "build", "app", "--binary", str(hello / "hello"),
                      "--alias", "hello-app")
    module_daemon.cli("launch", "hello-app", "built", "--type", "appvm")
    info = wait_stopped(module_daemon, "built")
    assert info["exit_code"] == 7, module_daemon.cli("logs", "built").stdout[-1000:]
    assert "hello from pid 1:" in module_daemon.cli("logs", "built").stdout
    module_daemon.cli("delete", "built")


def test_busybox_static_as_the_app_with_footprint_in_info(module_daemon: Daemon) -> None:
    module_daemon.cli("launch", "--type", "appvm", "bb", "--app", "/bin/busybox", "--",
                      "sh", "-c", "echo app-up; read line; echo got $line; exit 3")
    deadline = time.monotonic() + 120
    while "app-up" not in module_daemon.cli("logs", "bb").stdout:
        assert time.monotonic() < deadline, module_daemon.cli("logs", "bb").stdout[-2000:]
        time.sleep(0.5)
    info = json.loads(module_daemon.cli("info", "bb", "--format", "json").stdout)
    d = info["details"]
    assert info["state"] == "running" and d["machine"] == "microvm", info
    busybox_size = Path("/bin/busybox").stat().st_size
    # the initramfs is the program and a console node (cpio headers): no shell, no modules
    assert busybox_size < d["initramfs_bytes"] < busybox_size + 4096, d
    assert 0 < d["qemu_pss_bytes"] <= d["qemu_rss_bytes"] and d["qemu_threads"] >= 2, d
    table = module_daemon.cli("info", "bb").stdout
    assert "initramfs" in table and "threads" in table, table
    print(f"appvm footprint (TCG): initramfs {d['initramfs_bytes']} B,"
          f" QEMU RSS {d['qemu_rss_bytes'] >> 20} MiB, PSS {d['qemu_pss_bytes'] >> 20} MiB,"
          f" {d['qemu_threads']} threads")
    r = module_daemon.cli("exec", "bb", "--", "true", check=False)
    assert r.returncode == 1 and "no shell" in r.stderr, r.stderr
    # the program reads its console: a line typed there is answered, and it exits 3
    out = module_daemon.cli("console", "bb", input="typed-line\n", timeout=90).stdout
    assert "got typed-line" in out, out
    info = wait_stopped(module_daemon, "bb")
    assert info["exit_code"] == 3, info
    module_daemon.cli("delete", "bb")


def test_bad_apps_are_refused_and_leave_nothing(module_daemon: Daemon, hello: Path) -> None:
    before = json.loads(module_daemon.cli("image", "list", "--format", "json").stdout)
    r = module_daemon.cli("launch", "--type", "appvm", "dyn", "--app",
                          str(hello / "hello-dynamic"), check=False)
    assert r.returncode == 1 and "dynamically linked" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = module_daemon.cli("launch", "--type", "appvm", "src", "--app", str(hello / "hello.c"),
                          check=False)
    assert r.returncode == 1 and "not an ELF" in r.stderr, r.stderr
    r = module_daemon.cli("launch", "--type", "appvm", "none", "--app", "/nonexistent",
                          check=False)
    assert r.returncode == 1 and "cannot read app" in r.stderr, r.stderr
    assert json.loads(module_daemon.cli("list", "--format", "json").stdout) == []
    assert json.loads(module_daemon.cli("image", "list", "--format", "json").stdout) == before
