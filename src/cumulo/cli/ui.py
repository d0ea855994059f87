"""cumulo ui: a signed-in URL of the web console for the local admin."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from cumulo.cli import output as o
from cumulo.client import Client
from cumulo.errors import UnsupportedError


def ui(open_: Annotated[bool, typer.Option(
        "--open", help="also open it in this machine's web browser")] = False) -> None:
    """Print the web console's URL with a short-lived token in it (asked for over the unix
    socket; it works in one browser tab until cumulod restarts or 8 hours pass)."""
    with Client() as c:
        session = c.request("POST", "/ui-sessions").json()
    if not session.get("url"):
        raise UnsupportedError("cumulod serves the web console over TCP only: start it with"
                               " --listen 127.0.0.1:8443")
    o.err.print("Web console (the token after # stays in the browser, keep it private):",
                markup=False)
    print(session["url"])
    if open_ and not webbrowser.open(session["url"]):
        o.err.print("no web browser found here: open the URL above", markup=False)
