"""Who is calling: a bearer token (``Authorization: Bearer mlk_...``), the portal's cookie, or nobody.

No token: the anonymous principal (public data only).  A token that is unknown, expired or revoked
is a 401, never a silent downgrade to anonymous.  Writes need a ``write``-scoped token *and* a role
that allows them; the library checks the role, :func:`require_write` the scope.

An institution's single sign-on plugs in at :func:`caller`: an OIDC proxy in front of the API that
sets a verified ``X-Forwarded-User`` could be trusted here, or a login route could exchange an
OIDC code for a short-lived token of the matching account (``Accounts.create_token``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from mliplake.access import ANONYMOUS, Principal
from mliplake.server.problems import Problem

COOKIE = "mliplake_token"


@dataclass(frozen=True)
class Caller:
    principal: Principal
    token_id: str = ""
    scope: str = "read"

    @property
    def name(self) -> str:
        return self.principal.name or self.principal.kind


def token_of(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth:
        kind, _, value = auth.partition(" ")
        if kind.lower() != "bearer" or not value.strip():
            raise Problem(401, "Unauthorized", "Authorization: give 'Bearer <token>'",
                          headers={"WWW-Authenticate": 'Bearer realm="mliplake"'})
        return value.strip()
    return request.cookies.get(COOKIE, "")


def caller(request: Request) -> Caller:
    """The caller of this request (memoised on the request)."""
    cached = getattr(request.state, "caller", None)
    if cached is not None:
        return cached
    secret = token_of(request)
    if not secret:
        c = Caller(ANONYMOUS)
    else:
        session = request.app.state.accounts.authenticate(secret)
        if session is None:
            raise Problem(401, "Unauthorized", "the token is unknown, expired or revoked",
                          headers={"WWW-Authenticate": 'Bearer realm="mliplake", error="invalid_token"'})
        c = Caller(session.principal, session.token_id, session.scope)
    request.state.caller = c
    return c


def lake_for(request: Request) -> Any:
    """The lake as this caller sees it (every read path goes through the caller's scope)."""
    return request.app.state.lake.as_principal(caller(request).principal)


def require_write(request: Request) -> Caller:
    c = caller(request)
    if c.principal.kind == "anonymous":
        raise Problem(401, "Unauthorized", "sign in: this needs a token with the write scope",
                      headers={"WWW-Authenticate": 'Bearer realm="mliplake"'})
    if c.scope != "write":
        raise Problem(403, "Forbidden", "this token is read-only: create one with --scope write")
    return c


def require_user(request: Request) -> Caller:
    c = caller(request)
    if c.principal.kind == "anonymous":
        raise Problem(401, "Unauthorized", "sign in with a token", headers={"WWW-Authenticate": 'Bearer realm="mliplake"'})
    return c
