"""One table from error class to HTTP status; users get one line, never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from cumulo import errors as e

log = logging.getLogger(__name__)

status_for = e.status_for


def _one_line(err: RequestValidationError) -> str:
    parts = []
    for item in err.errors()[:3]:
        where = ".".join(str(x) for x in item.get("loc", ()) if x not in ("body", "query"))
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg", ""))
    return "invalid request: " + "; ".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(e.CumuloError)
    async def cumulo_error(_req: Request, err: e.CumuloError) -> JSONResponse:
        return JSONResponse({"error": str(err), "type": type(err).__name__},
                            status_code=status_for(err))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_req: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _one_line(err), "type": "InvalidInputError"},
                            status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_req: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail), "type": "HTTPError"},
                            status_code=err.status_code, headers=err.headers)

    @app.exception_handler(Exception)
    async def internal(_req: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"error": f"internal error: {err.__class__.__name__}: {err}",
                             "type": "InternalError"}, status_code=500)
