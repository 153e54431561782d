"""DuckDB over the lake: request-scoped sessions, views, filters, untrusted SQL, key discovery.

Every query runs on a cursor of its own (:func:`session`), whose unqualified names are views
over the DuckLake tables restricted to what the lake's principal may see (access.py).  The views
of one scope are built once per process (a schema per scope); other layers add theirs through
:func:`register_view`.  DuckLake gives each query one snapshot, so readers never see a deposit
half-committed, and no file they may read is deleted under them.  S3 is read by DuckDB's httpfs.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import pyarrow as pa

from mliplake import filters
from mliplake.core.schema import CONFIGURATIONS, LABELS
from mliplake.core.sql import quote
from mliplake.filters.sql import literal, where

if TYPE_CHECKING:
    from mliplake.access import Scope
    from mliplake.lake import Lake

DEFAULT_COLUMNS = ["id", "dataset", "chemical_formula_reduced", "nsites", "energy_per_atom", "max_force"]
DERIVED = {  # column -> (unit, how)
    "nsites": ("", "number of atoms"),
    "nelements": ("", "number of elements"),
    "volume": ("Å³", "|det(cell)|, 3D-periodic only"),
    "energy_per_atom": ("eV", "energy / nsites"),
    "max_force": ("eV/Å", "largest per-atom force norm"),
    "chemical_formula_reduced": ("", "OPTIMADE"),
    "elements": ("", "OPTIMADE"),
}


class SQLError(ValueError):
    """SQL that may not run, or that failed, with DuckDB's message."""


# ---------------------------------------------------------------- views

#: Views that other layers add (catalogue, models, ...): name -> builder(lake, scope, schema) -> SQL or None.
#: Each layer registers its own, so this module never needs to know their tables.
VIEW_BUILDERS: dict[str, Callable[[Lake, Scope, str], str | None]] = {}


def register_view(name: str, builder: Callable[[Lake, Scope, str], str | None]) -> None:
    VIEW_BUILDERS[name] = builder


def configurations_select(pred: str, version: int | None = None) -> str:
    """The configurations view's query: rows of visible datasets (``pred``), at a version if given."""
    at = f" AT (VERSION => {int(version)})" if version is not None else ""
    return (f"SELECT *, config_id AS id, [CAST(pbc[1] AS INTEGER), CAST(pbc[2] AS INTEGER), "
            f"CAST(pbc[3] AS INTEGER)] AS dimension_types FROM lake.configurations{at} WHERE {pred}")


def _core_views(scope: Scope, schema: str) -> list[str]:
    pred = scope.sql_predicate()
    private = scope.principal.sees_everything
    submitter = "submitter" if private else "NULL::VARCHAR AS submitter"
    return [
        f"CREATE VIEW {schema}.configurations AS {configurations_select(pred)}",
        f"CREATE VIEW {schema}.quarantine AS SELECT * FROM lake.quarantine WHERE {pred}",
        f"""CREATE VIEW {schema}.deposits AS
            SELECT deposit_id, dataset,
                   CASE WHEN retracted_at IS NOT NULL THEN 'retracted' ELSE status END AS status,
                   created_at, {submitter}, frames_read, stored, duplicates, relabelled, quarantined, atoms,
                   elements, labels, title, license, method,
                   json_array_length(json_extract(record, '$.files')) AS files,
                   json_extract(record, '$.key_mapping') AS key_mapping,
                   retracted_at, retraction_reason
            FROM lake.deposits WHERE {pred}""",
        DATASETS_VIEW.format(schema=schema, pred=pred),
        keys_view_sql(schema),
    ]


DATASETS_VIEW = """
CREATE VIEW {schema}.datasets AS
WITH d AS (SELECT * FROM {schema}.deposits WHERE status NOT IN ('rejected', 'retracted'))
SELECT d.dataset,
       any_value(d.title ORDER BY d.created_at DESC) AS title,
       any_value(d.license ORDER BY d.created_at DESC) AS license,
       any_value(d.method ORDER BY d.created_at DESC) AS method,
       count(*) AS deposits, sum(d.stored)::BIGINT AS configurations, sum(d.atoms)::BIGINT AS atoms,
       sum(d.quarantined)::BIGINT AS quarantined, sum(d.duplicates)::BIGINT AS duplicates,
       list_sort(list_distinct(flatten(list(d.elements)))) AS elements,
       list_sort(list_distinct(flatten(list(d.labels)))) AS labels,
       coalesce(any_value(p.visibility), 'public') AS visibility,
       any_value(p.embargo_until) AS embargo_until,
       any_value(p.owner) AS owner
FROM d LEFT JOIN lake.policies p USING (dataset)
WHERE {pred}
GROUP BY d.dataset
"""


def _schema_for(lake: Lake, scope: Scope) -> str:
    """The schema holding this scope's views, created once per process, scope and set of views."""
    hit = _SCHEMA_OF.get(id(scope))
    if hit is not None and hit[0] is scope and hit[1] in lake.tables.view_schemas:
        return hit[1]  # the same scope object: the same snapshot, principal and day
    name = _make_schema(lake, scope)
    if len(_SCHEMA_OF) > 1000:
        _SCHEMA_OF.clear()
    _SCHEMA_OF[id(scope)] = (scope, name)
    return name


_SCHEMA_OF: dict[int, tuple[Scope, str]] = {}


def _make_schema(lake: Lake, scope: Scope) -> str:
    import hashlib

    extras = {view: builder(lake, scope, "{schema}") for view, builder in VIEW_BUILDERS.items()}
    extras = {k: v for k, v in extras.items() if v}
    key = repr((scope.key(), scope.principal.sees_everything, sorted(extras.items())))
    name = "v_" + hashlib.sha256(key.encode()).hexdigest()[:16]
    made = lake.tables.view_schemas
    if name in made:
        return name
    with _VIEW_LOCK:
        if name not in made:
            cur = lake.tables.cursor()
            try:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS memory.{name}")
                cur.execute(f"USE memory.{name}")
                for stmt in _core_views(scope, name):
                    cur.execute(stmt)
                for view, body in extras.items():
                    cur.execute(f"CREATE VIEW {name}.{view} AS {body.replace('{schema}', name)}")
            finally:
                cur.close()
            made.add(name)
    return name


_VIEW_LOCK = threading.Lock()


def visible_relation(lake: Lake, datasets: list[str]) -> str:
    """A table (in the process's in-memory catalog, made once per set of names) of the datasets a
    scope may see, for its predicates to semi-join on."""
    import hashlib

    name = "memory.main._visible_" + hashlib.sha256("\0".join(datasets).encode()).hexdigest()[:16]
    made = lake.tables.view_schemas
    if name not in made:
        with _VIEW_LOCK:
            if name not in made:
                cur = lake.tables.cursor()
                try:
                    cur.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT unnest(?::VARCHAR[]) AS dataset",
                                [datasets])
                finally:
                    cur.close()
                made.add(name)
    return name


def session(lake: Lake) -> duckdb.DuckDBPyConnection:
    """A cursor of its own (per request, per thread) whose unqualified names are the principal's views."""
    lake.load_views()
    schema = _schema_for(lake, lake.scope())
    cur = lake.tables.cursor()
    cur.execute(f"USE memory.{schema}")
    return cur


def configurations(lake: Lake, dataset: str | None = None, columns: list[str] | None = None) -> pa.Table:
    cols = ", ".join(_ident(c) for c in columns) if columns else ", ".join(_ident(f.name) for f in CONFIGURATIONS)
    cur = session(lake)
    where_ds, params = ("dataset = ?", [dataset]) if dataset else ("TRUE", [])
    table = cur.execute(f"SELECT {cols} FROM configurations WHERE {where_ds} ORDER BY {LAKE_ORDER}",
                        params).to_arrow_table()
    return table.cast(CONFIGURATIONS) if not columns else table


LABEL_DTYPES = {"energy": "float64", "forces": "float64[n,3]", "stress": "float64[3,3]", "virial": "float64[3,3]",
                "charges": "float64[n]", "magmoms": "float64[n]", "dipole": "float64[3]"}
_JSON_DTYPE = ("CASE t WHEN 'varchar' THEN 'string' WHEN 'double' THEN 'number' WHEN 'ubigint' THEN 'integer' "
               "WHEN 'bigint' THEN 'integer' WHEN 'boolean' THEN 'boolean' WHEN 'array' THEN 'list' "
               "WHEN 'object' THEN 'object' WHEN 'null' THEN 'null' ELSE t END")


def keys_view_sql(schema: str) -> str:
    """Every key: labels and derived columns by name, user keys from the JSON columns, inside DuckDB."""
    return f"CREATE VIEW {schema}.keys AS {_keys_sum('TRUE', '(' + _keys_by_dataset_sql(f'{schema}.configurations') + ')')}"


def _keys_by_dataset_sql(source: str) -> str:
    """The numbers of every key per dataset (and JSON type) over the rows of ``source``."""
    parts = []
    for name, (_, unit) in LABELS.items():
        parts.append(f"SELECT '{name}' AS key, 'label' AS category, '{LABEL_DTYPES[name]}' AS dtype, '{unit}' AS unit, "
                     f"dataset, count({name}) AS configurations FROM {source} GROUP BY dataset")
    for name, (unit, _) in DERIVED.items():
        dtype = "string" if "formula" in name else ("list" if name == "elements" else "number")
        parts.append(f"SELECT '{name}', 'derived', '{dtype}', '{unit}', dataset, count({name}) FROM {source} GROUP BY dataset")
    for col in ("info", "arrays"):
        # per-atom keys: the type of their entries; info keys: the type of the value
        kind = "lower(json_type(j.value, '$[0]'))" if col == "arrays" else "lower(j.type)"
        parts.append(f"SELECT key, '{col}', {_JSON_DTYPE}, '', dataset, count(*) "
                     f"FROM (SELECT j.key AS key, {kind} AS t, c.dataset AS dataset "
                     f"FROM {source} c, json_each(c.{col}) j) GROUP BY key, t, dataset")
    return " UNION ALL ".join(parts)


def _keys_sum(pred: str, by_dataset: str) -> str:
    """Per-dataset key numbers summed over the datasets ``pred`` keeps: the ``keys`` view's rows."""
    return (f"SELECT key, category, string_agg(DISTINCT dtype, '|') AS dtype, any_value(unit) AS unit, "
            f"sum(configurations)::BIGINT AS configurations, list_sort(list(DISTINCT dataset)) AS datasets "
            f"FROM {by_dataset} WHERE configurations > 0 AND {pred} GROUP BY key, category")


T = TypeVar("T")
_ANSWERS: weakref.WeakKeyDictionary[Any, OrderedDict[Any, Any]] = weakref.WeakKeyDictionary()
_ANSWERS_LOCK = threading.Lock()
ANSWERS_KEPT = 256


def per_snapshot(lake: Lake, question: Any, compute: Callable[[], T]) -> T:
    """``compute()``'s answer to ``question``, kept for the lake's current snapshot and the caller's
    scope (the most recent :data:`ANSWERS_KEPT` answers of the process)."""
    scope = lake.scope()
    key = (lake.tables.snapshot(), scope.key(), scope.principal.sees_everything, question)
    with _ANSWERS_LOCK:
        kept = _ANSWERS.setdefault(lake.tables, OrderedDict())
        if key in kept:
            kept.move_to_end(key)
            return kept[key]
    answer = compute()
    with _ANSWERS_LOCK:
        kept[key] = answer
        while len(kept) > ANSWERS_KEPT:
            kept.popitem(last=False)
    return answer


_KEYS: weakref.WeakKeyDictionary[Any, tuple[int, pa.Table]] = weakref.WeakKeyDictionary()
_KEYS_LOCK = threading.Lock()


def keys(lake: Lake, dataset: str | None = None) -> pa.Table:
    """What the ``keys`` view gives, from per-dataset numbers computed once per lake snapshot and
    process (a scan of every row); each scope then sums the rows of the datasets it may see."""
    from mliplake.access import LOCAL_OWNER

    snap = lake.tables.snapshot()
    with _KEYS_LOCK:  # one scan per snapshot, however many requests arrive meanwhile
        hit = _KEYS.get(lake.tables)
        if hit is None or hit[0] != snap:
            owner = lake.as_principal(LOCAL_OWNER)
            snap = lake.tables.snapshot()
            hit = (snap, owner.connection().sql(_keys_by_dataset_sql("configurations")).to_arrow_table())
            _KEYS[lake.tables] = hit
    con = lake.connection()
    con.register("_keys_by_dataset", hit[1])
    try:
        pred, params = lake.scope().sql_predicate(), []
        if dataset is not None:
            pred, params = f"{pred} AND dataset = ?", [dataset]
        return con.execute(_keys_sum(pred, "_keys_by_dataset") + " ORDER BY category, key", params).to_arrow_table()
    finally:
        con.unregister("_keys_by_dataset")


# ---------------------------------------------------------------- filters


LAKE_ORDER = "dataset, source_file, frame_index, config_id"  # the lake's order; config_id breaks ties
TWO_STEP_MAX = 10_000  # up to this limit, a search finds its rows by the sort keys first


@contextmanager
def time_limit(lake: Lake, con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """A filter query stops at ``settings.filter_timeout`` (DuckDB interrupts its own work)."""
    limit = lake.settings.filter_timeout
    timer = threading.Timer(limit, con.interrupt)
    timer.start()
    try:
        yield
    except duckdb.InterruptException:
        raise filters.FilterError(f"filter: stopped after {limit:g} s (time limit); narrow the filter") from None
    finally:
        timer.cancel()


def search(lake: Lake, filter: str | None, columns: list[str] | None = None, limit: int | None = None,
           order: str | None = None) -> pa.Table:
    node = filters.parse(filter)
    con = lake.connection()
    with time_limit(lake, con):
        return _search(con, node, columns, limit, order)


def _search(con: duckdb.DuckDBPyConnection, node: Any, columns: list[str] | None, limit: int | None,
            order: str | None) -> pa.Table:
    clause, params = where(node)
    cols = columns or DEFAULT_COLUMNS
    empty = con.sql("SELECT * FROM configurations LIMIT 0")
    known = dict(zip(empty.columns, map(str, empty.types)))
    bad = [c for c in [*cols, *([order] if order else [])] if c not in known]
    if bad:
        raise filters.FilterError(f"unknown column(s) {', '.join(bad)}; columns: {', '.join(sorted(known))}")
    select = ", ".join(_ident(c) for c in cols)
    # narrow columns only (no lists, no JSON): reading them for every match costs less than a
    # second pass over the files
    narrow = all(_narrow(known[c]) for c in cols)
    if order or limit is None or limit > TWO_STEP_MAX or narrow:
        sql = f"SELECT {select} FROM configurations WHERE {clause} ORDER BY {_ident(order) if order else LAKE_ORDER}"
        sql += f" LIMIT {int(limit)}" if limit is not None else ""
        return con.sql(sql, params=params).to_arrow_table()
    # Two steps: the first rows by the sort keys alone (the filter's columns and four small ones),
    # then the asked-for columns of just those rows; the deposit and frame range of the second
    # step let the scan skip every other shard and row group by its statistics.
    keys = con.sql(f"SELECT deposit_id, frame_index, config_id FROM configurations WHERE {clause} "
                   f"ORDER BY {LAKE_ORDER} LIMIT {int(limit)}", params=params).fetchall()
    if not keys:
        return con.sql(f"SELECT {select} FROM configurations LIMIT 0").to_arrow_table()
    deposits = sorted({k[0] for k in keys})
    frames = [k[1] for k in keys if k[1] is not None]
    in_range = f" AND frame_index BETWEEN {min(frames)} AND {max(frames)}" if len(frames) == len(keys) else ""
    # literals, not parameters (see filters.sql.literal): the lake's own ids, read just above
    ids = "[" + ", ".join(literal(k[2]) for k in keys) + "]"
    sql = (f"SELECT {select} FROM configurations WHERE deposit_id IN ({', '.join(map(literal, deposits))}){in_range} "
           f"AND config_id IN (SELECT unnest({ids}::VARCHAR[])) ORDER BY {LAKE_ORDER}")
    return con.sql(sql).to_arrow_table()


def _narrow(sql_type: str) -> bool:
    return not any(w in sql_type for w in ("[]", "STRUCT", "MAP", "JSON", "BLOB"))




def count(lake: Lake, filter: str | None) -> int:
    clause, params = where(filters.parse(filter))
    con = lake.connection()
    with time_limit(lake, con):
        return con.execute(f"SELECT count(*) FROM configurations WHERE {clause}", params).fetchall()[0][0]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------- untrusted SQL

def sandbox_views(lake: Lake) -> tuple[list[str], set[str]]:
    """What an untrusted query's worker runs first (the lake, read-only, and the principal's views
    in its own ``main``), and the names the query may use."""
    lake.load_views()
    scope = lake.scope()
    # the worker turns external access off after the setup: only the data path stays readable
    # (by DuckLake; the query itself may name no file, see sandbox.check_query)
    # (set after the extensions load: an s3:// prefix set before httpfs is there never matches)
    setup = lake.tables.setup_sql(read_only=True) + [f"SET allowed_directories = [{quote(lake.tables.data_path)}]"]
    if scope.relation:
        setup.append(scope.relation_sql())
    setup += _core_views(scope, "main")
    names = {"configurations", "quarantine", "deposits", "datasets", "keys"}
    for view, builder in VIEW_BUILDERS.items():
        body = builder(lake, scope, "main")
        if body:
            setup.append(f"CREATE VIEW main.{view} AS {body}")
            names.add(view)
    return setup, names


def run_sql(lake: Lake, sql: str, untrusted: bool = False, max_rows: int | None = None,
            timeout: float | None = None, max_bytes: int | None = None) -> pa.Table:
    """Run SQL over the views.  ``untrusted``: one SELECT over the principal's views only, in a
    killable worker process with a wall-clock, memory, row and byte limit (see sandbox.py)."""
    if not untrusted:
        try:
            return lake.connection().sql(sql).to_arrow_table()
        except duckdb.Error as e:
            raise SQLError(f"SQL: {e}") from None
    from mliplake.query import sandbox

    s = lake.settings
    limits = sandbox.Limits(timeout=s.sql_timeout if timeout is None else timeout,
                            max_rows=s.sql_max_rows if max_rows is None else max_rows,
                            max_bytes=s.sql_max_bytes if max_bytes is None else max_bytes, memory=s.sql_memory)
    setup, names = sandbox_views(lake)
    try:
        return sandbox.run(setup, sql, names, limits)
    except sandbox.SandboxError as e:
        raise SQLError(str(e)) from None
