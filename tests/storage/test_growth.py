"""A deposit's cost does not grow with the lake: the catalog is kept small as deposits arrive.

- a new deposit's commit deletes nothing (there is no previous version); a re-run still replaces;
- past ``compact_files`` small data files a table's files are merged, and past
  ``compact_inlined_rows`` its inlined rows are written out, by the deposit that finds it so:
  the rows and every older version stay as they were, and no file a reader may hold is deleted;
- writers depositing overlapping frames at once, compacting as they go, still store each frame once.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from support.pg_server import pg_url_fixture
from support.writers import finish, ids_of, pool, start_writers, write_frames

import mliplake
import mliplake.storage.tables as tables_mod
from mliplake.settings import Settings

pg_url = pg_url_fixture()


def small_lake(tmp_path: Path, files: int = 3, rows: int = 4) -> mliplake.Lake:
    return mliplake.Lake(tmp_path / "lake", settings=Settings(compact_files=files, compact_inlined_rows=rows))


def frames(tmp_path: Path, k: int, n: int = 5) -> Path:
    p = tmp_path / f"d{k:03d}.xyz"
    write_frames(p, range(k * n, k * n + n))
    return p


def statements(monkeypatch) -> list[str]:
    """Every SQL statement the lake's connections run from now on."""
    seen: list[str] = []

    class Cursor:
        def __init__(self, cur):
            self._cur = cur

        def execute(self, sql, *a, **kw):
            seen.append(" ".join(sql.split()))
            return self._cur.execute(sql, *a, **kw)

        def cursor(self):
            return Cursor(self._cur.cursor())

        def __getattr__(self, name):
            return getattr(self._cur, name)

    base = tables_mod.TableStore.base
    monkeypatch.setattr(tables_mod.TableStore, "base", lambda self: Cursor(base(self)))
    return seen


def test_a_new_deposit_deletes_nothing_and_a_rerun_replaces(local_lake, tmp_path, monkeypatch):
    seen = statements(monkeypatch)
    p = frames(tmp_path, 0)
    first = local_lake.deposit([p], dataset="d")
    assert first.stored == 5
    assert not [s for s in seen if s.startswith("DELETE")]
    v1 = local_lake.snapshot()
    seen.clear()
    again = local_lake.deposit([p], dataset="d")  # the same files: the same deposit, a new version
    assert again.deposit_id == first.deposit_id and again.stored == 5
    assert sum(s.startswith("DELETE") for s in seen) == 3
    assert local_lake.count() == 5 and len(local_lake.records()) == 1
    assert local_lake.sql(f"SELECT count(*) FROM lake.configurations AT (VERSION => {v1})").fetchone()[0] == 5


def test_small_files_and_inlined_rows_are_compacted_as_deposits_arrive(tmp_path):
    lake = small_lake(tmp_path, files=3, rows=4)
    versions = []
    for k in range(10):
        lake.deposit([frames(tmp_path, k)], dataset=f"ds-{k % 2}")
        versions.append((lake.snapshot(), lake.count()))
        load = lake.tables.catalog_load()
        assert load["configurations"]["small_files"] <= 3  # merged as soon as there were 4
        assert load["deposits"].get("inlined_rows", 0) <= 4
        assert load["heads"].get("small_files", 0) == 0  # heads stays in the catalog (see COMPACTED)
    assert lake.count() == 50 and len(lake.records()) == 10
    assert sorted(ids_of(lake, "ds-0") + ids_of(lake, "ds-1")) == sorted(
        r[0] for r in lake.sql("SELECT id FROM configurations").fetchall())
    for version, count in versions:  # every older version reads as it did when it was made
        assert lake.sql(f"SELECT count(*) FROM lake.configurations AT (VERSION => {version})").fetchone()[0] == count
        assert lake.sql(f"SELECT count(*) FROM lake.deposits AT (VERSION => {version})").fetchone()[0] == count // 5


def test_compaction_deletes_no_file_a_reader_may_hold(tmp_path):
    lake = small_lake(tmp_path, files=2, rows=0)
    listed: set[str] = set()
    for k in range(6):
        lake.deposit([frames(tmp_path, k)], dataset="d")
        listed |= {r[0] for r in lake.tables.cursor().execute(
            "SELECT data_file FROM ducklake_list_files('lake', 'configurations')").fetchall()}
    assert lake.tables.catalog_load()["configurations"]["small_files"] <= 2
    assert all(os.path.exists(f) for f in listed)  # replaced files stay until maintain, past the retention
    lake.maintain(retention="0 seconds")
    assert lake.count() == 30


def test_compaction_off(tmp_path):
    lake = mliplake.Lake(tmp_path / "lake", settings=Settings(compact_files=0, compact_inlined_rows=0))
    for k in range(4):
        lake.deposit([frames(tmp_path, k)], dataset="d")
    assert lake.tables.catalog_load()["configurations"]["small_files"] == 4
    assert lake.tables.compact_small() == {}


def test_writers_compacting_as_they_go_still_store_each_frame_once(tmp_path):
    lake = mliplake.Lake(tmp_path / "lake")
    f = pool(tmp_path, 5, per_file=20, step=10)  # neighbours share half their frames: 0..59 in all
    env = dict(os.environ, MLIPLAKE_COMPACT_FILES="1", MLIPLAKE_COMPACT_INLINED_ROWS="2")
    reports = finish(start_writers(lake.url, "grow", [[f[0], f[1]], [f[1], f[2]], [f[2], f[3]], [f[3], f[4]]],
                                   env=env))
    ids = ids_of(lake, "grow")
    assert len(ids) == len(set(ids)) == 60  # each frame once
    assert sum(r["stored"] for r in reports) == 60
    for r in reports:
        assert r["stored"] + r["duplicates"] == r["frames_read"] == 40
    assert lake.tables.catalog_load()["configurations"]["small_files"] <= 2


def test_catalog_load_on_an_old_lake_and_a_cli_run(tmp_path):
    """A lake written without compaction is caught up by its next deposit."""
    lake = mliplake.Lake(tmp_path / "lake", settings=Settings(compact_files=0, compact_inlined_rows=0))
    for k in range(5):
        lake.deposit([frames(tmp_path, k)], dataset="d")
    env = dict(os.environ, MLIPLAKE_COMPACT_FILES="3")
    out = subprocess.run([sys.executable, "-m", "mliplake.cli", "--lake", lake.url, "deposit",
                          str(frames(tmp_path, 5)), "--dataset", "d"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    fresh = mliplake.Lake(lake.url)
    assert fresh.count() == 30
    assert fresh.tables.catalog_load()["configurations"]["small_files"] <= 3


def test_nightly_maintenance_job_compacts_what_deposits_left(tmp_path):
    from pipelines.definitions import defs
    from pipelines.defs.resources import LakeResource

    lake = mliplake.Lake(tmp_path / "lake", settings=Settings(compact_files=0, compact_inlined_rows=0))
    for k in range(3):
        lake.deposit([frames(tmp_path, k)], dataset="d")
    assert defs.resolve_schedule_def("nightly_maintenance").cron_schedule == "30 3 * * *"
    res = defs.resolve_job_def("maintain_lake").execute_in_process(resources={"lake": LakeResource(url=lake.url)})
    assert res.success
    meta = [e.event_specific_data.metadata for e in res.all_events if e.event_type_value == "STEP_OUTPUT"][0]
    assert meta["files_before"].value == 3 and meta["files_after"].value == 1
    assert mliplake.Lake(lake.url).count() == 15


def test_with_a_postgresql_catalog_deposits_leave_merging_to_maintain(pg_url, tmp_path):
    import psycopg

    u = httpx.URL(pg_url.replace("postgresql+psycopg://", "http://"))
    name = f"cat_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    catalog = f"postgres:dbname={name} host={u.host} port={u.port} user={u.username}"
    lake = mliplake.Lake(tmp_path / "lake", settings=Settings(catalog=catalog, compact_files=2, compact_inlined_rows=3))
    for k in range(4):
        lake.deposit([frames(tmp_path, k)], dataset="d")
    assert lake.tables.catalog_load()["configurations"]["small_files"] == 4  # the catalog is read there too
    assert lake.tables.compact_small() == {}  # no lock reaches every writer of a shared catalog
    assert lake.maintain(retention="1 day")["files_after"] == 1
    assert lake.count() == 20 and len(lake.records()) == 4
