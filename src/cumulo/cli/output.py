"""Printing: tables with rich, or JSON for scripts (--format json)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table

from cumulo.domain.units import format_size

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


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
    t = Table(show_edge=True, header_style="bold")
    for header, _ in columns:
        t.add_column(header)
    for row in rows:
        t.add_row(*[cell(row.get(key)) for _, key in columns])
    out.print(t)


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
    if fmt == Format.json:
        emit_json(data)
        return
    width = max((len(k) for k in data), default=0)
    for k, v in data.items():
        if isinstance(v, list) and any(" " in str(x) for x in v):  # sentences: one a line
            out.print(f"[bold]{k + ':'}[/bold]", markup=True)
            for item in v:
                out.print(f"  - {item}", markup=False)
            continue
        out.print(f"[bold]{k + ':':<{width + 1}}[/bold] {cell(v)}")
