"""Reading the lake over HTTP: datasets, keys, statistics, search, count, structures, downloads, SQL,
the catalogue, deposits, quarantine and raw files; all through the caller's scope."""
from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from mliplake.server.auth import lake_for
from mliplake.server.problems import Problem

router = APIRouter(tags=["data"])


# ------------------------------------------------------------------ helpers


def jsonable(value: Any) -> Any:
    """Arrow/Python values as JSON: NaN and infinities become null, dates ISO strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


_PLAIN = (str, int, bool, type(None))


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of a table as :func:`jsonable` makes them (the common values, strings, integers and
    nulls, taken as they are: a table of 1,000 rows is 2 ms, not 10)."""
    out = table.to_pylist()
    for r in out:
        for k, v in r.items():
            if v.__class__ not in _PLAIN:
                r[k] = jsonable(v)
    return out


def encode_cursor(last: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(last)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[str, str] | None:
    if not cursor:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Problem(400, "Bad cursor", "the cursor is not one this API gave out") from None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise Problem(400, "Bad cursor", "the cursor is not one this API gave out")
    return value[0], value[1]


def page_limit(request: Request, limit: int) -> int:
    top = request.app.state.settings.api_page_max
    if limit < 1 or limit > top:
        raise Problem(400, "Bad page size", f"limit must be between 1 and {top} (got {limit}); follow "
                      "links.next for more")
    return limit


def _split(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


# ------------------------------------------------------------------ datasets, keys, statistics


@router.get("/datasets", summary="Datasets the caller may see, with their numbers")
def datasets(request: Request) -> dict[str, Any]:
    return {"data": [jsonable(d) for d in lake_for(request).datasets()]}


@router.get("/datasets/{name}", summary="A dataset's card: metadata, numbers, quality score, versions")
def dataset(request: Request, name: str) -> dict[str, Any]:
    from mliplake.catalogue.cards import visible_cards

    lake = lake_for(request)
    con = lake.connection()
    found = con.execute("SELECT * FROM datasets WHERE dataset = ?", [name]).to_arrow_table().to_pylist()
    if not found:
        raise Problem(404, "Not found", f"no dataset {name!r}")
    card = next(iter(visible_cards(lake, name)), {})
    deposits = con.execute("SELECT deposit_id, dataset, status, created_at, frames_read, stored, duplicates, "
                           "quarantined, files FROM deposits WHERE dataset = ? ORDER BY created_at, deposit_id",
                           [name]).to_arrow_table().to_pylist()
    return {"data": jsonable(found[0] | {"card": card, "deposits": deposits})}


@router.get("/keys", summary="Every key: labels, derived columns, info and per-atom keys, with counts")
def keys(request: Request, dataset: str | None = Query(None, description="only this dataset's keys and counts")
         ) -> dict[str, Any]:
    return {"data": rows(lake_for(request).keys(dataset))}


@router.get("/summary", summary="Counts, statistics and histograms of keys over a filter")
def summary(request: Request, filter: str = "", keys: str = "",
            bins: Annotated[int, Query(ge=1, le=200)] = 30) -> dict[str, Any]:
    from dataclasses import asdict

    from mliplake.query.stats import summarise

    s = summarise(lake_for(request), filter or None, _split(keys), bins=bins)
    return {"data": jsonable(asdict(s))}


# ------------------------------------------------------------------ search, count, one structure


class SearchBody(BaseModel):
    filter: str = ""
    ids: list[str] | None = Field(None, description="config_ids to pick (long lists: POST, not GET)")
    columns: list[str] | None = None
    limit: int = 100
    cursor: str | None = None


def _search(request: Request, filter: str, ids: list[str] | None, columns: list[str] | None, limit: int,
            cursor: str | None) -> dict[str, Any]:
    from mliplake import filters
    from mliplake.filters.sql import where
    from mliplake.query.engine import DEFAULT_COLUMNS, time_limit

    lake = lake_for(request)
    limit = page_limit(request, limit)
    after = decode_cursor(cursor)
    cols = columns or DEFAULT_COLUMNS
    clause, params = where(filters.parse(filter or None))
    con = lake.connection()
    known = set(con.sql("SELECT * FROM configurations LIMIT 0").columns)
    bad = [c for c in cols if c not in known]
    if bad:
        raise filters.FilterError(f"unknown column(s) {', '.join(bad)}; columns: {', '.join(sorted(known))}")
    if ids is not None:
        con.register("_ids", pa.table({"config_id": pa.array(ids, pa.string())}))
        clause = f"({clause}) AND config_id IN (SELECT config_id FROM _ids)"
    page_clause, page_params = clause, list(params)
    if after is not None:
        page_clause = f"({clause}) AND (dataset > ? OR (dataset = ? AND config_id > ?))"
        page_params += [after[0], after[0], after[1]]
    select = ", ".join('"' + c.replace('"', '""') + '"' for c in dict.fromkeys([*cols, "dataset", "config_id"]))
    with time_limit(lake, con):
        table = con.sql(f"SELECT {select} FROM configurations WHERE {page_clause} ORDER BY dataset, config_id "
                        f"LIMIT {limit + 1}", params=page_params).to_arrow_table()
        total = con.execute(f"SELECT count(*) FROM configurations WHERE {clause}", params).fetchone()[0]
    more = table.num_rows > limit
    table = table.slice(0, limit)
    nxt = None
    if more:
        last = table.slice(table.num_rows - 1).to_pylist()[0]
        nxt = encode_cursor((last["dataset"], last["config_id"]))
    data = [{k: v for k, v in r.items() if k in cols} for r in rows(table)]
    return {"data": data, "meta": {"data_returned": total, "returned": len(data), "more_data_available": more,
                                   "next_cursor": nxt, "order": "dataset, config_id"},
            "links": {"next": _next_link(request, nxt) if nxt else None}}


def _next_link(request: Request, cursor: str) -> str:
    if request.method != "GET":
        return cursor
    return str(request.url.include_query_params(cursor=cursor))


@router.get("/search", summary="Configurations matching a filter, a page at a time (no depth limit)")
def search_get(request: Request, filter: str = "", columns: str = "", limit: int = 100,
               cursor: str | None = None) -> dict[str, Any]:
    return _search(request, filter, None, _split(columns), limit, cursor)


@router.post("/search", summary="Search with a long filter or a list of ids in the body")
def search_post(request: Request, body: SearchBody) -> dict[str, Any]:
    return _search(request, body.filter, body.ids, body.columns, body.limit, body.cursor)


@router.get("/count", summary="How many configurations match a filter")
def count(request: Request, filter: str = "") -> dict[str, Any]:
    return {"data": {"count": lake_for(request).count(filter or None), "filter": filter}}


@router.get("/configurations/{config_id}", summary="One configuration as JSON, extxyz, CIF or POSCAR")
def configuration(request: Request, config_id: str, format: str = "json", dataset: str | None = None) -> Any:
    from mliplake.query.atoms import STRUCTURE_FORMATS, structure_text, table_to_atoms

    lake = lake_for(request)
    q = "SELECT * FROM configurations WHERE config_id = ?" + (" AND dataset = ?" if dataset else "")
    q += " ORDER BY dataset LIMIT 1"
    table = lake.connection().execute(q, [config_id] + ([dataset] if dataset else [])).to_arrow_table()
    if table.num_rows == 0:
        raise Problem(404, "Not found", f"no configuration {config_id!r}" + (f" in {dataset!r}" if dataset else ""))
    if format == "json":
        row = rows(table)[0]
        for k in ("info", "arrays", "provenance"):
            if isinstance(row.get(k), str):
                row[k] = json.loads(row[k])
        return {"data": row}
    if format not in STRUCTURE_FORMATS:
        raise Problem(400, "Bad format", f"format {format!r}: json, {', '.join(STRUCTURE_FORMATS)}")
    atoms = next(table_to_atoms(table))
    _, media, ext = STRUCTURE_FORMATS[format]
    name = f"{config_id}.{ext}" if ext != "POSCAR" else f"POSCAR_{config_id}"
    return PlainTextResponse(structure_text(atoms, format), media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


# ------------------------------------------------------------------ downloads


EXPORT_MEDIA = {"extxyz": ("text/plain; charset=utf-8", "xyz"), "parquet": ("application/vnd.apache.parquet", "parquet"),
                "arrow": ("application/vnd.apache.arrow.stream", "arrows")}


class ExportBody(BaseModel):
    filter: str = ""
    ids: list[str] | None = None
    format: str = "extxyz"
    version: int | None = Field(None, ge=0, description="the lake version to read (resuming: X-Lake-Version)")
    skip: int = Field(0, ge=0, description="configurations already had (resuming a download)")
    original_keys: bool = False


def _export(request: Request, filter: str, format: str, ids: list[str] | None, version: int | None, skip: int,
            original_keys: bool) -> StreamingResponse:
    from mliplake import filters
    from mliplake.query.export import stream

    if format not in EXPORT_MEDIA:
        raise Problem(400, "Bad format", f"format {format!r}: {', '.join(EXPORT_MEDIA)}")
    filters.parse(filter or None)  # a bad filter is a 400 now, not a broken stream later
    lake = lake_for(request)
    current = lake.snapshot()
    if version is None:
        version = current
    elif version > current:
        raise Problem(400, "Bad version", f"the lake has no version {version} yet (current: {current})")
    try:
        total = _count_at(lake, filter, ids, version)
    except Exception as e:  # noqa: BLE001 - a version past the retention: the download must start again
        if "snapshot" in str(e).lower() or "version" in str(e).lower():
            raise Problem(409, "Version gone", f"version {version} of the lake is no longer kept; start the "
                          f"download again (current version {current})") from None
        raise
    media, ext = EXPORT_MEDIA[format]
    headers = {"Content-Disposition": f'attachment; filename="mliplake-export.{ext}"', "X-Lake-Version": str(version),
               "X-Total-Count": str(total), "X-Skipped": str(skip)}
    return StreamingResponse(stream(lake, filter or None, format, ids=ids, version=version, skip=skip,
                                    original_keys=original_keys), media_type=media, headers=headers)


def _count_at(lake: Any, filter: str, ids: list[str] | None, version: int) -> int:
    from mliplake import filters
    from mliplake.filters.sql import where
    from mliplake.query.engine import configurations_select

    clause, params = where(filters.parse(filter or None))
    con = lake.connection()
    if ids is not None:
        con.register("_ids", pa.table({"config_id": pa.array(ids, pa.string())}))
        clause = f"({clause}) AND config_id IN (SELECT config_id FROM _ids)"
    source = configurations_select(lake.scope().sql_predicate(), version)
    return con.execute(f"SELECT count(*) FROM ({source}) WHERE {clause}", params).fetchone()[0]


@router.get("/export", summary="Download every configuration matching a filter, streamed, no entry cap")
def export_get(request: Request, filter: str = "", format: str = "extxyz",
               version: Annotated[int | None, Query(ge=0)] = None, skip: Annotated[int, Query(ge=0)] = 0,
               original_keys: bool = False) -> StreamingResponse:
    return _export(request, filter, format, None, version, skip, original_keys)


@router.post("/export", summary="Download by a long filter or a list of ids")
def export_post(request: Request, body: ExportBody) -> StreamingResponse:
    return _export(request, body.filter, body.format, body.ids, body.version, body.skip, body.original_keys)


# ------------------------------------------------------------------ SQL and the catalogue


class SQLBody(BaseModel):
    query: str
    max_rows: int | None = Field(None, ge=1)


@router.post("/sql", summary="One read-only SELECT over the caller's visible data (sandboxed, limited)")
def sql(request: Request, body: SQLBody) -> dict[str, Any]:
    lake = lake_for(request)
    limits = {"max_rows": body.max_rows} if body.max_rows else {}
    table = lake.sql(body.query, untrusted=True, **limits)
    return {"data": rows(table), "meta": {"columns": table.column_names, "returned": table.num_rows}}


@router.get("/catalogue", summary="Find datasets by words, elements (all, any, only) and licence, with facets")
def catalogue(request: Request, q: str = "", elements: str = "", mode: str = "all", license: str | None = None,
              sort: str = "relevance") -> dict[str, Any]:
    from mliplake.catalogue.search import search

    if mode not in ("all", "any", "only"):
        raise Problem(400, "Bad mode", f"mode {mode!r}: all, any or only")
    res = search(lake_for(request), q, _split(elements), mode, license, sort)
    return {"data": jsonable(res.datasets), "meta": {"data_returned": res.total, "facets": jsonable(res.facets)}}


# ------------------------------------------------------------------ deposits, quarantine, raw files


@router.get("/deposits", summary="Deposits of visible datasets")
def deposits(request: Request) -> dict[str, Any]:
    return {"data": jsonable(lake_for(request).deposits())}


@router.get("/deposits/{deposit_id}", summary="A deposit's record: report, manifest, files")
def deposit_record(request: Request, deposit_id: str) -> dict[str, Any]:
    rec = lake_for(request).record(deposit_id)
    if not lake_for(request).principal.sees_everything and rec.get("manifest"):
        lake = lake_for(request)
        from mliplake.access import may_manage

        if not may_manage(lake.policy(rec["dataset"]), lake.principal):
            rec = dict(rec, manifest={k: v for k, v in rec["manifest"].items() if k not in ("submitter", "owner")})
    return {"data": jsonable(rec)}


@router.get("/deposits/{deposit_id}/quarantine", summary="Frames a deposit could not store, with the reasons")
def quarantine(request: Request, deposit_id: str) -> dict[str, Any]:
    return {"data": rows(lake_for(request).quarantine(deposit_id))}


@router.get("/deposits/{deposit_id}/files", summary="The deposit's original files")
def raw_files(request: Request, deposit_id: str) -> dict[str, Any]:
    lake = lake_for(request)
    rec = lake.record(deposit_id)
    base = lake.raw_dir(rec["deposit_id"]) + "/files/"
    return {"data": [{"path": p[len(base):], "bytes": lake.fs.size(p)} for p in lake.raw_files(deposit_id)]}


@router.get("/deposits/{deposit_id}/files/{path:path}", summary="One original file, byte for byte")
def raw_file(request: Request, deposit_id: str, path: str) -> StreamingResponse:
    lake = lake_for(request)
    rec = lake.record(deposit_id)
    base = lake.raw_dir(rec["deposit_id"]) + "/files/"
    wanted = base + path
    if wanted not in lake.raw_files(deposit_id):  # only a listed file: no path escapes
        raise Problem(404, "Not found", f"deposit {rec['deposit_id']} has no file {path!r}")

    def chunks() -> Any:
        with lake.fs.open(wanted, "rb") as f:
            while b := f.read(1 << 20):
                yield b

    name = path.rsplit("/", 1)[-1].replace('"', "")
    return StreamingResponse(chunks(), media_type="application/octet-stream",
                             headers={"Content-Disposition": f'attachment; filename="{name}"',
                                      "Content-Length": str(lake.fs.size(wanted))})


# ------------------------------------------------------------------ changes by owners and curators


class VisibilityBody(BaseModel):
    visibility: str
    groups: list[str] | None = None
    embargo_until: str | None = None


@router.put("/datasets/{name}/visibility", summary="Change who may see a dataset (owner, curator, admin)")
def set_visibility(request: Request, name: str, body: VisibilityBody) -> dict[str, Any]:
    from mliplake.server.auth import require_write

    require_write(request)
    policy = lake_for(request).set_visibility(name, body.visibility, body.groups, body.embargo_until)
    return {"data": jsonable(policy.to_row() if hasattr(policy, "to_row") else policy)}


class RetractBody(BaseModel):
    reason: str = Field(..., min_length=3)
    purge: bool = False


@router.post("/deposits/{deposit_id}/retract", summary="Retract a deposit (owner, curator, admin)")
def retract_deposit(request: Request, deposit_id: str, body: RetractBody) -> dict[str, Any]:
    from mliplake.server.auth import require_write

    require_write(request)
    return {"data": {"retracted": lake_for(request).retract(deposit_id=deposit_id, reason=body.reason,
                                                           purge=body.purge)}}


@router.post("/datasets/{name}/retract", summary="Retract every deposit of a dataset")
def retract_dataset(request: Request, name: str, body: Annotated[RetractBody, Body()]) -> dict[str, Any]:
    from mliplake.server.auth import require_write

    require_write(request)
    return {"data": {"retracted": lake_for(request).retract(dataset=name, reason=body.reason, purge=body.purge)}}
