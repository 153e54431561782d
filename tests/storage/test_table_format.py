"""The lake's tables are an open format: another engine reads them from DuckLake's own catalog.

The reader here knows nothing of mliplake or DuckDB: it follows the DuckLake specification
(the catalog's ``ducklake_*`` tables in SQLite, Parquet data files and positional delete files)
with Python's sqlite3 and pyarrow.  It must see exactly what mliplake's DuckDB sees, at the
current version and at an older one.
"""
from __future__ import annotations

import json
import sqlite3

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from support import deposit_sample


def read_table(catalog: str, table: str, snapshot: int | None = None) -> pa.Table:
    """A DuckLake table at a snapshot, read from the catalog database and the files it lists."""
    db = sqlite3.connect(catalog)
    snap = snapshot if snapshot is not None else db.execute("SELECT max(snapshot_id) FROM ducklake_snapshot").fetchone()[0]
    live = "begin_snapshot <= ? AND (end_snapshot IS NULL OR end_snapshot > ?)"
    data_path = db.execute("SELECT value FROM ducklake_metadata WHERE key = 'data_path'").fetchone()[0]
    table_id, tpath, trel, schema_id = db.execute(
        f"SELECT table_id, path, path_is_relative, schema_id FROM ducklake_table WHERE table_name = ? AND {live}",
        [table, snap, snap]).fetchone()
    spath, srel = db.execute("SELECT path, path_is_relative FROM ducklake_schema WHERE schema_id = ?",
                             [schema_id]).fetchone()
    base = data_path + (spath if srel else "") + (tpath if trel else "")

    def full(path: str, relative: int) -> str:
        return base + path if relative else path

    files = db.execute(f"SELECT data_file_id, path, path_is_relative FROM ducklake_data_file "
                       f"WHERE table_id = ? AND {live} ORDER BY data_file_id", [table_id, snap, snap]).fetchall()
    deletes = {fid: full(p, r) for fid, p, r in db.execute(
        f"SELECT data_file_id, path, path_is_relative FROM ducklake_delete_file WHERE table_id = ? AND {live}",
        [table_id, snap, snap]).fetchall()}
    parts = []
    for fid, path, rel in files:
        t = pq.read_table(full(path, rel))
        if fid in deletes:
            gone = pq.read_table(deletes[fid], columns=["pos"]).column("pos")
            keep = pc.invert(pc.is_in(pa.array(range(t.num_rows), pa.int64()), value_set=gone))
            t = t.filter(keep)
        parts.append(t)
    # small tables keep their rows in the catalog itself ("data inlining"), with the same snapshot bounds
    for (name,) in db.execute("SELECT table_name FROM ducklake_inlined_data_tables WHERE table_id = ?", [table_id]):
        cur = db.execute(f"SELECT * FROM {name} WHERE {live}", [snap, snap])
        cols = [d[0] for d in cur.description]
        rows = [{k: v for k, v in zip(cols, r) if k not in ("row_id", "begin_snapshot", "end_snapshot")}
                for r in cur.fetchall()]
        if rows:
            parts.append(pa.Table.from_pylist(rows))
    return pa.concat_tables(parts, promote_options="permissive") if parts else pa.table({})


def ids_by_sql(lake, version: int | None = None) -> list[str]:
    at = f" AT (VERSION => {version})" if version is not None else ""
    return sorted(r[0] for r in lake.sql(f"SELECT config_id FROM lake.configurations{at}").fetchall())


def test_another_engine_reads_the_same_rows_and_versions(local_lake, tmp_path):
    catalog = str(local_lake.path("catalog.sqlite"))
    r_eth = deposit_sample(local_lake, "rmd17")
    r_si = deposit_sample(local_lake, "mlearn")
    v_both = local_lake.snapshot()
    other = read_table(catalog, "configurations")
    assert sorted(other.column("config_id").to_pylist()) == ids_by_sql(local_lake)
    assert other.num_rows == 2000 + 239
    # the same values, not only the same ids
    mine = local_lake.configurations(columns=["config_id", "energy", "nsites"]).sort_by("config_id")
    theirs = other.select(["config_id", "energy", "nsites"]).sort_by("config_id")
    assert mine.column("energy").to_pylist() == theirs.column("energy").to_pylist()

    # compacted into one file, then one deposit retracted: a delete file the other engine must apply
    local_lake.maintain(retention="1 day")
    local_lake.retract(r_si.deposit_id, reason="test: wrong functional")
    after = read_table(catalog, "configurations")
    assert sorted(after.column("config_id").to_pylist()) == ids_by_sql(local_lake)
    assert set(after.column("deposit_id").to_pylist()) == {r_eth.deposit_id}
    # the older version is still there, for both engines
    assert sorted(read_table(catalog, "configurations", v_both).column("config_id").to_pylist()) == \
        ids_by_sql(local_lake, v_both)
    # the deposit log is a table too: the retraction is recorded with its reason
    log = read_table(catalog, "deposits").to_pylist()
    retracted = [r for r in log if r["deposit_id"] == r_si.deposit_id]
    assert retracted and retracted[0]["retraction_reason"] == "test: wrong functional"
    assert json.loads(retracted[0]["record"])["dataset"] == "mlearn-si"
