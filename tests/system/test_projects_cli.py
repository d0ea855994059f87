"""Projects through the CLI against a running cumulod: two tenants with the same names,
nothing of one visible to the other, a quota that holds under 20 parallel launches,
usage after deletes, and a project that cannot go while it holds anything."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import BIN, Daemon, running_daemon


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon whose containers are the fake driver's (the point here is the store and
    the API, not runc), and a CLI config of its own."""
    with running_daemon(tmp_path, ("--driver", "container=fake")) as d:
        d.env["CUMULO_CONFIG"] = str(tmp_path / "cli-config.json")
        d.cli("image", "build", "busybox")
        yield d
        for p in ("a", "b", "q"):
            for inst in json.loads(d.cli("list", "--project", p, "--format", "json",
                                         check=False).stdout or "[]"):
                d.cli("delete", "--force", "--project", p, inst["name"])


def names(d: Daemon, *args: str) -> list[str]:
    return [i["name"] for i in json.loads(d.cli("list", "--format", "json", *args).stdout)]


def test_two_projects_same_names_and_nothing_leaks(fake: Daemon) -> None:
    d = fake
    d.cli("project", "create", "a", "--description", "team a")
    d.cli("project", "create", "b")
    d.cli("--project", "a", "launch", "busybox", "web")
    d.cli("launch", "busybox", "web", input=None)        # default's own web
    d.env["CUMULO_PROJECT"] = "b"
    d.cli("launch", "busybox", "web")
    d.cli("launch", "busybox", "only-b")
    del d.env["CUMULO_PROJECT"]
    assert names(d) == ["web"]
    assert names(d, "--project", "b") == ["only-b", "web"]
    d.cli("project", "switch", "a")
    assert names(d) == ["web"] and json.loads(d.cli("info", "web", "--format", "json")
                                              .stdout)["project"] == "a"
    list_out = d.cli("project", "list").stdout
    assert "│ * │ a " in list_out
    # b's instance does not exist for a: the same answer as for a name nobody has
    for args in (["info", "only-b"], ["exec", "only-b", "--", "true"], ["logs", "only-b"],
                 ["stop", "only-b"], ["delete", "only-b"], ["snapshot", "list", "only-b"]):
        r = d.cli(*args, check=False)
        assert (r.returncode, r.stderr) == (1, "Error: instance 'only-b' not found\n"), args
    r = d.cli("--project", "ghost", "list", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: project 'ghost' not found\n")
    assert names(d, "--project", "b") == ["only-b", "web"]   # untouched
    r = d.cli("project", "delete", "b", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: project 'b' is not empty: it holds"
                                           " 2 instances\n")
    r = d.cli("project", "delete", "default", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: the project 'default' cannot be deleted\n")
    # a new project refuses privileged containers
    r = d.cli("--project", "b", "launch", "busybox", "root", "--privileged", check=False)
    assert r.returncode == 1 and "does not allow privileged containers" in r.stderr
    for name in ("web", "only-b"):
        d.cli("delete", "--force", "--project", "b", name)
    d.cli("project", "delete", "b")
    assert "b" not in [p["name"] for p in json.loads(
        d.cli("project", "list", "--format", "json").stdout)]


def test_twenty_parallel_launches_against_a_quota_of_five(fake: Daemon) -> None:
    d = fake
    d.cli("project", "create", "q", "-c", "limits.instances=5", "-c", "limits.memory=1GiB",
          "-c", "default.memory=128MiB")
    procs = [subprocess.Popen([str(BIN / "cumulo"), "--project", "q", "launch", "busybox",
                               f"p{i}"], env=d.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(20)]
    results = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        for f in (p.stdout, p.stderr):
            if f:
                f.close()
    ok = [err for code, err in results if code == 0]
    refused = [err for code, err in results if code != 0]
    assert len(ok) == 5 and len(refused) == 15, results
    assert set(refused) == {"Error: project 'q' is over quota: limits.instances=5,"
                            " in use 5, this needs 1 more\n"}
    assert len(names(d, "--project", "q")) == 5
    usage = json.loads(d.cli("project", "info", "q", "--format", "json").stdout)["usage"]
    assert usage["instances"] == {"limit": 5, "usage": 5}
    assert usage["memory"] == {"limit": 1 << 30, "usage": 5 * (128 << 20)}
    for name in names(d, "--project", "q")[:2]:
        d.cli("delete", "--force", "--project", "q", name)
    info = d.cli("project", "info", "q").stdout
    rows = [[c.strip() for c in line.split("│")[1:4]] for line in info.splitlines()]
    assert ["instances", "3", "5"] in rows and ["memory", "384.0MiB", "1.0GiB"] in rows, info
    assert "  default.memory: 128.0MiB" in info
    r = d.cli("project", "delete", "q", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: project 'q' is not empty: it holds"
                                           " 3 instances\n")


def test_two_daemons_sharing_a_store_keep_the_quota(tmp_path: Path, store_url: str) -> None:
    """Two cumulods on one database (a SQLite file, a PostgreSQL database), ten of the
    20 parallel launches through each: still exactly 5 instances."""
    extra = ("--driver", "container=fake", "--database", store_url)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with running_daemon(tmp_path / "one", extra) as d1, \
            running_daemon(tmp_path / "two", extra) as d2:
        for d in (d1, d2):
            d.cli("image", "build", "busybox")   # the fake driver wants the files on its host
        d1.cli("project", "create", "q", "-c", "limits.instances=5")
        procs = [(d, subprocess.Popen(
            [str(BIN / "cumulo"), "--project", "q", "launch", "busybox", f"p{i}"], env=d.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            for i, d in enumerate([d1, d2] * 10)]
        made: list[tuple[Daemon, str]] = []
        refused = []
        for i, (d, p) in enumerate(procs):
            _, err = p.communicate(timeout=120)
            if p.returncode == 0:
                made.append((d, f"p{i}"))
            else:
                refused.append(err)
        assert len(made) == 5 and set(refused) == {
            "Error: project 'q' is over quota: limits.instances=5, in use 5, this needs"
            " 1 more\n"}, refused
        assert len(names(d2, "--project", "q")) == 5
        for d, name in made:   # each by the daemon whose host runs it
            d.cli("delete", "--force", "--project", "q", name)
