"""The CLI imports only what the command it runs needs (issue 16: start-up cost).

Checked in a fresh interpreter, by the modules loaded: not timed, so not flaky.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cumulo.cli.main import LAZY, command_app

HEAVY = ("httpx", "httpcore", "http.client", "email", "ssl", "rich", "pydantic", "websockets",
         "anyio", "fastapi", "importlib.metadata",
         "sqlalchemy", "cumulo.domain.models", "cumulo.api", "cumulo.cli.images",
         "cumulo.cli.storage", "cumulo.cli.firewall", "cumulo.cli.remotes",
         "cumulo.cli.bench", "cumulo.cli.exec_client", "cumulo.cli.console_client",
         "cumulo.wsclient", "wsproto")
STREAMS = ("cumulo.cli.exec_client", "cumulo.cli.console_client", "cumulo.wsclient", "wsproto",
           "cumulo.wsopen")

RUN = """
import json, os, sys
import cumulo.cli.main as m
sys.argv = ["cumulo", *json.loads(sys.argv[1])]
if sys.argv[1:]:
    try:
        m.main()
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)))
"""


def loaded(*argv: str) -> set[str]:
    """Modules loaded after ``cumulo ARGV`` ran against a socket nobody listens on."""
    env = {**os.environ, "CUMULO_SOCKET": "/nonexistent/cumulo.sock"}
    env.pop("CUMULO_URL", None)
    r = subprocess.run([sys.executable, "-c", RUN, json.dumps(argv)], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.splitlines()[-1]))


def heavy(modules: set[str], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(m for m in modules if m.startswith(HEAVY) and not m.startswith(allowed))


def test_import_loads_nothing_heavy() -> None:
    assert heavy(loaded()) == []


def test_quick_commands_load_nothing_heavy() -> None:
    """list, info, config show, delete: typer, h11 and no more (the daemon is unreachable
    here, so they stop at the request; rich comes only to draw a table)."""
    for argv in (["list"], ["info", "web"], ["config", "show", "web"], ["delete", "web"]):
        mods = loaded(*argv)
        assert heavy(mods) == [], (argv, heavy(mods))
        assert "_socket" in mods    # it did try the request


def test_streams_speak_websocket_with_wsproto_not_websockets() -> None:
    """exec, console and monitor open their websocket with h11 (wsopen) and speak it with
    wsproto, and load neither the websockets package nor importlib.metadata (its version
    module's). exec loads wsproto only once its request is on its way (the daemon is
    unreachable here: it never gets that far)."""
    for argv in (["exec", "web", "--", "true"], ["console", "web"], ["monitor"]):
        mods = loaded(*argv)
        assert heavy(mods, STREAMS) == [], (argv, heavy(mods, STREAMS))
        assert "cumulo.wsopen" in mods, argv   # it did try to connect
    assert "wsproto" not in loaded("exec", "web", "--", "true")


FAKE_LAUNCH = """
import json, sys
import cumulo.cli.main as m
from cumulo.client import Client
Client.create = lambda self, *a, **kw: {"status": "success"}   # no daemon needed
sys.argv = ["cumulo", "launch", "busybox", "web[b]1"]
try:
    m.main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def test_launch_says_launched_without_rich() -> None:
    """`cumulo launch` prints one line and no table: it does not load rich for it (a
    console costs about a third of importing typer); the line is printed as it is."""
    r = subprocess.run([sys.executable, "-c", FAKE_LAUNCH], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "Launched web[b]1\n"
    assert heavy(set(json.loads(r.stdout.splitlines()[-1]))) == []


def test_app_holds_only_the_command_it_runs() -> None:
    root = command_app(["info", "web"])
    assert [c.callback.__name__ for c in root.registered_commands if c.callback] == ["info"]
    assert root.registered_groups == []
    net = command_app(["network", "list"])
    assert [g.name for g in net.registered_groups] == ["network"]
    every = command_app(["--help"])
    assert len(every.registered_commands) > 15
    assert {g.name for g in every.registered_groups} >= {n for n, v in LAZY.items() if v[2]}


TABLE = """
import json, sys
from cumulo.cli import output as o
o.table([{"name": "web[b]1", "state": "running :smile:"}], [("NAME", "name"), ("STATE", "state")],
        o.Format.table)
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def test_a_table_prints_data_as_it_is_without_rich_emoji_table() -> None:
    """Cells are data: no markup ("[b]" stays), no emoji codes, so rich's emoji table
    (a large module) is not loaded to draw a table."""
    r = subprocess.run([sys.executable, "-c", TABLE], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "web[b]1" in r.stdout and "running :smile:" in r.stdout, r.stdout
    mods = set(json.loads(r.stderr.splitlines()[-1]))
    assert "rich.table" in mods and "rich._emoji_codes" not in mods


def test_the_daemon_starts_without_numpy() -> None:
    """numpy (a tenth of a second to import) is for placing and evacuating in a cluster:
    a daemon's start, a test's every daemon, does not pay for it."""
    r = subprocess.run([sys.executable, "-c", "import json, sys, cumulo.daemon, cumulo.api.app;"
                        " print(json.dumps(sorted(sys.modules)))"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    mods = set(json.loads(r.stdout.splitlines()[-1]))
    assert "fastapi" in mods and not any(m.split(".")[0] == "numpy" for m in mods)
