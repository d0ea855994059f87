"""The `cumulo` command's entry point: what a short-lived Python process need not pay.

``cumulo.cli.fast`` runs the plain forms of the launch path's commands without typer,
``cumulo.cli.main:main`` everything else; this wraps them for the installed script:

- the garbage collector's first threshold is raised from 700 to 100,000 allocations: a
  quick command allocates some 30,000 objects (modules, classes, functions) that live
  until it exits, and at 700 the collector ran about 50 times over them (`cumulo list`)
  and found almost nothing to free. Long-running commands (``exec``, ``console``,
  ``logs -f``) still collect, less often;
- the process ends with ``os._exit`` once its output is flushed and its ``atexit``
  handlers ran: the interpreter's teardown (a last full collection, then clearing every
  module) took about a third of what importing typer does, for a process about to end.
  Only daemon threads are left by then (the stdin pumps of ``exec`` and ``console``).

Together about 0.4x of ``python -c "import typer"`` in CPU time (docs/cli.md).
"""

from __future__ import annotations

import atexit
import gc
import os
import sys


def main() -> None:
    gc.set_threshold(100_000, *gc.get_threshold()[1:])
    from cumulo.cli.fast import run as fast

    code = fast(sys.argv[1:])
    if code is None:   # not a command line of the fast path: the full CLI runs it
        from cumulo.cli.main import main as run

        try:
            run()
            code = 0
        except SystemExit as exc:   # typer's exit, or ours; other exceptions end as usual
            code = exit_code(exc.code)
    finish(code)


def exit_code(code: object) -> int:
    """What ``sys.exit(code)`` would exit with (printing a message as it does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def finish(code: int) -> None:
    """Flush, run the atexit handlers, and end the process without the teardown."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:   # the reader left (`... | head -1`): as click does then,
            code = code or 1      # no message and exit 1
        except (OSError, ValueError) as err:   # e.g. a full disk under `> file`
            if stream is sys.stdout:
                os.write(2, f"Error: cannot write the output: {err}\n".encode())
                code = code or 1
    os._exit(code)
