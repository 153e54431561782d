"""OPTIMADE v1.2 under ``/optimade``: every configuration the caller may see is a ``structures`` entry.

Served: ``/optimade/versions`` (unversioned only) and, under both ``/optimade`` and ``/optimade/v1``,
``/info``, ``/info/structures``, ``/links`` (one ``root`` link: this service), ``/structures`` and
``/structures/{id}``; another major version (``/optimade/v2/...``) is a 553.  Everything goes
through the caller's view of the lake (:func:`~mliplake.server.auth.lake_for`): a private dataset is
as invisible here as in the REST API.  Errors are OPTIMADE error documents (JSON:API).

Fields (OPTIMADE name -> the lake's):

- ``id`` -> ``<dataset>:<config_id>`` (``mlearn-si:3f0c...``): unique in the lake, stable, and safe
  in a URL path as it is (dataset names are letters, digits, ``_``, ``.`` and ``-``; ``config_id`` is
  hex), so ``/structures/{id}`` takes it pasted; the same frame in two datasets is two entries with
  two ids and one ``_mliplake_config_id``; ``last_modified`` -> the ``created_at`` of the frame's
  deposit;
- ``elements``, ``nelements``, ``elements_ratios``, ``nsites``, ``nperiodic_dimensions``,
  ``dimension_types``, ``chemical_formula_reduced``/``_hill``/``_anonymous`` -> the same columns;
  ``chemical_formula_descriptive`` -> ``chemical_formula_hill``;
- ``lattice_vectors`` -> ``cell`` (rows; an all-zero vector of an aperiodic direction is null),
  ``cartesian_site_positions`` -> ``positions``, ``species_at_sites`` / ``species`` -> ``numbers``
  (one species per element), ``structure_features`` -> ``[]``;
- ``_mliplake_<x>`` -> ``<x>``: ``config_id``, ``dataset``, ``deposit_id``, ``structure_hash``, ``source_file``,
  ``frame_index``, ``energy``, ``energy_per_atom``, ``max_force``, ``volume`` (queryable),
  ``forces``, ``stress``, ``virial`` (returned only); ``_mliplake_info.<key>`` and
  ``_mliplake_method.<key>`` -> ``info.<key>`` / ``method.<key>``.

Filters are the lake's own filter language (it is OPTIMADE's grammar): the text is translated
(names above), parsed by :func:`mliplake.filters.parse` and compiled by :func:`mliplake.filters.sql.where`.
A field of another provider (``_exmpl_x``) or a standard one the lake does not hold
(``immutable_id``) has an unknown value (a comparison matches nothing, ``IS UNKNOWN`` everything),
with a warning in ``meta.warnings``; any other name (``crazyfield``, and the lake's own names without
the prefix, ``energy``) is a 400; a filter on a field that is only returned (``lattice_vectors``,
``_mliplake_forces``) is a 501.  ``last_modified`` compares as its ISO-8601 text
(``"2026-01-31T12:00:00Z"``).  ``id = "<dataset>:<config_id>"`` runs as ``dataset = ... AND
config_id = ...`` (conditions the lake can prune files by); other operators on ``id`` compare the
joined text.

Paging: ordered by (dataset, config_id); ``links.next`` carries ``page_above`` (an opaque keyset cursor)
and needs no depth limit; ``page_offset`` / ``page_number`` and ``sort`` work too (offset paging).
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from mliplake.server.auth import lake_for
from mliplake.server.problems import Problem
from mliplake.server.routes.data import decode_cursor, encode_cursor, jsonable

log = logging.getLogger("mliplake.server")

API_VERSION = "1.2.0"
MEDIA_TYPE = "application/vnd.api+json"
SCHEMA_URL = "https://schemas.optimade.org/openapi/v1.2/optimade.json"
PREFIX = "mliplake"
PROVIDER = {"name": "mliplake", "prefix": PREFIX, "homepage": None,
            "description": "mliplake: a lakehouse of training data for machine-learnt interatomic potentials"}
DEFAULT_PAGE = 20
ORDER = "dataset, config_id"
ID_SEP = ":"  # in no dataset name and no config_id
ID_SQL = f"(dataset || '{ID_SEP}' || config_id)"


class OptimadeError(Exception):
    """An error to answer with an OPTIMADE error document."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


# ---------------------------------------------------------------- properties


Row = dict[str, Any]


@dataclass(frozen=True)
class Prop:
    """One attribute of a structures entry."""

    type: str  # OPTIMADE data type
    description: str
    columns: tuple[str, ...]  # view columns it is rendered from
    get: Callable[[Row], Any]
    unit: str | None = None
    sort: str | None = None  # SQL to sort on (None: not sortable)


def _symbols() -> list[str]:
    from ase.data import chemical_symbols

    return list(chemical_symbols)


SYMBOLS = _symbols()  # index = Z
LAST_MODIFIED_SQL = ("(SELECT left(max(d.created_at), 19) || 'Z' FROM deposits d "
                     "WHERE d.deposit_id = configurations.deposit_id)")


def _lattice(r: Row) -> list[list[float | None]] | None:
    cell, pbc = r.get("cell"), r.get("pbc")
    if not cell or len(cell) != 9:
        return None
    rows = [list(cell[i:i + 3]) for i in (0, 3, 6)]
    return [v if (pbc and pbc[i]) or any(x != 0 for x in v) else [None, None, None] for i, v in enumerate(rows)]


def _species_at_sites(r: Row) -> list[str] | None:
    return None if r.get("numbers") is None else [SYMBOLS[z] for z in r["numbers"]]


def _species(r: Row) -> list[dict[str, Any]] | None:
    if r.get("elements") is None:
        return None
    return [{"name": s, "chemical_symbols": [s], "concentration": [1.0]} for s in r["elements"]]


def _json_column(name: str) -> Callable[[Row], Any]:
    def get(r: Row) -> Any:
        v = r.get(name)
        return json.loads(v) if isinstance(v, str) else v
    return get


def _column(name: str) -> Callable[[Row], Any]:
    return lambda r: r.get(name)


def _std(type_: str, description: str, column: str, unit: str | None = None, sortable: bool = False) -> Prop:
    return Prop(type_, description, (column,), _column(column), unit, column if sortable else None)


PROPS: dict[str, Prop] = {
    "last_modified": Prop("timestamp", "When the configuration's deposit was stored", ("deposit_id",),
                          _column("_last_modified"), sort=LAST_MODIFIED_SQL),
    "elements": _std("list", "Chemical symbols of the elements present, in alphabetical order", "elements"),
    "nelements": _std("integer", "Number of different elements", "nelements", sortable=True),
    "elements_ratios": _std("list", "Fraction of the sites of each element of `elements`", "elements_ratios"),
    "chemical_formula_descriptive": Prop("string", "The Hill formula, not reduced", ("chemical_formula_hill",),
                                         _column("chemical_formula_hill"), sort="chemical_formula_hill"),
    "chemical_formula_reduced": _std("string", "Reduced formula, elements in alphabetical order",
                                     "chemical_formula_reduced", sortable=True),
    "chemical_formula_hill": _std("string", "Hill formula, not reduced", "chemical_formula_hill", sortable=True),
    "chemical_formula_anonymous": _std("string", "Anonymous formula (A, B, ... by decreasing proportion)",
                                       "chemical_formula_anonymous", sortable=True),
    "dimension_types": _std("list", "Periodicity along each lattice vector (1 periodic, 0 not)", "dimension_types"),
    "nperiodic_dimensions": _std("integer", "Number of periodic directions", "nperiodic_dimensions",
                                 sortable=True),
    "lattice_vectors": Prop("list", "The cell's three vectors, rows (null: an aperiodic direction without one)",
                            ("cell", "pbc"), _lattice, "Å"),
    "cartesian_site_positions": _std("list", "Cartesian positions of the sites", "positions", "Å"),
    "nsites": _std("integer", "Number of sites (atoms)", "nsites", sortable=True),
    "species": Prop("list", "One species per element, named by its symbol", ("elements",), _species),
    "species_at_sites": Prop("list", "The species of each site", ("numbers",), _species_at_sites),
    "structure_features": Prop("list", "Always empty: no disorder, implicit atoms, attachments or assemblies",
                               (), lambda r: []),
    "_mliplake_config_id": _std("string", "Content hash of the configuration (structure, labels and method): "
                                "the same frame has the same one in every dataset", "config_id", sortable=True),
    "_mliplake_dataset": _std("string", "The dataset holding the configuration", "dataset", sortable=True),
    "_mliplake_deposit_id": _std("string", "The deposit that stored it", "deposit_id", sortable=True),
    "_mliplake_structure_hash": _std("string", "Hash of the structure alone (positions, cell, species, pbc)",
                                     "structure_hash", sortable=True),
    "_mliplake_source_file": _std("string", "The deposited file it was read from", "source_file", sortable=True),
    "_mliplake_frame_index": _std("integer", "Its index in that file", "frame_index", sortable=True),
    "_mliplake_energy": _std("float", "Total energy", "energy", "eV", sortable=True),
    "_mliplake_energy_per_atom": _std("float", "Total energy per atom", "energy_per_atom", "eV", sortable=True),
    "_mliplake_forces": _std("list", "Force on each site (x, y, z)", "forces", "eV/Å"),
    "_mliplake_max_force": _std("float", "Largest force magnitude on a site", "max_force", "eV/Å", sortable=True),
    "_mliplake_stress": _std("list", "Stress tensor, 9 components row-major (positive: tensile)", "stress",
                             "eV/Å^3"),
    "_mliplake_virial": _std("list", "Virial tensor, 9 components row-major", "virial", "eV"),
    "_mliplake_volume": _std("float", "Cell volume", "volume", "Å^3", sortable=True),
    "_mliplake_info": Prop("dictionary", "Per-frame metadata (filter with _mliplake_info.<key>)", ("info",),
                           _json_column("info")),
    "_mliplake_method": Prop("dictionary", "How the labels were computed (filter with _mliplake_method.<key>)",
                             ("method",), _json_column("method")),
}
ID_SORT = ID_SQL
#: standard structures fields the lake does not hold: null in entries, unknown in filters
ABSENT = ("immutable_id", "space_group_symmetry_operations_xyz", "space_group_symbol_hall",
          "space_group_symbol_hermann_mauguin", "space_group_symbol_hermann_mauguin_extended",
          "space_group_it_number", "assemblies")


# ---------------------------------------------------------------- filters

#: OPTIMADE names -> the filter language's
FILTER_NAMES = {
    "id": "id", "elements": "elements", "nelements": "nelements", "elements_ratios": "elements_ratios",
    "nsites": "nsites", "nperiodic_dimensions": "nperiodic_dimensions", "dimension_types": "dimension_types",
    "chemical_formula_reduced": "chemical_formula_reduced", "chemical_formula_hill": "chemical_formula_hill",
    "chemical_formula_anonymous": "chemical_formula_anonymous",
    "chemical_formula_descriptive": "chemical_formula_hill",
    **{f"_{PREFIX}_{n}": n for n in ("config_id", "dataset", "deposit_id", "structure_hash", "source_file", "frame_index",
                                     "energy", "energy_per_atom", "max_force", "volume")},
}
_SYMBOL_LIST = "[" + ", ".join(f"'{s}'" for s in SYMBOLS[1:]) + "]"
#: fields with no column of their own: SQL wrapped as a one-key JSON object, so that the
#: compiler's JSON paths give them every operator with unknown-value semantics
VIRTUAL = {
    "last_modified": LAST_MODIFIED_SQL,
    "species_at_sites": f"list_transform(numbers, lambda z: {_SYMBOL_LIST}[z])",
    "structure_features": "json('[]')",
    "type": "'structures'",
}
NOT_QUERYABLE = {"lattice_vectors", "cartesian_site_positions", "species", f"_{PREFIX}_forces",
                 f"_{PREFIX}_stress", f"_{PREFIX}_virial", f"_{PREFIX}_info", f"_{PREFIX}_method"}
UNKNOWN_SQL = "CAST(NULL AS JSON)"
SENTINEL = "_mlkopt"  # info.<SENTINEL><n>: the n-th virtual or unknown field of a filter
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|(?<![\w.+])[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_+]*)*')
KEYWORDS = {"AND", "OR", "NOT", "IS", "KNOWN", "UNKNOWN", "CONTAINS", "STARTS", "ENDS", "WITH", "LENGTH", "HAS",
            "ALL", "ANY", "ONLY", "TRUE", "FALSE"}
_OTHER_PROVIDER = re.compile(r"^_[a-z0-9]+_")


@dataclass
class _Sub:
    start: int  # in the original text
    old: str
    new: str


@dataclass
class Translation:
    original: str
    text: str = ""
    subs: list[_Sub] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)  # SQL of each sentinel, by number
    warnings: list[str] = field(default_factory=list)
    refusals: list[OptimadeError] = field(default_factory=list)


def _rename(name: str, tr: Translation) -> str:
    head, _, rest = name.partition(".")
    if head in (f"_{PREFIX}_info", f"_{PREFIX}_method") and rest:
        if rest.startswith(SENTINEL):
            raise OptimadeError(400, "Bad Request", f"filter: keys starting with {SENTINEL} are reserved")
        return f"{head.removeprefix(f'_{PREFIX}_')}.{rest}"
    if head in ABSENT or (_OTHER_PROVIDER.match(head) and not head.startswith(f"_{PREFIX}_")):
        tr.warnings.append(f"{name} is not a field of this database: its value is unknown")
        return _sentinel(tr, UNKNOWN_SQL)
    if head in NOT_QUERYABLE:
        return _refuse(tr, 501, "Not Implemented", f"{head} is returned but cannot be filtered on")
    if rest and (head in FILTER_NAMES or head in VIRTUAL):
        return _refuse(tr, 400, "Bad Request", f"filter: {head} has no keys: {name}")
    if head in FILTER_NAMES:
        return FILTER_NAMES[head]
    if head in VIRTUAL:
        return _sentinel(tr, f"json_object('v', {VIRTUAL[head]})")
    return _refuse(tr, 400, "Bad Request", f"filter: unknown field '{name}'; fields: "
                   f"{', '.join(sorted([*FILTER_NAMES, *VIRTUAL]))}, _{PREFIX}_info.<key>, _{PREFIX}_method.<key>")


def _refuse(tr: Translation, status: int, title: str, detail: str) -> str:
    """A name the filter cannot have: refused once the text has parsed (syntax errors come first)."""
    tr.refusals.append(OptimadeError(status, title, detail))
    return _sentinel(tr, UNKNOWN_SQL)


def _sentinel(tr: Translation, sql: str) -> str:
    tr.roots.append(sql)
    return f"info.{SENTINEL}{len(tr.roots) - 1}"


def translate(text: str) -> Translation:
    """The filter in the lake's names (see the module docstring); names it cannot have are
    recorded as refusals, raised once the translated text has parsed."""
    tr = Translation(text, text)
    out, pos = [], 0
    for m in _TOKEN.finditer(text):
        token = m.group()
        head = token.partition(".")[0]
        if token.startswith('"') or head != head.lower() or head.upper() in KEYWORDS:
            continue  # a string, a keyword (in the wrong case too: the parser says so), no name
        new = _rename(token, tr)
        if new != token:
            out += [text[pos:m.start()], new]
            pos = m.end()
            tr.subs.append(_Sub(m.start(), token, new))
    tr.text = "".join(out) + text[pos:]
    return tr


def split_id(entry_id: str) -> tuple[str, str] | None:
    """``<dataset>:<config_id>`` -> (dataset, config_id); None for anything else."""
    from mliplake.core.manifest import DATASET_NAME

    dataset, sep, config_id = entry_id.partition(ID_SEP)
    if not sep or not DATASET_NAME.match(dataset) or not re.fullmatch(r"[0-9a-f]+", config_id):
        return None
    return dataset, config_id


def _id_node(node: Any) -> Any:
    """A condition on ``id`` over the id's two columns: ``=`` and ``!=`` on (dataset, config_id),
    which the lake prunes files by; anything else on the joined text."""
    from mliplake.filters import FIELDS, And, Compare, Field, FieldSpec, Not

    f = node.field
    if isinstance(node, Compare) and node.op in ("=", "!=") and isinstance(node.value, str):
        parts = split_id(node.value)
        if parts is not None:
            same = And((Compare(Field(FIELDS["dataset"], pos=f.pos), "=", parts[0]),
                        Compare(Field(FIELDS["config_id"], pos=f.pos), "=", parts[1])))
            return same if node.op == "=" else Not(same)
    return replace(node, field=Field(FieldSpec("id", "string", ID_SQL), pos=f.pos))


def _swap_fields(node: Any, roots: list[str]) -> Any:
    """The parsed tree with each sentinel key replaced by its SQL root, and ``id`` by the entry id."""
    from mliplake.filters import And, Field, Not, Or

    if isinstance(node, (And, Or)):
        return type(node)(tuple(_swap_fields(i, roots) for i in node.items))
    if isinstance(node, Not):
        return Not(_swap_fields(node.item, roots))
    f = getattr(node, "field", None)
    if isinstance(f, Field) and f.spec is None and f.root == "info" and f.path and f.path[0].startswith(SENTINEL):
        return replace(node, field=Field(None, roots[int(f.path[0][len(SENTINEL):])], ("v",), f.pos))
    if isinstance(f, Field) and f.spec is not None and f.spec.name == "id":
        return _id_node(node)
    return node


def _original_message(message: str, tr: Translation) -> str:
    """A parse error about the translated text, told about the text the caller wrote."""
    first, *rest = message.split("\n")
    for s in tr.subs:
        first = re.sub(rf"(?<![\w.]){re.escape(s.new)}(?![\w.])", s.old, first)
    if len(rest) != 2 or "^" not in rest[1]:
        return first
    col = _original_column(rest[1].index("^") - 1, tr)  # the caret line is indented by two spaces
    first = re.sub(r"at column \d+", f"at column {col}", first)
    return f"{first}\n  {tr.original}\n  {' ' * (col - 1)}^"


def _original_column(col: int, tr: Translation) -> int:
    p, shift = col - 1, 0
    for s in tr.subs:
        new_start = s.start + shift
        if p < new_start:
            break
        if p < new_start + len(s.new):
            return s.start + 1
        shift += len(s.new) - len(s.old)
    return p - shift + 1


@dataclass(frozen=True)
class Compiled:
    clause: str
    params: list[Any]
    warnings: list[str]


def compile_filter(text: str | None) -> Compiled:
    from mliplake import filters
    from mliplake.filters.sql import where

    if text is None or not text.strip():
        return Compiled("TRUE", [], [])
    tr = translate(text)
    try:
        node = filters.parse(tr.text)
    except filters.FilterError as e:
        raise OptimadeError(400, "Bad Request", _original_message(str(e), tr) if tr.subs else str(e)) from None
    if tr.refusals:
        raise tr.refusals[0]
    try:
        node = _swap_fields(node, tr.roots)
    except RecursionError:
        raise OptimadeError(400, "Bad Request", "filter: nested too deeply") from None
    clause, params = where(node)
    return Compiled(clause, params, tr.warnings)


# ---------------------------------------------------------------- responses


def base_url(request: Request) -> str:
    """The unversioned base URL, as the caller reached it."""
    return str(request.base_url).rstrip("/") + "/optimade"


def _representation(request: Request) -> str:
    path = request.url.path
    rest = re.sub(r"^.*?/optimade(/v1)?", "", path, count=1)
    return rest + (f"?{request.url.query}" if request.url.query else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def meta(request: Request, more: bool = False, returned: int | None = None, available: int | None = None,
         warnings: Iterable[str] = ()) -> dict[str, Any]:
    from mliplake import __version__

    out: dict[str, Any] = {
        "query": {"representation": _representation(request)}, "api_version": API_VERSION,
        "more_data_available": more, "schema": SCHEMA_URL, "time_stamp": _now(), "provider": PROVIDER,
        "implementation": {"name": "mliplake", "version": __version__},
    }
    if returned is not None:
        out["data_returned"] = returned
    if available is not None:
        out["data_available"] = available
    if warnings:
        out["warnings"] = [{"type": "warning", "title": "Warning", "detail": w} for w in dict.fromkeys(warnings)]
    return out


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat") or isinstance(value, bytes):
        return jsonable(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def render(body: dict[str, Any]) -> bytes:
    """``body`` as JSON, NaN and infinities as null: one pass of the encoder, unless a value is not finite
    (rare: then the document is cleaned first)."""
    try:
        text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_plain)
    except ValueError:
        text = json.dumps(jsonable(body), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode()


def document(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(render(body), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def error_document(request: Request, status: int, title: str, detail: str,
                   headers: dict[str, str] | None = None) -> Response:
    body = {"errors": [{"status": str(status), "title": title, "detail": detail}], "meta": meta(request)}
    return document(body, status, headers)


def _error_for(request: Request, exc: Exception) -> Response:
    from http import HTTPStatus

    from mliplake.filters import FilterError

    if isinstance(exc, OptimadeError):
        return error_document(request, exc.status, exc.title, exc.detail)
    if isinstance(exc, FilterError):
        return error_document(request, 400, "Bad Request", str(exc))
    if isinstance(exc, Problem):
        return error_document(request, exc.status, exc.title, exc.detail, exc.headers)
    if isinstance(exc, RequestValidationError):
        detail = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors())
        return error_document(request, 400, "Bad Request", detail)
    if isinstance(exc, StarletteHTTPException):
        title = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "Error"
        return error_document(request, exc.status_code, title, str(exc.detail), getattr(exc, "headers", None))
    log.error("OPTIMADE request failed: %s", request.url.path, exc_info=exc)
    return error_document(request, 500, "Internal Server Error", "the server failed on this request")


class OptimadeRoute(APIRoute):
    """A route whose every error (bad parameters, filters, tokens, failures) is an OPTIMADE error document."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - every error becomes an error document
                return _error_for(request, exc)

        return guarded


# ---------------------------------------------------------------- entries


def _columns_for(fields: Iterable[str]) -> list[str]:
    cols = dict.fromkeys(["dataset", "config_id", "deposit_id"])
    for f in fields:
        if f in PROPS:
            cols.update(dict.fromkeys(PROPS[f].columns))
    return list(cols)


def entry(row: Row, fields: Iterable[str]) -> dict[str, Any]:
    attributes = {f: (PROPS[f].get(row) if f in PROPS else None) for f in fields}
    return {"id": f"{row['dataset']}{ID_SEP}{row['config_id']}", "type": "structures", "attributes": attributes}


def response_fields(text: str | None) -> tuple[list[str], list[str]]:
    """(the attributes to return, warnings): all by default; standard ones the lake lacks are null."""
    if text is None:
        return list(PROPS), []
    wanted = [f.strip() for f in text.split(",") if f.strip()]
    fields = [f for f in wanted if f in PROPS or f in ABSENT]
    skipped = [f for f in wanted if f not in fields and f not in ("id", "type")]
    return list(dict.fromkeys(fields)), [f"response_fields: {f} is not a field of this database" for f in skipped]


def _select(fields: list[str]) -> str:
    cols = ", ".join(_columns_for(fields))
    return cols + (f", {LAST_MODIFIED_SQL} AS _last_modified" if "last_modified" in fields else "")


def order_by(sort: str | None) -> str:
    if not sort:
        return ORDER
    parts = []
    for name in (s.strip() for s in sort.split(",")):
        desc = name.startswith("-")
        name = name.lstrip("-")
        sql = ID_SORT if name == "id" else PROPS[name].sort if name in PROPS else None
        if not sql:
            sortable = ", ".join(["id", *(n for n, p in PROPS.items() if p.sort)])
            raise OptimadeError(400, "Bad Request", f"sort: {name or '(empty)'} is not sortable; sortable: {sortable}")
        parts.append(f"{sql} {'DESC' if desc else 'ASC'} NULLS LAST")
    return ", ".join([*parts, ORDER])


@dataclass(frozen=True)
class Paging:
    limit: int
    offset: int = 0
    after: tuple[str, str] | None = None
    keyset: bool = True


def paging(request: Request, limit: int | None, offset: int | None, number: int | None, above: str | None,
           sort: str | None) -> Paging:
    top = request.app.state.settings.api_page_max
    limit = DEFAULT_PAGE if limit is None else limit
    if limit > top:
        raise OptimadeError(403, "Forbidden", f"page_limit {limit} is above this server's maximum of {top}")
    if above is not None:
        if sort or offset or number:
            raise OptimadeError(400, "Bad Request", "page_above comes from links.next: use it without sort, "
                                                    "page_offset or page_number")
        return Paging(limit, after=decode_cursor(above))
    if number is not None:
        offset = (offset or 0) + (number - 1) * limit
    keyset = not sort and not offset
    return Paging(limit, offset or 0, keyset=keyset)


def _next_link(request: Request, page: Paging, rows: list[Row]) -> str:
    url = request.url.remove_query_params(["page_offset", "page_number", "page_above", "page_cursor"])
    if page.keyset:
        last = rows[-1]
        return str(url.include_query_params(page_above=encode_cursor((last["dataset"], last["config_id"]))))
    return str(url.include_query_params(page_offset=page.offset + len(rows)))


def list_structures(request: Request, filter: str | None, fields_text: str | None, sort: str | None,
                    page: Paging) -> dict[str, Any]:
    from mliplake.query.engine import time_limit

    compiled = compile_filter(filter)
    fields, field_warnings = response_fields(fields_text)
    order = order_by(sort)
    lake = lake_for(request)
    con = lake.connection()
    clause, params = compiled.clause, list(compiled.params)
    if page.after is not None:
        clause = f"({clause}) AND (dataset > ? OR (dataset = ? AND config_id > ?))"
        params += [page.after[0], page.after[0], page.after[1]]
    counts = (f"SELECT count(*) FILTER (WHERE {compiled.clause}) AS _returned, count(*) AS _available "
              "FROM configurations")
    with time_limit(lake, con):
        # one query: the page, its entries' last_modified and the counts (each query pays the lake's
        # fixed cost of opening its snapshot once)
        rows = con.execute(f"WITH _n AS ({counts}) SELECT {_select(fields)}, _n._returned, _n._available "
                           f"FROM configurations, _n WHERE {clause} ORDER BY {order} "
                           f"LIMIT {page.limit + 1} OFFSET {page.offset}",
                           [*compiled.params, *params]).to_arrow_table().to_pylist()
        if rows:
            returned, available = rows[0]["_returned"], rows[0]["_available"]
        else:  # past the last entry (or none): the counts alone
            returned, available = con.execute(counts, compiled.params).fetchone()
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    return {"data": [entry(r, fields) for r in rows],
            "meta": meta(request, more, returned, available, [*compiled.warnings, *field_warnings]),
            "links": {"next": _next_link(request, page, rows) if more and rows else None,
                      "base_url": base_url(request)}}


def one_structure(request: Request, entry_id: str, fields_text: str | None) -> dict[str, Any]:
    fields, warnings = response_fields(fields_text)
    parts = split_id(entry_id)
    if parts is None:
        raise OptimadeError(404, "Not Found", f"no structure with id {entry_id!r}: ids are <dataset>:<config_id> "
                                              f"(find a config_id with _{PREFIX}_config_id = \"...\")")
    con = lake_for(request).connection()
    rows = con.execute(f"SELECT {_select(fields)} FROM configurations WHERE dataset = ? AND config_id = ? "
                       "LIMIT 1", list(parts)).to_arrow_table().to_pylist()
    if not rows:
        raise OptimadeError(404, "Not Found", f"no structure with id {entry_id!r}")
    return {"data": entry(rows[0], fields), "meta": meta(request, False, 1, None, warnings),
            "links": {"base_url": base_url(request)}}


# ---------------------------------------------------------------- info and links


def info(request: Request) -> dict[str, Any]:
    return {"data": {
        "id": "/", "type": "info",
        "attributes": {
            "api_version": API_VERSION,
            "available_api_versions": [{"url": f"{base_url(request)}/v1/", "version": API_VERSION}],
            "formats": ["json"], "entry_types_by_format": {"json": ["structures"]},
            "available_endpoints": ["info", "links", "structures"], "is_index": False,
        }}, "meta": meta(request)}


def structures_info(request: Request) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "id": {"description": "The entry's id, <dataset>:<config_id>: unique in this database (the same frame "
                             "in two datasets is two entries; _mliplake_config_id is the same for both)",
               "type": "string", "sortable": True},
        "type": {"description": "Always 'structures'", "type": "string", "sortable": False},
    }
    for name, p in PROPS.items():
        properties[name] = {"description": p.description, "type": p.type, "sortable": p.sort is not None}
        if p.unit:
            properties[name]["unit"] = p.unit
    return {"data": {"id": "structures", "type": "info",
                     "description": "A labelled atomic configuration of the lake (one frame of training data)",
                     "properties": properties, "formats": ["json"],
                     "output_fields_by_format": {"json": list(properties)}},
            "meta": meta(request)}


def links(request: Request) -> dict[str, Any]:
    return {"data": [{
        "id": PREFIX, "type": "links",
        "attributes": {"name": "mliplake", "description": PROVIDER["description"], "base_url": base_url(request),
                       "homepage": None, "link_type": "root", "aggregate": "ok"},
    }], "meta": meta(request, False, 1, 1)}


def versions() -> PlainTextResponse:
    return PlainTextResponse("version\n1\n", media_type="text/csv; header=present")


# ---------------------------------------------------------------- routes


Limit = Annotated[int | None, Query(ge=1)]
Offset = Annotated[int | None, Query(ge=0)]
Number = Annotated[int | None, Query(ge=1)]


def _check_format(response_format: str | None) -> None:
    if response_format not in (None, "json"):
        raise OptimadeError(400, "Bad Request", f"response_format {response_format!r}: only json")


def _structures_route(request: Request, filter: str | None = None, response_fields: str | None = None,
                      sort: str | None = None, page_limit: Limit = None, page_offset: Offset = None,
                      page_number: Number = None, page_above: str | None = None,
                      response_format: str | None = None) -> Response:
    _check_format(response_format)
    page = paging(request, page_limit, page_offset, page_number, page_above, sort)
    return document(list_structures(request, filter, response_fields, sort, page))


def _structure_route(request: Request, entry_id: str, response_fields: str | None = None,
                     response_format: str | None = None) -> Response:
    _check_format(response_format)
    return document(one_structure(request, entry_id, response_fields))


def _info_route(request: Request) -> Response:
    return document(info(request))


def _structures_info_route(request: Request) -> Response:
    return document(structures_info(request))


def _links_route(request: Request) -> Response:
    return document(links(request))


def _elsewhere(request: Request, rest: str) -> Response:
    bare = rest.rstrip("/")
    if bare != rest and re.fullmatch(r"(v1/)?(info(/structures)?|links|structures(/[^/]+)?)|versions", bare):
        return RedirectResponse(str(request.url.replace(path=request.url.path.rstrip("/"))), status_code=307)
    if re.match(r"v\d+(\.\d+)*(/|$)", rest) and not re.match(r"v1(\.2(\.0)?)?(/|$)", rest):
        return error_document(request, 553, "Version Not Supported",
                              f"this server serves OPTIMADE {API_VERSION} under /optimade/v1")
    return error_document(request, 404, "Not Found", f"no OPTIMADE endpoint /optimade/{rest}")


ENDPOINTS: list[tuple[str, Callable[..., Any], str]] = [
    ("/info", _info_route, "OPTIMADE: this implementation"),
    ("/info/structures", _structures_info_route, "OPTIMADE: the fields of structures"),
    ("/links", _links_route, "OPTIMADE: links (the root of this service)"),
    ("/structures", _structures_route, "OPTIMADE: structures matching a filter, a page at a time"),
    ("/structures/{entry_id}", _structure_route, "OPTIMADE: one structure"),
]


def make_router() -> APIRouter:
    router = APIRouter(prefix="/optimade", tags=["optimade"], route_class=OptimadeRoute)
    router.add_api_route("/versions", versions, methods=["GET"], summary="OPTIMADE: major versions served",
                         response_class=PlainTextResponse, response_model=None)
    for base in ("/v1", ""):  # versioned and unversioned base URLs serve the same
        for path, fn, summary in ENDPOINTS:
            router.add_api_route(base + path, fn, methods=["GET"], summary=summary, include_in_schema=bool(base),
                                 response_class=JSONResponse, response_model=None, name=f"optimade{base.replace('/', '_')}{fn.__name__}")
    router.add_api_route("/{rest:path}", _elsewhere, methods=["GET"], include_in_schema=False)
    return router


def install(app: FastAPI) -> None:
    """Serve OPTIMADE under /optimade."""
    app.include_router(make_router())
