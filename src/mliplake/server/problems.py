"""Every error as an RFC 9457 problem document (``application/problem+json``), never a traceback.

Library errors map to statuses in one table; an unexpected exception is logged on the server and
answered with a 500 that names only the request id."""
from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("mliplake.server")
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """Raise anywhere in a route: becomes a problem document."""

    def __init__(self, status: int, title: str, detail: str = "", headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.headers, self.extra = status, title, detail, headers or {}, extra


def problem_response(request: Request, status: int, title: str, detail: str = "",
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "instance": str(request.url.path)} | extra
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _library_errors() -> list[tuple[type[BaseException], int, str]]:
    """(exception class, status, title), most specific first."""
    from mliplake.access import AccessError
    from mliplake.accounts import AccountsError
    from mliplake.accounts import NotFound as AccountNotFound
    from mliplake.core.manifest import ManifestError
    from mliplake.core.units import UnitError
    from mliplake.filters import FilterError
    from mliplake.ingest.deposit import DepositError
    from mliplake.ingest.uploads import UploadError
    from mliplake.lake import NotFound
    from mliplake.ml.training_sets import SpecError
    from mliplake.query.engine import SQLError
    from mliplake.query.sandbox import SandboxError

    return [
        (AccessError, 403, "Forbidden"),
        (NotFound, 404, "Not found"),
        (AccountNotFound, 404, "Not found"),
        (FilterError, 400, "Bad filter"),
        (SQLError, 400, "Bad SQL"),
        (SandboxError, 400, "SQL refused"),
        (ManifestError, 422, "Bad manifest"),
        (UnitError, 422, "Bad units"),
        (DepositError, 422, "Deposit refused"),
        (SpecError, 422, "Bad specification"),
        (AccountsError, 400, "Bad request"),
        (UploadError, 400, "Upload refused"),
        # the library's own "no such thing" and "bad argument" (the handler of the most specific class wins)
        (KeyError, 404, "Not found"),
        (ValueError, 400, "Bad request"),
    ]


def install(app: FastAPI) -> None:
    table = _library_errors()

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc.status, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        from http import HTTPStatus

        title = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "Error"
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else ""
        return problem_response(request, exc.status_code, title, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"where": ".".join(str(x) for x in e.get("loc", ())), "reason": e.get("msg", "")}
                  for e in exc.errors()]
        detail = "; ".join(f"{e['where']}: {e['reason']}" for e in errors)
        return problem_response(request, 422, "Bad request", detail, errors=errors)

    def _library(status: int, title: str) -> Any:
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            code = getattr(exc, "status", None)
            detail = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            return problem_response(request, code if isinstance(code, int) else status, title, detail)
        return handler

    for cls, status, title in table:  # handled by class (the most specific handler wins), not as a 500
        app.add_exception_handler(cls, _library(status, title))

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        rid = uuid.uuid4().hex[:12]
        log.error("request %s failed: %s %s", rid, request.method, request.url.path, exc_info=exc)
        return problem_response(request, 500, "Internal error",
                                f"the server failed on this request; its log names it {rid}", request_id=rid)
