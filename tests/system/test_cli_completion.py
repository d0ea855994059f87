"""Shell completion of names from a real daemon, through typer's bash and zsh protocol,
and `cumulo --install-completion` writing a script that bash runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.system.conftest import BIN, Daemon

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.runtime]


def bash_words(d: Daemon, line: str) -> list[str]:
    """What the completion command answers for ``line`` (the cursor at its end)."""
    words = line.split(" ")
    env = {**d.env, "_CUMULO_COMPLETE": "complete_bash", "COMP_WORDS": line,
           "COMP_CWORD": str(len(words) - 1)}
    r = subprocess.run([str(BIN / "cumulo")], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and r.stderr == "", r
    return r.stdout.split()


def test_names_complete_from_the_daemon(daemon: Daemon) -> None:
    daemon.cli("image", "build", "busybox")
    daemon.cli("launch", "busybox", "web1")
    daemon.cli("create", "busybox", "web2")
    assert bash_words(daemon, "cumulo exec ") == ["web1", "web2"]
    assert bash_words(daemon, "cumulo info w") == ["web1", "web2"]
    assert bash_words(daemon, "cumulo stop web2") == ["web2"]
    # the names of the project given (an unknown one here: no names, no error)
    assert bash_words(daemon, "cumulo info --project other ") == []
    fp = daemon.client().image("busybox")["fingerprint"][:12]
    assert bash_words(daemon, "cumulo launch ") == sorted(["busybox", fp])
    assert bash_words(daemon, "cumulo image info bu") == ["busybox"]
    assert bash_words(daemon, "cumulo volume info ") == []
    daemon.cli("volume", "create", "data", "--size", "16MiB")
    assert bash_words(daemon, "cumulo volume attach ") == ["data"]
    assert bash_words(daemon, "cumulo volume attach data ") == ["web1", "web2"]
    assert "list" in bash_words(daemon, "cumulo li")    # commands still complete
    zsh = subprocess.run([str(BIN / "cumulo")], capture_output=True, text=True, timeout=30,
                         env={**daemon.env, "_CUMULO_COMPLETE": "complete_zsh",
                              "_TYPER_COMPLETE_ARGS": "cumulo info w"})
    assert zsh.returncode == 0 and "web1" in zsh.stdout and "web2" in zsh.stdout, zsh


def test_completion_is_silent_without_a_daemon(daemon: Daemon) -> None:
    daemon.env["CUMULO_SOCKET"] = str(daemon.socket) + ".nobody"
    assert bash_words(daemon, "cumulo exec ") == []


def test_install_completion_for_bash_completes_instances(daemon: Daemon,
                                                         tmp_path: Path) -> None:
    daemon.cli("image", "build", "busybox")
    daemon.cli("launch", "busybox", "web1")
    home = tmp_path / "home"
    home.mkdir()
    env = {**daemon.env, "HOME": str(home), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    for shell in ("bash", "zsh"):
        r = subprocess.run([str(BIN / "cumulo"), "--install-completion", shell], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "completion installed" in r.stdout, r
    assert "_CUMULO_COMPLETE=complete_zsh" in (home / ".zfunc" / "_cumulo").read_text()
    script = home / ".bash_completions" / "cumulo.sh"
    assert str(script) in (home / ".bashrc").read_text()
    # what bash does on `cumulo exec <TAB>`: the installed function fills COMPREPLY
    r = subprocess.run(["bash", "--norc", "-c", f'source "{script}"; COMP_WORDS=(cumulo exec "");'
                        ' COMP_CWORD=2; _cumulo_completion cumulo; echo "${COMPREPLY[@]}"'],
                       env={**env, "PATH": f"{BIN}:/usr/bin:/bin"}, capture_output=True,
                       text=True, timeout=30)
    assert r.stdout.split() == ["web1"], r
