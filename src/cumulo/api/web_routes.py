"""Routes the web console needs beyond the rest of the API: a session token for the
local admin (``cumulo ui``) and the benchmark reports it shows."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from cumulo.api import web_auth
from cumulo.errors import NotFoundError

REPORT_NAME = re.compile(r"^[\w.-]+\.html$")
REPORT_FILE = re.compile(r"^[\w.-]+\.(html|png)$")   # a report and the plots beside it
MEDIA = {"html": "text/html", "png": "image/png"}


class UiSessionOut(BaseModel):
    token: str = Field(description="a bearer token of the web console, kept only in memory")
    expires_at: datetime
    url: str | None = Field(description="the console with the token in its fragment, when"
                                        " the daemon serves TCP (--listen); else null")


class ReportOut(BaseModel):
    name: str
    size: int
    modified: datetime


def console_url(listen: str | None) -> str | None:
    """``http://HOST:PORT/ui/`` of a ``--listen HOST:PORT`` (a wildcard: loopback)."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/ui/"


def add_routes(r: APIRouter, listen: str | None, reports: Path | None) -> None:
    @r.post("/ui-sessions", status_code=201, response_model=UiSessionOut,
            summary="A short-lived token for the web console (cumulo ui)")
    def new_session() -> UiSessionOut:
        token, expires = web_auth.SESSIONS.issue()
        url = console_url(listen)
        return UiSessionOut(token=token, expires_at=datetime.fromtimestamp(expires, UTC),
                            url=f"{url}#token={token}" if url else None)

    @r.get("/reports", response_model=list[ReportOut],
           summary="Benchmark reports (HTML of `cumulo bench report` in STATE_DIR/reports)")
    def list_reports() -> list[ReportOut]:
        if reports is None or not reports.is_dir():
            return []
        found = [p for p in reports.iterdir() if REPORT_NAME.match(p.name) and p.is_file()]
        found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return [ReportOut(name=p.name, size=p.stat().st_size,
                          modified=datetime.fromtimestamp(p.stat().st_mtime, UTC))
                for p in found]

    @r.get("/reports/{name}", summary="A benchmark report (HTML) or one of its plots (PNG)",
           response_class=Response,
           responses={200: {"content": {"text/html": {}, "image/png": {}}}})
    def get_report(name: str) -> Response:
        found = REPORT_FILE.match(name)
        path = reports / name if reports is not None and found else None
        if found is None or path is None or not path.is_file():
            raise NotFoundError("report", name)
        return Response(path.read_bytes(), media_type=MEDIA[found.group(1)])
