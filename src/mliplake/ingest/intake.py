"""Deposits that arrive over HTTP: finished uploads plus a manifest, into the inbox.

The API puts the files into ``inbox/<name>/`` and the manifest last (the same folder a person
would drop by hand, see :mod:`mliplake.ingest.inbox`), so Dagster's sensor can take it.  Where Dagster
is not running (``api_ingest = "inline"``), :func:`process` runs the same two steps the Dagster
assets run: stage (originals into the raw zone), then ingest.

The status of an HTTP deposit is read off the lake itself, so it is the same whoever processes
it: ``received`` (in the inbox), ``staged`` (originals kept, deposit id known), ``ingesting``,
then the deposit record's status (``stored``, ``partly quarantined``, ``quarantined``,
``empty``, ``rejected``, ``retracted``), or ``failed`` with the error.
"""
from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mliplake.ingest.uploads import UploadError, UploadStore, is_archive, unpack

if TYPE_CHECKING:
    from mliplake.lake import Lake

PREFIX = "http-"


def _status_path(lake: Lake, name: str) -> str:
    return lake.path("raw", "_inbox", f"{name}.status.json")


def _check_name(name: str) -> str:
    if not (isinstance(name, str) and name.startswith(PREFIX) and len(name) == len(PREFIX) + 32
            and all(c in "0123456789abcdef" for c in name[len(PREFIX):])):
        raise UploadError(f"no deposit {name!r}", 404)
    return name


def submit(lake: Lake, store: UploadStore, owner: str, upload_ids: list[str], manifest: dict[str, Any],
           max_files: int, max_bytes: int) -> str:
    """Finished uploads (archives unpacked) and the manifest into ``inbox/<name>/``; returns the name.

    The manifest's ``owner`` is the account's name, whatever the request said."""
    from mliplake.core.manifest import parse_manifest

    if not upload_ids:
        raise UploadError("a deposit needs at least one finished upload")
    if len(set(upload_ids)) != len(upload_ids):
        raise UploadError("the same upload is named twice")
    manifest = dict(manifest or {})
    manifest["owner"] = owner
    parse_manifest(manifest, source="manifest")  # refused here, before anything moves
    ups = [store.get(u, owner) for u in upload_ids]
    unfinished = [f"{u.filename} ({u.offset} of {u.length} bytes)" for u in ups if not u.complete]
    if unfinished:
        raise UploadError("uploads not finished: " + ", ".join(unfinished), 409)
    name = PREFIX + uuid.uuid4().hex
    folder = lake.path("inbox", name)
    with tempfile.TemporaryDirectory(prefix="mliplake-intake-") as tmp:
        files: list[tuple[Path, str]] = []
        for up in ups:
            if is_archive(up.filename):
                sub = Path(tmp) / up.id
                for rel in unpack(store.path(up), up.filename, sub, max_files, max_bytes):
                    files.append((sub / rel, rel))
            else:
                files.append((store.path(up), up.filename))
            if len(files) > max_files:
                raise UploadError(f"more than {max_files} files in one deposit", 413)
        names = [rel for _, rel in files]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise UploadError(f"two files would have the same path in the deposit: {', '.join(clash)}")
        for src, rel in files:
            lake.put_file(src, f"{folder}/{rel}")
    lake.write_json(_status_path(lake, name), {"state": "received", "owner": owner})
    lake.write_bytes(f"{folder}/manifest.json", json.dumps(manifest).encode())  # last: the folder is ready
    for up in ups:
        store.delete(up.id, owner)
    return name


def owner_of(lake: Lake, name: str) -> str:
    _check_name(name)
    try:
        return lake.read_json(_status_path(lake, name)).get("owner", "")
    except FileNotFoundError:
        raise UploadError(f"no deposit {name!r}", 404) from None


def _mark(lake: Lake, name: str, **fields: Any) -> None:
    doc = lake.read_json(_status_path(lake, name))
    lake.write_json(_status_path(lake, name), doc | fields)


def process(lake: Lake, name: str) -> dict[str, Any]:
    """Stage and ingest ``inbox/<name>`` as the deposit's owner (what the Dagster assets do)."""
    from mliplake.ingest import inbox

    try:
        _mark(lake, name, state="staging")
        staged = inbox.stage(lake, name)
        _mark(lake, name, state="ingesting", deposit_id=staged.deposit_id)
        report = inbox.ingest_staged(lake, name)
        _mark(lake, name, state="done", deposit_id=report.deposit_id)
    except Exception as e:  # noqa: BLE001 - the deposit's status carries the reason to the client
        _mark(lake, name, state="failed", error=f"{type(e).__name__}: {e}")
    return status(lake, name)


def status(lake: Lake, name: str) -> dict[str, Any]:
    """Where an HTTP deposit is; the deposit record's report once it is committed."""
    _check_name(name)
    try:
        doc = lake.read_json(_status_path(lake, name))
    except FileNotFoundError:
        raise UploadError(f"no deposit {name!r}", 404) from None
    out: dict[str, Any] = {"id": name, "status": doc.get("state", "received")}
    dep = doc.get("deposit_id")
    if dep is None and lake.fs.exists(lake.path("raw", "_inbox", f"{name}.json")):
        dep = lake.read_json(lake.path("raw", "_inbox", f"{name}.json")).get("deposit_id")  # staged by Dagster
        out["status"] = "staged"
    if dep:
        out["deposit_id"] = dep
        try:
            rec = lake.as_principal(_owner_principal(lake)).record(dep)
        except KeyError:
            rec = None
        if rec is not None:
            out["status"] = _final(rec)
            out["report"] = {k: rec.get(k) for k in ("dataset", "frames_read", "stored", "duplicates",
                                                     "quarantined", "reasons", "warnings", "error", "files")}
    if doc.get("state") == "failed":
        out["status"], out["error"] = "failed", doc.get("error", "")
    return out


def _owner_principal(lake: Lake) -> Any:
    from mliplake.access import LOCAL_OWNER

    return LOCAL_OWNER  # the caller has been checked to own the deposit


def _final(rec: dict[str, Any]) -> str:
    s = rec.get("status", "stored")
    if s == "stored" and rec.get("quarantined"):
        return "partly quarantined"
    return s
