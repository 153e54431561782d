"""The web portal: a single page (``static/index.html`` + a few vanilla ES modules + CSS, no build
step) served at ``/`` over the REST API, with hash routes (``/#/catalogue``, ``/#/dataset/NAME``...).

Nothing is loaded from elsewhere: JavaScript libraries are vendored under ``static/vendor`` by
``infra/vendor-web.sh`` and the page's Content-Security-Policy only allows this origin, so a
browser refuses any request that would leave the server.

Signing in: the portal posts a token the user pastes to ``POST /api/v1/session``, which checks it
and sets it as the HttpOnly, SameSite=Strict cookie that :func:`mliplake.server.auth.caller`
already reads; ``DELETE /api/v1/session`` clears it.  Scripts never hold the token.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# module level, not inside install(): FastAPI resolves the routes' (string) annotations here
from fastapi import Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

STATIC = Path(__file__).resolve().parent / "static"

# only this origin; inline styles are set by scripts (element.style), never inline scripts
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "font-src 'self'; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin"}


class SessionBody(BaseModel):
    token: str = Field(..., min_length=1, max_length=200, description="an API token (mlk_...)")


def install(app: Any) -> None:
    """Serve the portal at ``/`` and add the cookie session routes."""
    from mliplake.server.auth import COOKIE
    from mliplake.server.problems import Problem

    index = STATIC / "index.html"

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def portal() -> FileResponse:
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @app.api_route("/index.html", methods=["GET", "HEAD"], include_in_schema=False)
    def portal_index() -> FileResponse:
        return portal()

    @app.post("/api/v1/session", tags=["accounts"],
              summary="Sign the browser in: check a token and keep it in an HttpOnly cookie", response_model=None)
    def sign_in(request: Request, body: SessionBody) -> JSONResponse:
        session = request.app.state.accounts.authenticate(body.token.strip())
        if session is None:
            raise Problem(401, "Unauthorized", "the token is unknown, expired or revoked")
        p = session.principal
        out = JSONResponse({"data": {"name": p.name, "kind": p.kind, "groups": sorted(p.groups),
                                     "roles": sorted(p.roles), "scope": session.scope}})
        max_age = None
        if session.expires_at is not None:
            from datetime import datetime, timezone

            exp = session.expires_at if session.expires_at.tzinfo else session.expires_at.replace(tzinfo=timezone.utc)
            max_age = max(0, int((exp - datetime.now(timezone.utc)).total_seconds()))
        out.set_cookie(COOKIE, body.token.strip(), max_age=max_age, path="/", httponly=True, samesite="strict",
                       secure=request.url.scheme == "https")
        return out

    @app.delete("/api/v1/session", tags=["accounts"], summary="Sign the browser out: clear the cookie",
                response_model=None)
    def sign_out(request: Request) -> JSONResponse:
        out = JSONResponse({"data": {"signed_out": True}})
        out.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return out
