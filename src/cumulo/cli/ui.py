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
    """Print the web console's URL with a session token in it: a new admin identity
    (ui-...) that expires in 8 hours, asked for over the unix socket; end it sooner with
    `cumulo identity revoke NAME`."""
    with Client() as c:
        session = c.request("POST", "/ui-sessions").json()
    if not session.get("url"):
        raise UnsupportedError("cumulod serves the web console over TCP only: start it with"
                               " --listen 127.0.0.1:8443")
    o.say(f"Web console, signed in as identity {session['identity']} until"
          f" {session['expires_at'][:16].replace('T', ' ')} UTC (the token after #"
          " stays in the browser, keep it private):")
    print(session["url"])
    if session.get("fingerprint"):
        o.say("The certificate is self-signed: accept it in the browser once its"
              " SHA-256 fingerprint (certificate details) reads")
        o.say(f"  {colons(session['fingerprint'])}")
    if open_ and not webbrowser.open(session["url"]):
        o.say("no web browser found here: open the URL above")


def colons(fingerprint: str) -> str:
    """``AB:CD:...``: how browsers show a certificate's fingerprint."""
    up = fingerprint.upper()
    return ":".join(up[i:i + 2] for i in range(0, len(up), 2))
