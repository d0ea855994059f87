"""CLI cost: `cumulo list`, `info`, `exec -- true` and `--help` against their floors.

Two floors, measured in the same rounds (interleaved, so drift hits all alike):
- `python -c "import typer"` with the same interpreter: what any typer CLI costs
  to start; the CLI should cost little beyond it (goal: within 1.5x);
- the bare HTTP request the command makes, sent in this process over the unix
  socket with the standard library (a new connection each time): what the daemon
  takes to answer, with no client start-up at all.
A third, ``import typer`` with the two savings of ``cumulo.cli.entry`` (no collections
while importing, no interpreter teardown), shows how much of the CLI's figure is those.

Ratios are the median of the per-round ratios. Each process's CPU time (user + system,
from ``wait4``) is reported too, against that of ``import typer``: other work on a busy
machine stretches wall times, not (much) the CPU a process uses, so these ratios stay
readable when the wall-time ones drift; wall time also counts what overlaps (the daemon
working while the CLI imports), CPU time does not. ``--before REF`` also runs the CLI of
git commit REF (its ``src/``, same interpreter and packages) in the same rounds, for
before/after figures side by side.

    .venv/bin/python -m bench.cli [--repeat 20] [--socket PATH --name INSTANCE]
                                  [--before REF]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.daemon import BIN, bench_daemon, unpack

PY = sys.executable


class UnixHTTP(http.client.HTTPConnection):
    """http.client over a unix socket: the bare request, nothing else."""

    def __init__(self, path: str) -> None:
        super().__init__("cumulo", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def bare(sock: str, method: str, path: str, body: dict[str, Any] | None = None
         ) -> Callable[[], None]:
    def run() -> None:
        conn = UnixHTTP(sock)
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        assert resp.status < 400, payload
    return run


CPU: dict[str, list[float]] = {}   # per command: CPU seconds (user + system) of each run


def process(argv: list[str], env: dict[str, str], key: str = "") -> Callable[[], None]:
    def run() -> None:
        p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
        err = p.stderr.read() if p.stderr is not None else b""
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        assert p.returncode == 0, (argv, err.decode())
        CPU.setdefault(key, []).append(usage.ru_utime + usage.ru_stime)
    return run


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:7.1f} ms"


# the floor with cumulo.cli.entry's two savings (no collections during the imports, no
# interpreter teardown): how much of the CLI's gain on `import typer` is those two
NO_TEARDOWN = "import typer, no teardown"
COMMANDS = ("cumulo --help", "cumulo list", "cumulo info", "cumulo exec -- true")


def commands(cumulo: list[str], name: str) -> dict[str, list[str]]:
    return {"cumulo --help": [*cumulo, "--help"], "cumulo list": [*cumulo, "list"],
            "cumulo info": [*cumulo, "info", name],
            "cumulo exec -- true": [*cumulo, "exec", name, "--", "true"]}


def checkout(ref: str, into: str) -> list[str]:
    """The CLI of commit ``ref``: its src/ unpacked ``into`` a directory and compiled,
    run by this interpreter (as the installed entry point runs ours)."""
    src = unpack(ref, into)
    entry = "entry" if Path(src, "cumulo/cli/entry.py").exists() else "main"
    return [PY, "-c", f"import sys; sys.path.insert(0, {src!r}); "
                      f"from cumulo.cli.{entry} import main; main()"]


def measure(sock: str, name: str, repeat: int, before: list[str] | None = None
            ) -> dict[str, list[float]]:
    env = {**os.environ, "CUMULO_SOCKET": sock}
    env.pop("CUMULO_URL", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)   # as installed: compiled once, not every run
    cumulo = str(BIN / "cumulo")
    q = "?project=default"
    runs: dict[str, Callable[[], None]] = {
        "import typer": process([PY, "-c", "import typer"], env, "import typer"),
        NO_TEARDOWN: process([PY, "-c", "import gc, os; gc.set_threshold(100_000); import typer;"
                              " os._exit(0)"], env, NO_TEARDOWN),
        **{k: process(argv, env, k) for k, argv in commands([cumulo], name).items()},
        **({f"before: {k}": process(argv, env, f"before: {k}")
            for k, argv in commands(before, name).items()} if before else {}),
        "bare GET /instances": bare(sock, "GET", f"/1.0/instances{q}"),
        "bare GET /instances/NAME": bare(sock, "GET", f"/1.0/instances/{name}{q}"),
        "bare POST exec true": bare(sock, "POST", f"/1.0/instances/{name}/exec{q}",
                                    {"command": ["true"]}),
    }
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():   # warm the page cache and the daemon
        fn()
    CPU.clear()
    for _ in range(repeat):
        order = list(runs)
        random.shuffle(order)
        for key in order:
            samples[key].append(timed(runs[key]))
    return samples


def ratio(samples: dict[str, list[float]], ours: str, floor: str) -> float:
    return statistics.median(a / b for a, b in zip(samples[ours], samples[floor], strict=True))


def report(samples: dict[str, list[float]]) -> None:
    """Medians and ratios; with ``before: ...`` samples, theirs on the next line."""
    floors = {"cumulo list": "bare GET /instances", "cumulo info": "bare GET /instances/NAME",
              "cumulo exec -- true": "bare POST exec true"}
    print("medians; ratios are medians of per-round ratios")
    label = 'python -c "import typer"'
    print(f"  {label:<28}{ms(samples['import typer'])}")
    print(f"  {NO_TEARDOWN:<28}{ms(samples[NO_TEARDOWN])}   "
          f"{ratio(samples, NO_TEARDOWN, 'import typer'):5.2f}x import typer")
    for key in COMMANDS:
        for who in ("", "before: "):
            if who + key not in samples:
                continue
            line = (f"  {who + key:<28}{ms(samples[who + key])}   "
                    f"{ratio(samples, who + key, 'import typer'):5.2f}x import typer")
            if key in floors:
                line += (f"   {ratio(samples, who + key, floors[key]):6.1f}x {floors[key]}"
                         f" ({ms(samples[floors[key]]).strip()})")
            print(line)
    print("CPU time (user + system) of the process, medians; ratios to import typer's:")
    print(f"  {'':<38}x import typer   x {NO_TEARDOWN}")
    for key in ("import typer", NO_TEARDOWN,
                *(who + k for k in COMMANDS for who in ("", "before: "))):
        if CPU.get(key):
            print(f"  {key:<28}{ms(CPU[key])}   {ratio(CPU, key, 'import typer'):5.2f}x"
                  f"            {ratio(CPU, key, NO_TEARDOWN):5.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--socket", help="an existing daemon's socket (default: start one)")
    ap.add_argument("--name", default="clibench",
                    help="a running instance on --socket (default: launch one)")
    ap.add_argument("--before", metavar="REF",
                    help="also measure the CLI of this git commit, in the same rounds")
    args = ap.parse_args()
    with ExitStack() as stack:
        sock, name = args.socket, args.name
        if sock is None:
            c, _, _ = stack.enter_context(bench_daemon())
            c.build_image("busybox")
            c.create(name, "busybox", start=True)
            sock = str(c.socket)
        before = (checkout(args.before, stack.enter_context(
            tempfile.TemporaryDirectory(prefix="cumulo-cli-before-"))) if args.before else None)
        samples = measure(sock, name, args.repeat, before)
    report(samples)
    out = Path("bench/results/cli.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"wall": samples, "cpu": CPU}, indent=1))
    print(f"raw samples in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
