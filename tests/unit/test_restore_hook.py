"""The createRuntime hook a container restore adds: it hands runc's state (the restored
PID 1) to the driver's ``Plugger``, which wires the NICs and answers; a failure to wire
fails the hook (so runc's restore) and keeps the cause; the hook leaves config.json again."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cumulo.drivers.container import restore_hook


def run_hook(instance_dir: Path, pid: int) -> int:
    h = restore_hook.hook(instance_dir)
    return subprocess.run([h["path"], *h["args"][1:]], input=json.dumps({"pid": pid}),
                          text=True, timeout=30).returncode


def test_the_hook_hands_the_pid_and_waits_for_the_wiring(tmp_path: Path) -> None:
    got: list[int] = []
    with restore_hook.Plugger(tmp_path, got.append, lock=False) as plug:
        assert run_hook(tmp_path, 4242) == 0
    assert got == [4242] and plug.wired and plug.error is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []   # its files are gone


def test_a_failed_wiring_fails_the_hook_with_its_cause(tmp_path: Path) -> None:
    def wire(pid: int) -> None:
        raise RuntimeError(f"no bridge for {pid}")

    with restore_hook.Plugger(tmp_path, wire, lock=False) as plug:
        assert run_hook(tmp_path, 7) == 1
    assert not plug.wired and "no bridge for 7" in str(plug.error)


@pytest.mark.parametrize("hooks", [None, {"poststop": [{"path": "/bin/true"}]}])
def test_the_hook_comes_and_goes(tmp_path: Path, hooks: dict[str, object] | None) -> None:
    config = tmp_path / "config.json"
    data: dict[str, object] = {"ociVersion": "1.0.2", **({"hooks": hooks} if hooks else {})}
    config.write_text(json.dumps(data))
    restore_hook.set_hook(config, tmp_path)
    assert json.loads(config.read_text())["hooks"]["createRuntime"][0]["path"] == "/bin/sh"
    restore_hook.set_hook(config, None)
    assert json.loads(config.read_text()) == data


def test_a_hook_left_by_an_unfinished_restore_is_dropped(tmp_path: Path) -> None:
    data: dict[str, object] = {"hooks": {"createRuntime": [restore_hook.hook(tmp_path)]}}
    assert restore_hook.drop(data) and data == {}
    assert not restore_hook.drop(data)
