"""cumulo monitor: print the daemon's events as they happen (GET /1.0/events)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from cumulo.cli import output as o
from cumulo.client import APIError, Client, DaemonUnreachable

TYPES = ("lifecycle", "operation", "logging")


def line(event: dict[str, Any]) -> str:
    """One readable line: time, type, project and what happened."""
    meta = event.get("metadata") or {}
    kind = event.get("type", "")
    if kind == "lifecycle":
        what = f"{meta.get('action')} {meta.get('name')}"
        context = meta.get("context") or {}
        if context:
            what += " " + " ".join(f"{k}={v}" for k, v in context.items())
    elif kind == "operation":
        what = f"{meta.get('description')}: {meta.get('status')}"
        if meta.get("status") == "running" and meta.get("message"):
            what += f" {meta['progress']:.0%} {meta['message']}"
        if meta.get("error"):
            what += f" ({meta['error']})"
    else:
        what = f"{meta.get('level')} {meta.get('logger')}: {meta.get('message')}"
    stamp = str(event.get("timestamp", ""))[:23]
    return f"{stamp}  {kind:<9}  {event.get('project') or '-':<8}  {what}"


def monitor(
    type_: Annotated[list[str] | None, typer.Option(
        "--type", help="lifecycle, operation or logging (repeatable; default: all)")] = None,
    fmt: Annotated[o.Format, typer.Option(
        "--format", help="table (a line each) or json (an object a line)")] = o.Format.table,
    project: Annotated[str | None, typer.Option(
        "--project", help="only this project's events (default: every project)")] = None,
) -> None:
    """Print events as they happen (instances created, started, stopped...; operations;
    daemon log records) until interrupted."""
    for t in type_ or []:
        if t not in TYPES:
            raise typer.BadParameter(f"use one of {', '.join(TYPES)}", param_hint="--type")
    with Client() as c:
        ws = c.events(type_, project)
    try:
        for frame in ws:
            event = json.loads(frame)
            if "error" in event:
                raise APIError(event["error"], event.get("status", 500), event.get("type", ""))
            if fmt == o.Format.json:
                sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
            else:
                sys.stdout.write(line(event) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return
    finally:
        ws.close()
    raise DaemonUnreachable(f"the event stream from {c.where()} ended (cumulod stopped)")
