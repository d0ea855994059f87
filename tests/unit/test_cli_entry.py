"""The installed `cumulo` script's entry (cumulo.cli.entry): it ends the process with
os._exit to skip the interpreter's teardown, so what the teardown did must still
happen: output flushed, exit codes kept, atexit handlers run, a closed pipe quiet."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cumulo.cli.entry import exit_code

ENTRY = "import sys; from cumulo.cli.entry import main; sys.argv[0] = 'cumulo'; main()"


def cumulo(*argv: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUMULO_SOCKET": "/nonexistent/cumulo.sock"}
    env.pop("CUMULO_URL", None)
    return subprocess.run([sys.executable, "-c", ENTRY, *argv], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=env, timeout=60)


def test_output_to_a_pipe_is_flushed_whole() -> None:
    """--help on a pipe is block-buffered: all of it must be written before os._exit."""
    r = cumulo("--help")
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout and "tpm" in r.stdout   # the last command's line too


def test_exit_codes_are_kept() -> None:
    r = cumulo("info", "web")              # no daemon: a CumuloError, one line
    assert r.returncode == 1
    assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr
    r = cumulo("no-such-command")          # a usage error: click's 2
    assert r.returncode == 2
    assert "No such command" in r.stderr


@pytest.mark.parametrize(("code", "want"), [(None, 0), (0, 0), (3, 3), (True, 1)])
def test_exit_code_as_sys_exit(code: object, want: int) -> None:
    assert exit_code(code) == want


def test_exit_code_of_a_message_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code("went wrong") == 1
    assert capsys.readouterr().err == "went wrong\n"


ATEXIT = """
import atexit, sys
from cumulo.cli import main as m
from cumulo.cli.entry import main
atexit.register(lambda: print("atexit ran", file=sys.stderr))
sys.argv = ["cumulo", "--help"]
main()
"""


def test_atexit_handlers_run() -> None:
    r = subprocess.run([sys.executable, "-c", ATEXIT], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "atexit ran\n"


LEFT = """
import sys
from cumulo.cli.entry import finish
sys.stdout.write("[]\\n")   # as --format json writes: buffered until the end
finish(0)
"""


def test_a_reader_that_left_gets_no_traceback() -> None:
    """`cumulo list --format json | head -c 1` where head has gone before the output is
    flushed (the pipe's read end is closed before the command starts): no traceback, and
    exit 1 as click gives when the pipe breaks while the command prints."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    r, w = os.pipe()
    os.close(r)
    try:
        res = subprocess.run([sys.executable, "-c", LEFT], stdout=w, stderr=subprocess.PIPE,
                             text=True, env=env, timeout=60)
    finally:
        os.close(w)
    assert res.stderr == ""
    assert res.returncode == 1
