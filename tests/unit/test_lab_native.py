"""The lab's bare-host platform: a script that runs over its time or is interrupted ends
with everything it started, and what it left in its temp dir goes at teardown (the
interrupted bench run of tests/system/test_bench_cli.py once left hpcc's dir in /tmp)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cumulo.errors import DriverError
from cumulo.host import procs
from cumulo.lab.platforms import Platform

# a temp dir as the workloads make theirs, then a child that outlives a killed shell
SCRIPT = ('d=$(mktemp -d) && echo "$d" > {out} && touch "$d/left" && sleep 60 &'
          ' echo $! > {pid}; wait')


def test_a_script_over_its_time_ends_with_its_children_and_leaves_nothing(tmp_path: Path
                                                                          ) -> None:
    p = Platform("native")
    out, pid = tmp_path / "dir", tmp_path / "pid"
    try:
        start = time.monotonic()
        with pytest.raises(DriverError, match="ran over 1s"):
            p.run(SCRIPT.format(out=out, pid=pid), timeout=1)
        assert time.monotonic() - start < 15
        child = int(pid.read_text())
        assert procs.wait_dead(child, 5), "the script's child outlived it"
        made = Path(out.read_text().strip())
        assert made.exists() and str(made.parent) == p._tmp   # the platform's own
    finally:
        p.teardown()
    assert not made.exists()
    assert p.run("echo fine").stdout == "fine\n"   # a new temp dir after a teardown
    p.teardown()


def test_the_output_stdin_and_code_come_back() -> None:
    p = Platform("native")
    try:
        r = p.run('read x; echo "got $x $V"; echo err >&2; exit 3', stdin="in\n",
                  env={"V": "v"})
        assert (r.exit_code, r.stdout, r.stderr) == (3, "got in v\n", "err\n")
    finally:
        p.teardown()
