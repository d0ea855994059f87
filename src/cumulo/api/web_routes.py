"""Routes the web console needs beyond the rest of the API: a session token for the
local admin (``cumulo ui``) and the benchmark reports it shows."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from cumulo.api import auth, web_auth
from cumulo.domain import roles
from cumulo.errors import ForbiddenError, NotFoundError
from cumulo.services.host import Services

REPORT_NAME = re.compile(r"^[\w.-]+\.html$")
REPORT_FILE = re.compile(r"^[\w.-]+\.(html|png)$")   # a report and the plots beside it
MEDIA = {"html": "text/html", "png": "image/png"}


class UiSessionOut(BaseModel):
    identity: str = Field(description="the session's admin identity (ui-...): the audit log"
                                      " names it, `cumulo identity revoke` ends it")
    token: str = Field(description="its bearer token, in this answer only")
    expires_at: datetime
    url: str | None = Field(description="the console with the token in its fragment, when"
                                        " the daemon serves TCP (--listen); else null")
    fingerprint: str | None = Field(description="sha256 of the certificate the console is"
                                                " served with (null over plain HTTP)")


class ReportOut(BaseModel):
    name: str
    size: int
    modified: datetime


def console_url(listen: str | None, https: bool = True) -> str | None:
    """``https://HOST:PORT/ui/`` of a ``--listen HOST:PORT`` (a wildcard: loopback;
    ``http`` with --insecure-http)."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    scheme = "https" if https else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/ui/"


def add_routes(r: APIRouter, svc: Services, listen: str | None, reports: Path | None,
               fingerprint: str | None) -> None:
    @r.post("/ui-sessions", status_code=201, response_model=UiSessionOut,
            summary="A web console session for the host's admin (cumulo ui): an admin"
                    " identity that expires in 8 hours; over the unix socket only")
    def new_session(request: Request) -> UiSessionOut:
        if auth.caller_of(request) is not auth.ROOT:
            raise ForbiddenError("web console sessions are given over the unix socket"
                                 " only: run `cumulo ui` on the daemon's host (or sign in"
                                 " with an identity's token)", roles.ADMIN)
        ident, token = web_auth.new_session(svc.identities)
        assert ident.expires_at is not None
        url = console_url(listen, https=fingerprint is not None)
        return UiSessionOut(identity=ident.name, token=token, expires_at=ident.expires_at,
                            url=f"{url}#token={token}" if url else None,
                            fingerprint=fingerprint)

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
