"""DuckDB over the lake: views, filters, untrusted SQL, key discovery.

The lake stays Parquet; DuckDB is a view layer over the committed shards (the
list comes from the deposit records), in memory, so any number of processes can
query while another ingests.  S3 lakes are reached through the lake's fsspec
filesystem registered with DuckDB (httpfs cannot be installed everywhere).
"""
from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from . import filters
from .schema import CONFIGURATIONS, LABELS, QUARANTINE
from .sql import where

if TYPE_CHECKING:
    from .lake import Lake

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


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _files_sql(files: list[str]) -> str:
    return "[" + ", ".join(_quote(f) for f in files) + "]"


def _records_table(records: list[dict[str, Any]]) -> pa.Table:
    rows = []
    for r in records:
        m = r.get("manifest") or {}
        rows.append({
            "deposit_id": r["deposit_id"], "dataset": r["dataset"], "status": r.get("status"),
            "created_at": r.get("created_at"), "frames_read": r.get("frames_read", 0),
            "stored": r.get("stored", 0), "duplicates": r.get("duplicates", 0),
            "relabelled": r.get("relabelled", 0), "quarantined": r.get("quarantined", 0),
            "atoms": r.get("atoms", 0), "elements": r.get("elements", []), "labels": r.get("labels", []),
            "files": json.dumps(r.get("files", [])), "key_mapping": json.dumps(r.get("key_mapping", {})),
            "manifest": json.dumps(m), "title": m.get("title", ""), "license": m.get("license", ""),
            "method": json.dumps(m.get("method", {})), "error": r.get("error", ""),
        })
    schema = pa.schema([
        ("deposit_id", pa.string()), ("dataset", pa.string()), ("status", pa.string()), ("created_at", pa.string()),
        ("frames_read", pa.int64()), ("stored", pa.int64()), ("duplicates", pa.int64()), ("relabelled", pa.int64()),
        ("quarantined", pa.int64()), ("atoms", pa.int64()), ("elements", pa.list_(pa.string())),
        ("labels", pa.list_(pa.string())), ("files", pa.string()), ("key_mapping", pa.string()),
        ("manifest", pa.string()), ("title", pa.string()), ("license", pa.string()), ("method", pa.string()),
        ("error", pa.string()),
    ])
    return pa.Table.from_pylist(rows, schema=schema)


def connect(lake: Lake, allow_paths: bool = False) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection with the lake's views."""
    con = duckdb.connect(":memory:", config={"threads": str(min(os.cpu_count() or 1, 8))})
    # shards are immutable once committed (new attempts get new names): their footers can be cached
    con.execute("SET parquet_metadata_cache = true")
    if not lake.local:
        con.register_filesystem(lake.fs)
    records = lake.records()
    stored = [r for r in records if r.get("status") != "rejected"]
    shard = lambda key: [lake.uri(lake.path(p)) for r in stored for p in r.get(key, [])]  # noqa: E731
    conf, quar = shard("shards"), shard("quarantine_shards")
    con.register("_empty_configurations", CONFIGURATIONS.empty_table())
    con.register("_empty_quarantine", QUARANTINE.empty_table())
    src = f"read_parquet({_files_sql(conf)})" if conf else "_empty_configurations"
    con.execute(f"""
        CREATE VIEW configurations AS
        SELECT *, config_id AS id,
               [CAST(pbc[1] AS INTEGER), CAST(pbc[2] AS INTEGER), CAST(pbc[3] AS INTEGER)] AS dimension_types
        FROM {src}""")
    qsrc = f"read_parquet({_files_sql(quar)})" if quar else "_empty_quarantine"
    con.execute(f"CREATE VIEW quarantine AS SELECT * FROM {qsrc}")
    con.register("deposits", _records_table(records))
    con.execute(DATASETS_VIEW)
    con.execute(keys_view_sql())
    for extra in lake.extra_views():
        con.execute(extra)
    return con


DATASETS_VIEW = """
CREATE VIEW datasets AS
SELECT dataset,
       any_value(title ORDER BY created_at DESC) AS title,
       any_value(license ORDER BY created_at DESC) AS license,
       any_value(method ORDER BY created_at DESC) AS method,
       count(*) AS deposits, sum(stored) AS configurations, sum(atoms) AS atoms,
       sum(quarantined) AS quarantined, sum(duplicates) AS duplicates,
       list_sort(list_distinct(flatten(list(elements)))) AS elements,
       list_sort(list_distinct(flatten(list(labels)))) AS labels
FROM deposits WHERE status <> 'rejected' GROUP BY dataset
"""


LABEL_DTYPES = {"energy": "float64", "forces": "float64[n,3]", "stress": "float64[3,3]", "virial": "float64[3,3]",
                "charges": "float64[n]", "magmoms": "float64[n]", "dipole": "float64[3]"}
_JSON_DTYPE = ("CASE t WHEN 'varchar' THEN 'string' WHEN 'double' THEN 'number' WHEN 'ubigint' THEN 'integer' "
               "WHEN 'bigint' THEN 'integer' WHEN 'boolean' THEN 'boolean' WHEN 'array' THEN 'list' "
               "WHEN 'object' THEN 'object' WHEN 'null' THEN 'null' ELSE t END")


def keys_view_sql() -> str:
    """Every key: labels and derived columns by name, user keys from the JSON columns, inside DuckDB."""
    parts = []
    for name, (_, unit) in LABELS.items():
        parts.append(f"SELECT '{name}' AS key, 'label' AS category, '{LABEL_DTYPES[name]}' AS dtype, '{unit}' AS unit, "
                     f"count({name}) AS configurations, "
                     f"list_sort(list(DISTINCT dataset) FILTER ({name} IS NOT NULL)) AS datasets FROM configurations")
    for name, (unit, _) in DERIVED.items():
        dtype = "string" if "formula" in name else ("list" if name == "elements" else "number")
        parts.append(f"SELECT '{name}', 'derived', '{dtype}', '{unit}', count({name}), "
                     f"list_sort(list(DISTINCT dataset) FILTER ({name} IS NOT NULL)) FROM configurations")
    for col in ("info", "arrays"):
        # per-atom keys: the type of their entries; info keys: the type of the value
        kind = "lower(json_type(j.value, '$[0]'))" if col == "arrays" else "lower(j.type)"
        parts.append(
            f"SELECT key, '{col}', string_agg(DISTINCT {_JSON_DTYPE}, '|'), '', count(*), list_sort(list(DISTINCT dataset)) "
            f"FROM (SELECT j.key AS key, {kind} AS t, c.dataset AS dataset "
            f"FROM configurations c, json_each(c.{col}) j) GROUP BY key")
    return ("CREATE VIEW keys AS SELECT * FROM (" + " UNION ALL ".join(parts) + ") WHERE configurations > 0")


# ---------------------------------------------------------------- filters


LAKE_ORDER = "dataset, source_file, frame_index, config_id"  # the lake's order; config_id breaks ties
TWO_STEP_MAX = 10_000  # up to this limit, a search finds its rows by the sort keys first


def search(lake: Lake, filter: str | None, columns: list[str] | None = None, limit: int | None = None,
           order: str | None = None) -> pa.Table:
    node = filters.parse(filter)
    clause, params = where(node)
    cols = columns or DEFAULT_COLUMNS
    con = lake.connection()
    known = set(con.sql("SELECT * FROM configurations LIMIT 0").columns)
    bad = [c for c in [*cols, *([order] if order else [])] if c not in known]
    if bad:
        raise filters.FilterError(f"unknown column(s) {', '.join(bad)}; columns: {', '.join(sorted(known))}")
    select = ", ".join(_ident(c) for c in cols)
    if order or limit is None or limit > TWO_STEP_MAX:
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
    sql = (f"SELECT {select} FROM configurations WHERE deposit_id IN ({', '.join('?' * len(deposits))}){in_range} "
           f"AND config_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY {LAKE_ORDER}")
    return con.sql(sql, params=[*deposits, [k[2] for k in keys]]).to_arrow_table()


def count(lake: Lake, filter: str | None) -> int:
    clause, params = where(filters.parse(filter))
    return lake.connection().sql(f"SELECT count(*) FROM configurations WHERE {clause}", params=params).fetchall()[0][0]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------- untrusted SQL

SQL_TIMEOUT = float(os.environ.get("MLIPLAKE_SQL_TIMEOUT", 30))
SQL_MAX_ROWS = int(os.environ.get("MLIPLAKE_SQL_MAX_ROWS", 100_000))


def _single_select(sql: str) -> str:
    try:
        stmts = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise SQLError(f"SQL: {e}") from None
    if len(stmts) != 1:
        raise SQLError(f"SQL: exactly one statement, please (got {len(stmts)})")
    if stmts[0].type != duckdb.StatementType.SELECT:
        raise SQLError(f"SQL: only SELECT queries may run here, not {stmts[0].type.name}")
    return stmts[0].query


def lock_down(lake: Lake, con: duckdb.DuckDBPyConnection) -> None:
    """No files but the lake's, no extensions, no settings changes, bounded memory."""
    root = lake.root if lake.local else lake.uri(lake.root)
    con.execute(f"SET allowed_directories = [{_quote(root.rstrip('/') + '/')}]")
    for setting in ("enable_external_access = false", "autoinstall_known_extensions = false",
                    "autoload_known_extensions = false", "allow_community_extensions = false",
                    "memory_limit = '2GB'", "lock_configuration = true"):
        con.execute(f"SET {setting}")


def run_sql(lake: Lake, sql: str, untrusted: bool = False, max_rows: int | None = None,
            timeout: float | None = None) -> pa.Table:
    """Run SQL over the views.  ``untrusted``: one SELECT, sandboxed, time- and row-limited."""
    if not untrusted:
        try:
            return lake.connection().sql(sql).to_arrow_table()
        except duckdb.Error as e:
            raise SQLError(f"SQL: {e}") from None
    query = _single_select(sql)
    max_rows = SQL_MAX_ROWS if max_rows is None else max_rows
    wrapped = _single_select(f"SELECT * FROM (\n{query}\n) AS q LIMIT {int(max_rows) + 1}")
    con = connect(lake)
    lock_down(lake, con)
    timer = threading.Timer(SQL_TIMEOUT if timeout is None else timeout, con.interrupt)
    timer.start()
    try:
        table = con.sql(wrapped).to_arrow_table()
    except duckdb.InterruptException:
        raise SQLError(f"SQL: stopped after {timeout or SQL_TIMEOUT:g} s (time limit)") from None
    except duckdb.Error as e:
        raise SQLError(f"SQL: {e}") from None
    finally:
        timer.cancel()
        con.close()
    if table.num_rows > max_rows:
        raise SQLError(f"SQL: more than {max_rows} rows; add a LIMIT or aggregate")
    return table
