"""The CLI's fast path against a real cumulod: the same session through the full CLI
(``CUMULO_CLI_FAST=0``) and through the fast path, each on instances of its own, prints
the same, exits the same and leaves the daemon in the same state."""

from __future__ import annotations

import json

import pytest

from tests.system.conftest import Daemon

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime]

# {n}: the session's own instance name, {o}: a second one
SESSION = [
    ["launch", "busybox", "{n}"],
    ["launch", "busybox", "{n}"],                                  # already exists
    ["launch", "nosuchimage", "{o}"],                              # no such image
    ["launch", "busybox", "{o}", "--network", "none", "--", "sleep", "600"],
    ["exec", "{n}", "--", "sh", "-c", "echo out; echo err >&2; exit 7"],
    ["exec", "--env", "A=1", "--cwd", "/tmp", "{n}", "sh", "-c", "echo $A $(pwd)"],
    ["exec", "{n}", "--", "cat"],                                  # stdin goes through
    ["exec", "{n}", "--", "no-such-binary"],
    ["exec", "{n}-missing", "--", "true"],
    ["pause", "{n}"], ["exec", "{n}", "--", "true"], ["resume", "{n}"],
    ["stop", "{n}", "--timeout", "2"], ["stop", "{n}"], ["exec", "{n}", "--", "true"],
    ["start", "{n}"], ["restart", "{o}", "--timeout=1"],
    ["delete", "{n}"],                                             # running
    ["stop", "{n}-missing"], ["delete", "--force", "{n}"], ["delete", "{n}"],
    ["delete", "{o}", "--force"],
]


def run_session(daemon: Daemon, name: str, fast: str) -> list[tuple[int, str, str]]:
    daemon.env["CUMULO_CLI_FAST"] = fast
    out = []
    for step in SESSION:
        argv = [a.format(n=name, o=name + "-b") for a in step]
        r = daemon.cli(*argv, check=False, input="piped in\n")
        out.append((r.returncode, r.stdout.replace(name, "NAME"),
                    r.stderr.replace(name, "NAME")))
    return out


def test_fast_path_session_is_the_full_cli_session(daemon: Daemon) -> None:
    daemon.cli("image", "build", "busybox")
    full = run_session(daemon, "full", "0")
    fast = run_session(daemon, "fast", "1")
    for step, a, b in zip(SESSION, full, fast, strict=True):
        assert a == b, step
    codes = [r[0] for r in full]
    assert codes[:5] == [0, 1, 1, 0, 7], full[:5]   # the session did what it says
    assert full[6][1] == "piped in\n" and full[5][1] == "1 /tmp\n"
    assert json.loads(daemon.cli("list", "--format", "json").stdout) == []
