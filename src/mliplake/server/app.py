"""The ASGI app: ``create_app(settings)`` builds it; routers stay thin over the library.

State kept on ``app.state``: the settings, the :class:`~mliplake.lake.Lake` (as the local owner;
every request sees it through its caller's principal), the accounts store, the upload store and
the pool that processes HTTP deposits when Dagster does not.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from mliplake import __version__
from mliplake.server import problems
from mliplake.server.auth import caller
from mliplake.server.limits import LimitsMiddleware
from mliplake.settings import Settings, get_settings

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
log = logging.getLogger("mliplake.server")

DESCRIPTION = """
The REST API of an mliplake lake: find, read and download atomistic training data; deposit data
(resumable uploads, tus 1.0); models, the leaderboard and predictions.  OPTIMADE v1.2 is served
under [/optimade](/optimade/v1/info).

Authenticate with `Authorization: Bearer <token>` (tokens come from `mliplake tokens create`).
Without a token, only public data is visible.  Errors are RFC 9457 problem documents.
"""


def uploads_dir(settings: Settings, lake: Any) -> Path:
    """Where unfinished uploads live: the lake's state folder, or (an S3 lake) this machine's."""
    import hashlib

    if lake.local:
        return Path(lake.root) / "state" / "uploads"
    key = hashlib.sha256(str(lake.url).encode()).hexdigest()[:16]
    return Path(settings.state_dir).expanduser() / key / "uploads"


def create_app(settings: Settings | None = None, lake: Any = None) -> FastAPI:
    from mliplake.accounts import Accounts, accounts_url
    from mliplake.ingest.uploads import UploadStore
    from mliplake.lake import Lake
    from mliplake.server.routes import data, deposits, models

    settings = settings or get_settings()
    lake = lake or Lake(settings.lake, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        app.state.uploads.expire()
        yield
        app.state.ingest_pool.shutdown(wait=True)
        app.state.accounts.close()

    app = FastAPI(title="mliplake", version=__version__, description=DESCRIPTION, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json", lifespan=lifespan)
    app.state.settings = settings
    app.state.lake = lake
    app.state.accounts = Accounts(accounts_url(settings, lake))
    app.state.uploads = UploadStore(uploads_dir(settings, lake), settings.upload_max_bytes, settings.upload_chunk_max,
                                    settings.upload_expiry_hours)
    # one deposit at a time per server process: a deposit already uses the cores it can
    app.state.ingest_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mliplake-intake")
    problems.install(app)
    app.add_middleware(LimitsMiddleware, rate=settings.api_rate, burst=settings.api_burst,
                       max_body=settings.api_max_body)

    for r in (data.router, deposits.router, models.router):
        app.include_router(r, prefix="/api/v1")
    _install_optimade(app)

    @app.get("/api/v1/me", tags=["accounts"], summary="Who this token is: name, groups, roles, scope")
    def me(request: Request) -> dict[str, Any]:
        c = caller(request)
        p = c.principal
        return {"data": {"name": p.name, "kind": p.kind, "groups": sorted(p.groups), "roles": sorted(p.roles),
                         "scope": c.scope if p.kind != "anonymous" else None}}

    @app.get("/api/v1/health", tags=["service"], summary="Liveness and the lake's version")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "lake_version": lake.snapshot()}

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title="mliplake API",
                                   swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _install_web(app)
    return app


def _install_optimade(app: FastAPI) -> None:
    try:
        from mliplake.server.optimade import install
    except ImportError:  # pragma: no cover - the OPTIMADE module is part of the package
        return
    install(app)


def _install_web(app: FastAPI) -> None:
    try:
        from mliplake.web import install
    except ImportError:
        @app.get("/", include_in_schema=False)
        def root() -> HTMLResponse:
            return HTMLResponse('<!doctype html><title>mliplake</title><p>mliplake API: '
                                '<a href="/api/docs">documentation</a>, <a href="/optimade/v1/info">OPTIMADE</a>')
        return
    install(app)
