"""Helpers shared by the contract, integration and system tests."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

from cumulo.host.criu import criu_binary, unavailable
from cumulo.host.info import HostInfo
from cumulo.host.probe import probe

APPLETS = (
    "sh", "cat", "echo", "sleep", "ps", "id", "hostname", "head", "dd", "yes", "true",
    "ls", "mount", "seq", "tr", "wc", "grep", "stty",
)


def build_busybox_rootfs(top: Path) -> Path:
    """A minimal root filesystem: static busybox plus the applets the tests use."""
    root = top / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


@functools.cache
def host_info() -> HostInfo:
    """This host as the daemon sees it (probed once per test run)."""
    return probe()


def checkpoint_skip_reason() -> str | None:
    """Why this host cannot checkpoint containers (the probe's reason), or None."""
    return unavailable(host_info(), criu_binary())


def container_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the container driver needs root"
    for tool in ("runc", "conmon"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"the container driver needs {tool}"
    return None
