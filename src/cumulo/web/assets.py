"""Serving the console's files at ``/ui/`` (no token needed for them: no secret inside)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import NoMatchFound

STATIC = Path(__file__).parent / "static"


def mount(app: FastAPI) -> None:
    @app.get("/ui", include_in_schema=False)
    def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/ui/features.json", include_in_schema=False)
    def features() -> dict[str, bool]:
        """What the console may use: xterm.js comes from npm, which may have been missing
        at install; routes of later features are looked up, not guessed by a failing call
        (by name: FastAPI may keep an included router's routes out of app.routes)."""
        return {"xterm": (STATIC / "vendor" / "xterm.mjs").is_file(),
                "projects": _has_route(app, "list_projects")}

    app.mount("/ui/", StaticFiles(directory=STATIC, html=True), name="ui")


def _has_route(app: FastAPI, name: str) -> bool:
    try:
        app.url_path_for(name)
    except NoMatchFound:
        return False
    return True
