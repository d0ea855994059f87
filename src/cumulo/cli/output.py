"""Printing: tables with rich, or JSON for scripts (--format json).

rich is imported when something is first printed with it (``out``, ``err``, tables,
progress bars): it costs about a third of what importing typer does, and most
commands print a line or nothing. A message line goes through ``say``, without rich.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from cumulo.domain.units import format_size

if TYPE_CHECKING:
    from rich.console import Console

_consoles: dict[str, Console] = {}


def __getattr__(name: str) -> Console:
    """``out`` and ``err``: rich consoles on stdout and stderr, made on first use."""
    if name not in ("out", "err"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _consoles:
        from rich.console import Console

        # no markup, emoji codes or highlighting: what we print is data (a name with
        # "[b]" in it stays as it is), and drawing a table then skips loading rich's
        # emoji table (~2.5 ms of a ~4 ms draw)
        _consoles[name] = Console(stderr=name == "err", highlight=False, markup=False,
                                  emoji=False)
    return _consoles[name]


def say(*parts: object) -> None:
    """A message line on stderr, as it is (``Launched web``): no rich console for it,
    which would cost ``cumulo launch`` about a third of importing typer, and no
    wrapping at 80 columns when stderr is not a terminal."""
    typer.echo(" ".join(str(p) for p in parts), err=True)


class Format(StrEnum):
    table = "table"
    json = "json"


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]],
          fmt: Format) -> None:
    """``columns`` is (header, key); JSON prints the full rows."""
    if fmt == Format.json:
        emit_json(list(rows))
        return
    from rich.table import Table

    t = Table(show_edge=True, header_style="bold")
    for header, _ in columns:
        t.add_column(header)
    for row in rows:
        t.add_row(*[cell(row.get(key)) for _, key in columns])
    __getattr__("out").print(t)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def limits_text(limits: dict[str, Any]) -> str:
    parts = []
    for k, v in limits.items():
        parts.append(f"{k}={format_size(v) if k in ('memory', 'memory_swap') else v}")
    return ", ".join(parts)


def key_values(data: dict[str, Any], fmt: Format) -> None:
    """``key: value`` lines, keys in bold on a terminal (plain click styling: no rich)."""
    if fmt == Format.json:
        emit_json(data)
        return
    width = max((len(k) for k in data), default=0)
    for k, v in data.items():
        if isinstance(v, list) and any(" " in str(x) for x in v):  # sentences: one a line
            typer.echo(typer.style(f"{k}:", bold=True))
            for item in v:
                typer.echo(f"  - {item}")
            continue
        text = cell(v)
        typer.echo(typer.style(f"{k}:".ljust(width + 1) if text else f"{k}:", bold=True)
                   + (f" {text}" if text else ""))
