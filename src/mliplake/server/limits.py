"""Per-caller rate limits and request-size limits, as plain ASGI middleware.

Rate: a token bucket per token (or per client address without one): ``api_burst`` requests at
once, refilled at ``api_rate`` per second.  Past it: 429 with ``Retry-After`` (seconds) and the
``RateLimit-*`` headers, so a client knows when to come back instead of guessing.

Size: a request body past ``api_max_body`` is a 413 (uploads have their own limits), counted as
it arrives: a missing or lying ``Content-Length`` changes nothing.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from typing import Any

from starlette.exceptions import HTTPException

UPLOAD_PREFIX = "/api/v1/uploads"


def _problem(status: int, title: str, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    hdrs = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    return status, hdrs + (headers or []), body


async def _send(send: Any, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TokenBuckets:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> tuple[bool, float, int]:
        """(allowed, seconds until a request would be, requests left)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return True, 0.0, int(tokens - 1)
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > 100_000:  # forget idle callers: memory stays bounded
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 3600}
            return False, (1 - tokens) / self.rate, 0


class LimitsMiddleware:
    def __init__(self, app: Any, rate: float, burst: int, max_body: int) -> None:
        self.app, self.max_body = app, max_body
        self.buckets = TokenBuckets(rate, burst)

    @staticmethod
    def _key(scope: dict) -> str:
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        if not auth:
            for part in headers.get(b"cookie", b"").split(b";"):
                if part.strip().startswith(b"mliplake_token="):
                    auth = part.strip()
        if auth:
            return "t:" + hashlib.sha256(auth).hexdigest()[:24]
        client = scope.get("client") or ("?", 0)
        return f"a:{client[0]}"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path.startswith(("/api/", "/optimade")) and path != "/api/v1/health":  # health: for load balancers
            ok, wait, left = self.buckets.take(self._key(scope))
            if not ok:
                secs = max(1, math.ceil(wait))
                status, headers, body = _problem(
                    429, "Too many requests",
                    f"this token (or address) may make {self.buckets.rate:g} requests per second on average "
                    f"and {self.buckets.burst} at once; try again in {secs} s",
                    [(b"retry-after", str(secs).encode()), (b"ratelimit-limit", str(self.buckets.burst).encode()),
                     (b"ratelimit-remaining", b"0"), (b"ratelimit-reset", str(secs).encode())])
                return await _send(send, status, headers, body)
        if path.startswith(UPLOAD_PREFIX) and scope.get("method") == "PATCH":
            return await self.app(scope, receive, send)  # uploads: the upload store's own limits
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return await _send(send, *_problem(413, "Content too large", self._too_big()))
        seen = [0]
        limit = self.max_body

        async def counted() -> dict:
            msg = await receive()
            if msg["type"] == "http.request":
                seen[0] += len(msg.get("body", b""))
                if seen[0] > limit:
                    raise _TooBig()
            return msg

        try:
            await self.app(scope, counted, send)
        except _TooBig:
            await _send(send, *_problem(413, "Content too large", self._too_big()))

    def _too_big(self) -> str:
        return (f"a request body may hold at most {self.max_body} bytes; send files as uploads "
                f"({UPLOAD_PREFIX}) and long id lists in pieces")


class _TooBig(HTTPException):
    """Raised from ``receive``: FastAPI passes HTTP exceptions through its body parsing (as a 413)."""

    def __init__(self) -> None:
        super().__init__(413, "the request body is past the limit; send files as uploads")
