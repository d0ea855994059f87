"""`cumulo`'s fast path: the commands a launch path waits on, run without typer.

``launch``, ``exec``, ``start``, ``stop``, ``restart``, ``pause``, ``resume`` and
``delete`` in their plain forms are parsed here and sent through ``LiteClient`` (the
standard library's socket, no h11 or wsproto): importing typer alone takes several
times what starting the interpreter does, and a script that launches a container and
execs into it pays the CLI's start twice. What they print, their errors and exit codes
are the full CLI's (``tests/unit/test_cli_fast.py`` runs both on the same commands).

Anything else goes to the full CLI (``cumulo.cli.main``), and so does any form this
parser is not sure of, decided before anything is sent: another command, ``--help``,
an option it does not know, a value that looks like an option, a repeated option, a
name with characters other than letters, digits, ``.``, ``_`` and ``-``, a daemon
reached by URL (``CUMULO_URL``), shell completion, an unreadable CLI config.
``CUMULO_CLI_FAST=0`` sends everything to the full CLI.
"""

from __future__ import annotations

import errno
import os
import sys

TYPE_CHECKING = False   # as typing's, without importing typing: ~4 ms of the CLI fast path
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

COMPLETE_ENV = "_CUMULO_COMPLETE"   # complete.ENV, which imports typer
SWITCH = "CUMULO_CLI_FAST"   # "0": every command through the full CLI
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
IMAGE_CHARS = NAME_CHARS | frozenset("/:")
STATES = ("start", "stop", "restart", "pause", "resume")


class Call:
    """One command line the fast path runs: the command, its arguments and options."""

    def __init__(self, command: str, project: str | None, args: list[str],
                 opts: dict[str, Any], rest: list[str]) -> None:
        self.command, self.project, self.args = command, project, args
        self.opts, self.rest = opts, rest   # rest: the command to run (launch, exec)

    def __repr__(self) -> str:
        return (f"Call({self.command!r}, {self.project!r}, {self.args!r}, {self.opts!r},"
                f" {self.rest!r})")


# per command: option -> (key, kind); kind: "value", "values" (repeatable), "flag"
# (with its --no- form), "float"
OPTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "launch": {"--project": ("project", "value"), "--type": ("type", "value"),
               "--network": ("network", "values")},
    "exec": {"--project": ("project", "value"), "--env": ("env", "values"),
             "--cwd": ("cwd", "value")},
    "start": {"--project": ("project", "value")},
    "stop": {"--project": ("project", "value"), "--timeout": ("timeout", "float"),
             "--force": ("force", "flag")},
    "restart": {"--project": ("project", "value"), "--timeout": ("timeout", "float")},
    "pause": {"--project": ("project", "value")},
    "resume": {"--project": ("project", "value")},
    "delete": {"--project": ("project", "value"), "--force": ("force", "flag")},
}


def _word(text: str, chars: frozenset[str] = NAME_CHARS) -> bool:
    return bool(text) and text[0] != "-" and all(ch in chars for ch in text)


def _option(token: str, known: dict[str, tuple[str, str]], args: list[str],
            opts: dict[str, Any]) -> bool:
    """Take the option ``token`` (and its value from ``args``) into ``opts``; False when
    the fast path does not know it, or not in this form."""
    name, eq, value = token.partition("=")
    negated = name.startswith("--no-") and known.get("--" + name[5:], ("", ""))[1] == "flag"
    spec = known.get("--" + name[5:] if negated else name)
    if spec is None:
        return False
    key, kind = spec
    if key in opts and kind != "values":
        return False   # given twice: click takes the last; leave it to click
    if kind == "flag":
        if eq:
            return False
        opts[key] = not negated
        return True
    if negated:
        return False
    if not eq:
        if not args:
            return False
        value = args.pop(0)
    if value.startswith("-"):
        return False
    if kind == "float":
        try:
            opts[key] = float(value)
        except ValueError:
            return False
    elif kind == "values":
        opts.setdefault(key, []).append(value)
    else:
        opts[key] = value
    return True


def parse(argv: list[str]) -> Call | None:
    """The command line as the fast path runs it, or None: leave it to the full CLI."""
    args = list(argv)
    project = None
    if args and args[0].partition("=")[0] == "--project":   # the global option
        top: dict[str, Any] = {}
        if not _option(args.pop(0), {"--project": ("project", "value")}, args, top):
            return None
        project = top["project"]
    if not args or args[0] not in OPTIONS:
        return None
    command, args = args[0], args[1:]
    known = OPTIONS[command]
    opts: dict[str, Any] = {}
    positional: list[str] = []
    rest: list[str] = []
    while args:
        token = args.pop(0)
        if token == "--":
            if command != "launch":
                return None
            rest = args   # click: everything after -- is an argument
            break
        if token.startswith("-"):
            if not _option(token, known, args, opts):
                return None
            continue
        positional.append(token)
        if command == "exec":   # options only before NAME: the rest is the command
            rest = args
            break
    if project is not None and not _word(project) or not _word(opts.get("project") or "x"):
        return None
    if command == "launch":
        if len(positional) < 2 or not _word(positional[0], IMAGE_CHARS):
            return None
        positional, rest = positional[:2], positional[2:] + rest
    elif command == "exec":
        rest = rest[1:] if rest[:1] == ["--"] else rest   # click hands the -- through
        if not positional or not rest:
            return None
    elif len(positional) != 1:
        return None
    if not _word(positional[-1] if command != "launch" else positional[1]):
        return None
    return Call(command, project, positional, opts, rest)


def _launch(c: Any, call: Call) -> int:
    from cumulo.cli import create_request as req

    image, name = call.args
    _say(req.create(c, name, image, start=True, type_=call.opts.get("type", "container"),
                    command=call.rest, project=call.opts.get("project"),
                    networks=req.nics(call.opts.get("network"))))
    return 0


def _exec(c: Any, call: Call) -> int:
    from cumulo.cli.exec_client import run_exec

    env = dict(e.split("=", 1) for e in call.opts.get("env", []) if "=" in e)
    return run_exec(c, call.args[0], call.rest, tty_mode=False, env=env,
                    cwd=call.opts.get("cwd", "/"), project=call.opts.get("project"))


def _state(c: Any, call: Call) -> int:
    c.set_state(call.args[0], call.command, timeout=call.opts.get("timeout", 30),
                force=call.opts.get("force", False), project=call.opts.get("project"))
    return 0


def _delete(c: Any, call: Call) -> int:
    c.delete(call.args[0], force=call.opts.get("force", False),
             project=call.opts.get("project"))
    return 0


RUN: dict[str, Callable[[Any, Call], int]] = {
    "launch": _launch, "exec": _exec, "delete": _delete, **{s: _state for s in STATES}}


def _say(text: str) -> None:
    """As ``output.say`` (``typer.echo`` to stderr) prints a plain line."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def run(argv: list[str]) -> int | None:
    """Run ``argv`` on the fast path and return its exit code; None: not run (nothing was
    sent), the full CLI is to run it."""
    if (os.environ.get("CUMULO_URL") or COMPLETE_ENV in os.environ
            or os.environ.get(SWITCH) == "0"):
        return None
    call = parse(argv)
    if call is None:
        return None
    from cumulo.cli.config_file import choose_project
    from cumulo.errors import CumuloError

    try:
        choose_project(call.project)
    except CumuloError:   # an unreadable config: the full CLI says so
        return None
    from cumulo.liteclient import LiteClient

    try:
        with LiteClient() as c:
            return RUN[call.command](c, call)
    except CumuloError as err:
        print(f"Error: {err}", file=sys.stderr)   # as cumulo.cli.main.main
        return 1
    except KeyboardInterrupt:   # as typer's main: exit 130, no message
        return 130
    except OSError as err:
        if err.errno == errno.EPIPE:   # the reader left: as typer's main, exit 1
            return 1
        raise
