"""Depositing over HTTP: resumable uploads (tus 1.0: creation, termination, expiration), then a
deposit of finished uploads plus a manifest, processed through the inbox; its status to poll."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from mliplake.ingest.uploads import UploadError, describe, metadata_header
from mliplake.server.auth import require_write
from mliplake.server.problems import Problem

router = APIRouter(tags=["deposits"])
TUS_VERSION = "1.0.0"
TUS = {"Tus-Resumable": TUS_VERSION}


def _tus_check(request: Request) -> None:
    v = request.headers.get("tus-resumable")
    if v is not None and v != TUS_VERSION:
        raise Problem(412, "Precondition failed", f"Tus-Resumable {v!r}: this server speaks {TUS_VERSION}",
                      headers={"Tus-Version": TUS_VERSION})


def _depositor(request: Request) -> Any:
    c = require_write(request)
    if not c.principal.can_deposit:
        raise Problem(403, "Forbidden", "this account may not deposit (role depositor, curator or admin needed)")
    return c


@router.options("/uploads", summary="tus: what this server supports")
def uploads_options(request: Request) -> Response:
    s = request.app.state.settings
    return Response(status_code=204, headers=TUS | {"Tus-Version": TUS_VERSION,
                                                     "Tus-Extension": "creation,termination,expiration",
                                                     "Tus-Max-Size": str(s.upload_max_bytes)})


@router.post("/uploads", status_code=201, summary="tus: create an upload (Upload-Length, Upload-Metadata filename)")
def create_upload(request: Request) -> Response:
    _tus_check(request)
    c = _depositor(request)
    length = request.headers.get("upload-length", "")
    if not length.isdigit():
        raise Problem(400, "Bad request", "Upload-Length: the file's size in bytes is needed", headers=TUS)
    meta = metadata_header(request.headers.get("upload-metadata"))
    if "filename" not in meta:
        raise Problem(400, "Bad request", "Upload-Metadata: give the filename (tus: 'filename <base64>')", headers=TUS)
    up = request.app.state.uploads.create(c.name, int(length), meta["filename"], meta)
    return Response(status_code=201, headers=TUS | {"Location": f"/api/v1/uploads/{up.id}", "Upload-Offset": "0",
                                                    "Upload-Expires": _expires(request, up)})


def _expires(request: Request, up: Any) -> str:
    from email.utils import formatdate

    return formatdate(up.created_at + request.app.state.uploads.expiry, usegmt=True)


@router.head("/uploads/{upload_id}", summary="tus: how much of the upload has arrived")
def upload_offset(request: Request, upload_id: str) -> Response:
    c = _depositor(request)
    up = request.app.state.uploads.get(upload_id, c.name)
    return Response(status_code=200, headers=TUS | {"Upload-Offset": str(up.offset), "Upload-Length": str(up.length),
                                                    "Cache-Control": "no-store"})


@router.get("/uploads/{upload_id}", summary="An upload's progress as JSON")
def upload_info(request: Request, upload_id: str) -> dict[str, Any]:
    c = _depositor(request)
    return {"data": describe(request.app.state.uploads.get(upload_id, c.name))}


BLOCK = 1 << 20  # bytes handed to the writer thread at a time (measured: larger blocks fall out of the CPU's cache)
BLOCK_PIECES = 256  # ... or this many pieces (a client sending tiny pieces)
QUEUE = 8  # blocks waiting for the disk: at most QUEUE x BLOCK bytes of one request in memory


@router.patch("/uploads/{upload_id}", summary="tus: send bytes from Upload-Offset on")
async def upload_patch(request: Request, upload_id: str) -> Response:
    import asyncio
    import queue
    import threading

    _tus_check(request)
    c = _depositor(request)
    if request.headers.get("content-type", "") != "application/offset+octet-stream":
        raise Problem(415, "Unsupported media type", "Content-Type: application/offset+octet-stream", headers=TUS)
    offset = request.headers.get("upload-offset", "")
    if not offset.isdigit():
        raise Problem(400, "Bad request", "Upload-Offset is needed", headers=TUS)
    store = request.app.state.uploads
    # the body goes to disk as it arrives, on a thread (file writes block), through a small queue of
    # blocks; a block is the list of pieces the server received (written with one writev, no copy)
    q: queue.Queue = queue.Queue(maxsize=QUEUE)
    done: dict[str, Any] = {}

    def blocks() -> Any:
        while (item := q.get()) is not None:
            yield item

    def write() -> None:
        try:
            done["upload"] = store.append(upload_id, c.name, int(offset), blocks())
        except BaseException as e:  # noqa: BLE001 - handed back to the request
            done["error"] = e
            while q.get() is not None:  # drain, so the reading side never blocks
                pass

    worker = threading.Thread(target=write, daemon=True)
    worker.start()
    loop = asyncio.get_running_loop()

    async def put(item: list[bytes] | None) -> None:
        try:
            q.put_nowait(item)
        except queue.Full:  # the disk is behind: wait for it off the event loop
            await loop.run_in_executor(None, q.put, item)

    pending: list[bytes] = []
    size = 0
    try:
        async for piece in request.stream():
            if not piece:
                continue
            pending.append(piece)
            size += len(piece)
            if size >= BLOCK or len(pending) >= BLOCK_PIECES:
                await put(pending)
                pending, size = [], 0
            if "error" in done:
                break
    finally:
        if pending and "error" not in done:  # what arrived before a broken connection is kept too
            await put(pending)
        await put(None)
        await loop.run_in_executor(None, worker.join)
    if "error" in done:
        e = done["error"]
        if isinstance(e, UploadError):
            raise Problem(e.status, "Upload refused", str(e), headers=TUS)
        raise e
    up = done["upload"]
    return Response(status_code=204, headers=TUS | {"Upload-Offset": str(up.offset),
                                                    "Upload-Expires": _expires(request, up)})


@router.delete("/uploads/{upload_id}", status_code=204, summary="tus: abandon an upload")
def upload_delete(request: Request, upload_id: str) -> Response:
    c = _depositor(request)
    request.app.state.uploads.delete(upload_id, c.name)
    return Response(status_code=204, headers=TUS)


class DepositBody(BaseModel):
    uploads: list[str] = Field(..., description="ids of finished uploads (archives are unpacked)")
    manifest: dict[str, Any] = Field(..., description="the manifest, as in a manifest.yaml (dataset, licence, ...)")


@router.post("/deposits", status_code=202, summary="Deposit finished uploads with a manifest; poll its status")
def create_deposit(request: Request, body: DepositBody, response: Response) -> dict[str, Any]:
    from mliplake.ingest import intake

    c = _depositor(request)
    state = request.app.state
    s = state.settings
    name = intake.submit(state.lake, state.uploads, c.name, body.uploads, body.manifest,
                         s.archive_max_files, s.archive_max_bytes)
    if s.api_ingest == "inline":
        state.ingest_pool.submit(intake.process, state.lake, name)
    response.headers["Location"] = f"/api/v1/intake/{name}"
    return {"data": intake.status(state.lake, name)}


@router.get("/intake/{name}", summary="Status of an HTTP deposit: received, staged, ingesting, stored, ...")
def deposit_status(request: Request, name: str) -> dict[str, Any]:
    from mliplake.ingest import intake

    c = _require_owner(request, name)
    out = intake.status(request.app.state.lake, name)
    del c
    return {"data": out}


def _require_owner(request: Request, name: str) -> Any:
    from mliplake.ingest import intake
    from mliplake.server.auth import require_user

    c = require_user(request)
    owner = intake.owner_of(request.app.state.lake, name)
    if owner != c.name and not c.principal.sees_everything:
        raise Problem(404, "Not found", f"no deposit {name!r}")
    return c
