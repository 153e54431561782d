"""The inbox: deposits dropped as folders under ``inbox/`` in the lake, picked up by the sensor.

A deposit folder holds its data files and a manifest.  It is *ready* once its
manifest is there: writers (``drop``, the API) put the manifest last, so a
half-copied folder is never taken.  Folder names are the Dagster partition keys.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mliplake.core.manifest import manifest_from_bytes
from mliplake.ingest.deposit import MANIFEST_NAMES, Staged, ingest, stage_inbox

if TYPE_CHECKING:
    from mliplake.ingest.deposit import DepositReport
    from mliplake.lake import Lake

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Pending:
    name: str
    signature: str  # changes when any file changes: part of the run key
    dataset: str  # from the manifest ("" if it cannot be read: the run reports why)


def pending(lake: Lake) -> list[Pending]:
    """Ready deposit folders in the inbox, oldest name first."""
    root = lake.path("inbox")
    if not lake.fs.exists(root):
        return []
    lake.fs.invalidate_cache(root)
    out = []
    for entry in lake.fs.ls(root, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[1]
        if entry["type"] != "directory" or name.startswith((".", "_")) or not NAME.match(name):
            continue
        files = {e["name"].rsplit("/", 1)[1]: e for e in lake.fs.find(entry["name"], detail=True).values()}
        manifest = next((files[m] for m in MANIFEST_NAMES if m in files), None)
        if manifest is None:
            continue
        sig = hashlib.sha256(json.dumps(sorted(
            (k, e.get("size"), str(e.get("mtime") or e.get("LastModified") or e.get("ETag"))) for k, e in files.items()
        )).encode()).hexdigest()[:16]
        try:
            with lake.fs.open(manifest["name"], "rb") as f:
                dataset = manifest_from_bytes(f.read(), manifest["name"]).dataset
        except Exception:  # a bad manifest is the run's to report, with the raw files kept
            dataset = ""
        out.append(Pending(name, sig, dataset))
    return sorted(out, key=lambda p: p.name)


def drop(lake: Lake, paths: list[Path], name: str, manifest: Path) -> str:
    """Put files and their manifest (last) into ``inbox/<name>/``; returns the folder."""
    if not NAME.match(name):
        raise ValueError(f"inbox name {name!r}: letters, digits, '_', '.', '-' only")
    folder = lake.path("inbox", name)
    for p in paths:
        lake.put_file(p, f"{folder}/{Path(p).name}")
    lake.put_file(manifest, f"{folder}/manifest{Path(manifest).suffix or '.yaml'}")
    return folder


def _pointer(lake: Lake, name: str) -> str:
    return lake.path("raw", "_inbox", f"{name}.json")


def stage(lake: Lake, name: str) -> Staged:
    """Move ``inbox/<name>`` into the raw zone; a second call (a re-run) finds it staged already."""
    pointer = _pointer(lake, name)
    if not lake.fs.exists(lake.path("inbox", name)) and lake.fs.exists(pointer):
        return staged(lake, name)
    s = stage_inbox(lake, name)
    lake.write_json(pointer, {"deposit_id": s.deposit_id, "manifest": s.manifest.to_dict(),
                              "files": [f.__dict__ for f in s.files]})
    return s


def staged(lake: Lake, name: str) -> Staged:
    from mliplake.core.manifest import parse_manifest
    from mliplake.ingest.deposit import FileReport

    doc = lake.read_json(_pointer(lake, name))
    m = doc["manifest"]
    raw = {k: v for k, v in m.items() if k != "extra"} | (m.get("extra") or {}) | {"units": _units(m) or None}
    manifest = parse_manifest(raw, source=f"raw/_inbox/{name}.json")
    return Staged(doc["deposit_id"], manifest, [FileReport(**f) for f in doc["files"]])


def _units(m: dict) -> dict:
    u = {k: v for k, v in (m.get("units") or {}).items() if k != "declared" and v is not None}
    return u if (m.get("units") or {}).get("declared") else {}


def ingest_staged(lake: Lake, name: str) -> DepositReport:
    return ingest(lake, staged(lake, name))
