"""The lake's tables in DuckLake: snapshot isolation, optimistic commits, history, time travel.

Tables (in the DuckLake catalog attached as ``lake``):

    configurations   one row per stored configuration (schema.CONFIGURATIONS)
    quarantine       one row per rejected frame or file, with its reason
    deposits         the deposit log: one row per deposit, its whole record as JSON
    policies         who may see each dataset (access.Policy)
    audit            who did what, when (retractions, visibility changes, purges)
    heads            one row that every commit updates, so concurrent commits conflict

Invariants:
- A deposit's rows, its quarantine and its record change in one DuckLake transaction; readers
  see the snapshot before or after it, never a mix (DuckLake's snapshot isolation).
- Commits serialise through ``heads``: a commit that raced another is refused by the catalog and
  retried from the start, so its duplicate check sees what the other one stored.
- No file a reader may read is deleted by a commit: replaced or retracted rows stay in their
  files (and readable by version) until :meth:`TableStore.maintain` expires snapshots older
  than the retention period.
- Data files are written by the deposit itself (pyarrow, streaming) under the data path and
  copied into the table by its commit; a staged file that is never copied (a crashed writer)
  is an orphan that ``maintain`` removes once it is older than the retention period.
- The catalog stays small: a table with more than ``compact_files`` small data files has them
  merged, and one with more than ``compact_inlined_rows`` rows inlined in the catalog has them
  written out, by the deposit that finds it so (:meth:`TableStore.compact_small`).  Merged and
  flushed files keep every snapshot readable; the files they replace are deleted only by
  ``maintain``, past the retention period.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import duckdb
import pyarrow as pa

from mliplake.access import Policy
from mliplake.core.schema import CONFIGURATIONS, QUARANTINE
from mliplake.core.sql import quote
from mliplake.settings import Settings
from mliplake.storage import extensions

T = TypeVar("T")
log = logging.getLogger(__name__)
META = "__ducklake_metadata_lake"  # DuckLake attaches the catalog database of ``lake`` under this name

DEPOSITS = pa.schema([
    ("deposit_id", pa.string()), ("dataset", pa.string()), ("status", pa.string()),
    ("created_at", pa.string()), ("submitter", pa.string()),
    ("frames_read", pa.int64()), ("stored", pa.int64()), ("duplicates", pa.int64()),
    ("relabelled", pa.int64()), ("quarantined", pa.int64()), ("atoms", pa.int64()),
    ("elements", pa.list_(pa.string())), ("labels", pa.list_(pa.string())),
    ("title", pa.string()), ("license", pa.string()), ("method", pa.string()),
    ("record", pa.string()),
    ("retracted_at", pa.string()), ("retracted_by", pa.string()), ("retraction_reason", pa.string()),
    ("purged", pa.bool_()),
])
POLICIES = pa.schema([
    ("dataset", pa.string()), ("visibility", pa.string()), ("owner", pa.string()),
    ("groups", pa.list_(pa.string())), ("embargo_until", pa.date32()),
    ("updated_at", pa.string()), ("updated_by", pa.string()),
])
AUDIT = pa.schema([("at", pa.string()), ("actor", pa.string()), ("action", pa.string()),
                   ("target", pa.string()), ("detail", pa.string())])
HEADS = pa.schema([("name", pa.string()), ("n", pa.int64())])
TABLES: dict[str, pa.Schema] = {"configurations": CONFIGURATIONS, "quarantine": QUARANTINE,
                                "deposits": DEPOSITS, "policies": POLICIES, "audit": AUDIT, "heads": HEADS}
# the tables a deposit compacts: those written only by serialised commits (see compact_small).
# Never ``heads``: every commit updates its one row, and in DuckLake 1.5.5 a writer whose update
# of ``heads`` met a concurrent compaction of it crashed (merging its files: "Could not find
# matching file for written delete file"; writing out its inlined rows: "Attempting to get the
# index of an optional_idx that is not set").  Its row stays inlined in the catalog.  Derived
# tables (catalogue, models, ...) are replaced without serialising: they are left to ``maintain``.
COMPACTED = ("configurations", "quarantine", "deposits", "policies", "audit")
RETRYABLE = ("conflict", "database is locked", "could not serialize", "deadlock", "busy",
             "primary key", "unique constraint", "duplicate key")


TABLE_CHECK_SECONDS = 2.0


class CommitConflict(RuntimeError):
    """A commit that kept meeting concurrent writers past the retry budget."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class TableStore:
    """The DuckLake catalog and data path of one lake, and the commits to it."""

    def __init__(self, url: str, root: str, local: bool, settings: Settings) -> None:
        self.url, self.root, self.local, self.settings = url, root, local, settings
        self.catalog = settings.catalog_url(url, root, local)
        # DuckLake owns everything below: its orphan clean-up must never meet other files
        self.data_path = (f"{root}/data/" if local else f"s3://{root}/data/")
        self._base: duckdb.DuckDBPyConnection | None = None
        self._scan: duckdb.DuckDBPyConnection | None = None  # see scan_cursor
        self._lock = threading.Lock()
        self.view_schemas: set[str] = set()  # schemas of views built on the base connection
        self._access: tuple[int, list[str], dict[str, Policy]] | None = None  # (snapshot, names, policies)
        self._tables_seen: set[str] = set(TABLES)
        self._tables_missing: dict[str, float] = {}
        self._recheck_missing = False  # set when a new Lake takes this store: another process may have made one
        self._catalog_file: tuple[int, int] | None = None  # (device, inode) of a SQLite catalog when attached

    # ------------------------------------------------------------ connecting

    def setup_sql(self, read_only: bool = False) -> list[str]:
        """Statements that give a fresh DuckDB connection the lake as catalog ``lake``."""
        kind, _, target = self.catalog.partition(":")
        if kind not in ("sqlite", "postgres"):
            raise ValueError(f"catalog {self.catalog!r}: use sqlite:PATH or postgres:CONNINFO")
        stmts = extensions.load_sql("ducklake", "sqlite_scanner" if kind == "sqlite" else "postgres_scanner")
        if not self.local:
            stmts += extensions.load_sql("httpfs") + [self._s3_secret_sql()]
        opts = [f"DATA_PATH {quote(self.data_path)}"] + (["READ_ONLY"] if read_only else [])
        stmts.append(f"ATTACH {quote('ducklake:' + kind + ':' + target)} AS lake ({', '.join(opts)})")
        return stmts

    def _s3_secret_sql(self) -> str:
        endpoint = self.settings.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL", "")
        region = self.settings.s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        parts = ["TYPE s3", f"REGION {quote(region)}"]
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:
            parts += [f"KEY_ID {quote(key)}", f"SECRET {quote(secret)}"]
            if os.environ.get("AWS_SESSION_TOKEN"):
                parts.append(f"SESSION_TOKEN {quote(os.environ['AWS_SESSION_TOKEN'])}")
        if endpoint:
            u = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
            parts += [f"ENDPOINT {quote(u.netloc)}", "URL_STYLE 'path'", f"USE_SSL {str(u.scheme == 'https').lower()}"]
        return f"CREATE OR REPLACE SECRET mliplake_s3 ({', '.join(parts)})"

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new DuckDB connection (its own database instance) with the lake attached."""
        self._prepare_catalog()
        if not self._sqlite_ready():
            # the first processes to open a new lake: one of them makes it, the others wait
            with self._file_lock():
                con = self._new_connection()
                Path(self.catalog.partition(":")[2] + ".ready").touch()
                return con
        return self._new_connection()

    def _new_connection(self, threads: int | None = None, file_cache: bool = True) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:", config={"threads": str(threads or min(os.cpu_count() or 1, 8))})
        # data files never change once written; GLOBAL, so the cursors queries run on inherit it
        con.execute("SET GLOBAL parquet_metadata_cache = true")
        if not file_cache:
            con.execute("SET GLOBAL enable_external_file_cache = false")
        try:
            self._attach(con)
        except BaseException:
            con.close()
            raise
        return con

    def _attach(self, con: duckdb.DuckDBPyConnection) -> None:
        for stmt in self.setup_sql():
            con.execute(stmt)
        self._ensure_tables(con)

    def _sqlite_ready(self) -> bool:
        """A SQLite catalog that already holds the lake's tables (no initialisation left to race).

        Told by a marker file, not by opening the catalog with Python's sqlite3: two SQLite
        libraries in one process (Python's and DuckDB's) would release each other's POSIX locks."""
        kind, _, target = self.catalog.partition(":")
        return kind != "sqlite" or os.path.exists(target + ".ready")

    def base(self) -> duckdb.DuckDBPyConnection:
        """The process's shared connection; every user of it takes a ``cursor()`` of its own."""
        with self._lock:
            if self._base is None:
                self._base = self.connect()
                self._catalog_file = self._catalog_identity()
            return self._base

    def _catalog_identity(self) -> tuple[int, int] | None:
        kind, _, target = self.catalog.partition(":")
        if kind != "sqlite":
            return None
        try:
            st = os.stat(target)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    def still_current(self) -> bool:
        """Whether the catalog this store attached is still the one at its path (a lake folder
        deleted and made again holds a new catalog, which a cached instance would not see)."""
        with self._lock:
            if self._base is None:
                return True
        return self._catalog_identity() == self._catalog_file

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.base().cursor()

    def scan_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of the process's second instance, made for streaming a whole result out in
        stored order (exports).  It runs each query on the caller's thread alone: a second thread
        reads ahead, and keeping the stored order then means holding what it read, which grew with
        the size of the export.  Its file cache is off: an export reads each byte once."""
        with self._lock:
            if self._scan is None:
                self._scan = self._new_connection(threads=1, file_cache=False)
            return self._scan.cursor()

    def close(self) -> None:
        with self._lock:
            if self._base is not None:
                self._base.close()
                self._base = None
                self.view_schemas.clear()
            if self._scan is not None:
                self._scan.close()
                self._scan = None

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Serialises the creation of a local catalog between processes."""
        path = Path(self.catalog.partition(":")[2] + ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _prepare_catalog(self) -> None:
        """A SQLite catalog is created in WAL mode: readers then never wait for, or fail on, a commit."""
        kind, _, target = self.catalog.partition(":")
        if kind != "sqlite" or (os.path.exists(target) and os.path.getsize(target) > 0):
            return
        with self._file_lock():
            if os.path.exists(target) and os.path.getsize(target) > 0:
                return
            db = sqlite3.connect(target)
            db.execute("PRAGMA journal_mode=WAL")
            db.close()

    def _ensure_tables(self, con: duckdb.DuckDBPyConnection) -> None:
        have = {r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall()}
        missing = [t for t in TABLES if t not in have]
        if not missing:
            return

        def create(cur: duckdb.DuckDBPyConnection) -> None:
            have = {r[0] for r in cur.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall()}
            for name in TABLES:
                if name not in have:
                    cur.register(f"_empty_{name}", TABLES[name].empty_table())
                    cur.execute(f"CREATE TABLE lake.{name} AS SELECT * FROM _empty_{name}")
                    cur.unregister(f"_empty_{name}")
            if "heads" not in have:
                cur.execute("INSERT INTO lake.heads VALUES ('commits', 0)")

        def options(cur: duckdb.DuckDBPyConnection) -> None:
            # configurations always live in Parquet files (never inlined in the catalog): any
            # engine that reads DuckLake's data files and delete files reads them whole
            cur.execute("CALL lake.set_option('data_inlining_row_limit', 0, table_name => 'configurations')")
            # row groups of 16,384 rows (the deposit writer's size): reading a file holds one row
            # group of positions and forces per thread, so memory stays small whatever the file
            cur.execute("CALL lake.set_option('parquet_row_group_size', 16384, table_name => 'configurations')")

        self.transaction(create, con=con)
        self.transaction(options, con=con)

    def has_table(self, name: str, cur: duckdb.DuckDBPyConnection | None = None) -> bool:
        """Whether the lake has this table.  Tables are never dropped, so a yes is kept; a no is
        asked again after :data:`TABLE_CHECK_SECONDS` (listing the catalog costs a catalog query,
        too much for every request)."""
        if name in self._tables_seen and cur is None:
            return True
        checked = self._tables_missing.get(name)
        if cur is None and checked is not None and self._recheck_missing:
            self._list_tables()  # a new Lake on this store: one listing answers for every table
            checked = self._tables_missing.get(name)
            if checked is None:
                return True
        if cur is None and checked is not None and time.monotonic() - checked < TABLE_CHECK_SECONDS:
            return False
        # a literal, not a parameter: DuckDB's first parameterised statement imports pandas (~0.3 s
        # of a new process's first query); names come from the library, never from a request
        found = bool((cur or self.cursor()).execute(
            f"SELECT 1 FROM duckdb_tables() WHERE database_name = 'lake' AND table_name = {quote(name)}").fetchone())
        if found:
            self._tables_seen.add(name)
            self._tables_missing.pop(name, None)
        else:
            self._tables_missing[name] = time.monotonic()
        return found

    def _list_tables(self) -> None:
        have = {r[0] for r in self.cursor().execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall()}
        now = time.monotonic()
        for name in list(self._tables_missing):
            if name in have:
                self._tables_seen.add(name)
                del self._tables_missing[name]
            else:
                self._tables_missing[name] = now
        self._recheck_missing = False

    def ensure_table(self, name: str, schema: pa.Schema) -> None:
        """A table that a later layer keeps (the catalogue, models, ...), created on first use."""
        if self.has_table(name):
            return

        def create(cur: duckdb.DuckDBPyConnection) -> None:
            if not self.has_table(name, cur):
                cur.register("_empty", schema.empty_table())
                cur.execute(f"CREATE TABLE lake.{name} AS SELECT * FROM _empty")
                cur.unregister("_empty")

        self.transaction(create)
        self._tables_seen.add(name)
        self._tables_missing.pop(name, None)

    def replace_table(self, name: str, table: pa.Table, message: str = "") -> None:
        """All rows of a derived table replaced by ``table``, in one commit."""
        self.ensure_table(name, table.schema)

        def work(cur: duckdb.DuckDBPyConnection) -> None:
            if message:
                cur.execute("CALL lake.set_commit_message('mliplake', ?)", [message])
            cur.execute(f"DELETE FROM lake.{name}")
            cur.register("_rows", table)
            cur.execute(f"INSERT INTO lake.{name} SELECT * FROM _rows")
            cur.unregister("_rows")

        self.transaction(work)

    # ------------------------------------------------------------ transactions

    @contextmanager
    def merge_guard(self, exclusive: bool, wait: bool = True) -> Iterator[bool]:
        """Keeps merges of data files apart from commits that change rows (SQLite catalogs).

        Serialised commits hold it shared (they never wait for each other); a merge holds it
        exclusively.  In DuckLake 1.5.5 a merge committed while a deposit that deleted rows was
        in flight could leave a snapshot in which some rows were counted twice (the stress test
        of ``tests/storage/test_concurrency.py`` with tiny compaction limits): a merge cannot bump
        ``heads`` (DuckLake refuses a transaction that both compacts and changes rows), so this
        lock does what ``heads`` does for other commits.  A file lock beside the SQLite catalog
        reaches every process of that catalog (a SQLite catalog has all its writers on one
        machine).  Yields whether the guard is held: without ``wait``, False when a commit is
        under way; with a PostgreSQL catalog, False for an exclusive guard (deposits then leave
        merging to ``maintain``) and True, unguarded, for a shared one."""
        kind, _, target = self.catalog.partition(":")
        if kind != "sqlite":
            yield not exclusive
            return
        path = Path(target + ".merge.lock")
        path.parent.mkdir(parents=True, exist_ok=True)  # a process's first commit may come before its connection
        with open(path, "a") as f:
            try:
                fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def transaction(self, work: Callable[[duckdb.DuckDBPyConnection], T],
                    con: duckdb.DuckDBPyConnection | None = None, serialise: bool = False,
                    guard: bool = True) -> T:
        """Run ``work`` in one DuckLake transaction, retried from the start when it meets a
        concurrent commit.  ``serialise``: also bump ``heads``, so that this commit conflicts with
        every other serialised commit (what a read-check-write such as deduplication needs), and
        hold :meth:`merge_guard` shared (``guard=False``: the caller holds it already)."""
        if serialise and guard:
            with self.merge_guard(exclusive=False):
                return self.transaction(work, con, serialise=True, guard=False)
        cur = (con or self.base()).cursor()
        try:
            for attempt in range(self.settings.commit_retries):
                try:
                    cur.execute("BEGIN TRANSACTION")
                    result = work(cur)
                    if serialise:
                        cur.execute("UPDATE lake.heads SET n = n + 1 WHERE name = 'commits'")
                    if self.settings.commit_pause:
                        time.sleep(self.settings.commit_pause)
                    cur.execute("COMMIT")
                    return result
                except duckdb.Error as e:
                    _rollback(cur)
                    if not _retryable(e):
                        raise
                    # jittered exponential back-off, capped: many writers must not retry in lock-step
                    time.sleep(min(2.0, 0.02 * 1.5 ** attempt) * (0.5 + random.random()))
                except BaseException:
                    _rollback(cur)
                    raise
            raise CommitConflict(f"gave up after {self.settings.commit_retries} attempts: other writers "
                                 "kept committing to the lake at the same moment")
        finally:
            cur.close()

    # ------------------------------------------------------------ reading helpers

    def bytes_added(self, message: str) -> int:
        """Bytes of the data files that the latest commit with this message added."""
        row = self.cursor().execute(
            "SELECT coalesce(sum(file_size_bytes), 0) FROM __ducklake_metadata_lake.ducklake_data_file "
            "WHERE begin_snapshot = (SELECT max(snapshot_id) FROM lake.snapshots() WHERE commit_message = ?)",
            [message]).fetchone()
        return int(row[0])

    def snapshot(self, cur: duckdb.DuckDBPyConnection | None = None) -> int:
        """The id of the lake's current snapshot (a version readers can come back to)."""
        cur = cur or self.cursor()
        return int(cur.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0])

    def records(self, where: str = "TRUE", params: list[Any] | None = None) -> list[dict[str, Any]]:
        rows = self.cursor().execute(
            f"SELECT record, retracted_at, retracted_by, retraction_reason, purged FROM lake.deposits "
            f"WHERE {where} ORDER BY created_at, deposit_id", params or []).fetchall()
        out = []
        for rec, at, by, why, purged in rows:
            r = json.loads(rec)
            if at:
                r.update(status="retracted", retracted_at=at, retracted_by=by, retraction_reason=why,
                         purged=bool(purged))
            out.append(r)
        return out

    def policies(self, cur: duckdb.DuckDBPyConnection | None = None) -> dict[str, Policy]:
        cur = cur or self.cursor()
        rows = cur.execute("SELECT dataset, visibility, owner, groups, embargo_until, updated_at, updated_by "
                           "FROM lake.policies").fetchall()
        return {r[0]: Policy(r[0], r[1], r[2] or "", tuple(r[3] or ()), r[4], r[5] or "", r[6] or "") for r in rows}

    def access_inputs(self) -> tuple[list[str], dict[str, Policy]]:
        """Dataset names and policies, what every request's scope is computed from; read again only
        when the lake has a new snapshot (any deposit, visibility change or retraction makes one),
        so a change is seen by the next request, in this process and in every other."""
        cur = self.cursor()
        snap = self.snapshot(cur)
        cached = self._access
        if cached is not None and cached[0] == snap:
            return cached[1], cached[2]
        names, pols = self.dataset_names(cur), self.policies(cur)
        self._access = (snap, names, pols)
        return names, pols

    def dataset_names(self, cur: duckdb.DuckDBPyConnection | None = None) -> list[str]:
        cur = cur or self.cursor()
        names = {r[0] for r in cur.execute("SELECT DISTINCT dataset FROM lake.deposits").fetchall()}
        names |= {r[0] for r in cur.execute("SELECT dataset FROM lake.policies").fetchall()}
        return sorted(names)

    # ------------------------------------------------------------ maintenance

    def catalog_load(self, cur: duckdb.DuckDBPyConnection | None = None) -> dict[str, dict[str, int]]:
        """Per table: its live data files smaller than ``compact_file_bytes`` (``small_files``) and
        the rows it keeps inlined in the catalog, current and superseded (``inlined_rows``).

        What every query of a table pays for: DuckLake lists a table's files (and, for a filter,
        their column statistics) from the catalog, and a SQLite catalog is read whole for that
        (DuckDB's SQLite scanner pushes no filter down), so each statement costs in proportion
        to these numbers, for every table of the lake.  Read straight from the catalog tables
        (the DuckLake specification's), a few milliseconds."""
        cur = cur or self.cursor()
        out: dict[str, dict[str, int]] = {}
        live = f"SELECT table_id, table_name FROM {META}.ducklake_table WHERE end_snapshot IS NULL"
        for name, n in cur.execute(f"""SELECT t.table_name, count(*) FROM {META}.ducklake_data_file f
                                       JOIN ({live}) t USING (table_id)
                                       WHERE f.end_snapshot IS NULL AND f.file_size_bytes < ? GROUP BY ALL""",
                                   [self.settings.compact_file_bytes]).fetchall():
            out.setdefault(name, {})["small_files"] = int(n)
        inlined = cur.execute(f"SELECT t.table_name, i.table_name FROM {META}.ducklake_inlined_data_tables i "
                              f"JOIN ({live}) t USING (table_id)").fetchall()
        if inlined:
            counts = " UNION ALL ".join(f"SELECT {quote(name)}, count(*) FROM {META}.{rows}" for name, rows in inlined)
            for name, n in cur.execute(counts).fetchall():
                d = out.setdefault(name, {})
                d["inlined_rows"] = d.get("inlined_rows", 0) + int(n)
        return out

    def compact_small(self) -> dict[str, str]:
        """Merge the small files of every table that has more than ``compact_files`` of them, and
        write out the inlined rows of every table that has more than ``compact_inlined_rows``; what
        was done, by table.  Never raises: a deposit calls it after its commit, and a compaction
        that keeps meeting concurrent writers is left to the next deposit (or ``maintain``).

        Without it every deposit adds a file to ``configurations`` (and rows to the catalog), and
        every statement of the next commit costs more.  Merging only files under
        ``compact_file_bytes`` bounds the work: a merged file that has grown past it is never
        rewritten again.  Both are ordinary DuckLake commits, retried on conflict like any other
        (the flush is also serialised through ``heads``; a merge cannot be: DuckLake refuses a
        transaction that both compacts and changes rows, and a commit that deleted rows of a
        merged file is refused and retried); readers keep their snapshot, and the replaced files
        stay on disk until ``maintain`` deletes them past the retention period.  Only the tables
        in :data:`COMPACTED`."""
        files_limit, rows_limit = self.settings.compact_files, self.settings.compact_inlined_rows
        if not files_limit and not rows_limit:
            return {}
        done: dict[str, str] = {}
        try:
            load = self.catalog_load()
            todo = [n for n in COMPACTED if (rows_limit and load.get(n, {}).get("inlined_rows", 0) > rows_limit)
                    or (files_limit and load.get(n, {}).get("small_files", 0) > files_limit)]
            if not todo:
                return done
            with self.merge_guard(exclusive=True, wait=False) as held:
                if not held:  # a commit is under way (or a PostgreSQL catalog): the next deposit sees to it
                    return done
                for name in todo:
                    d = load[name]
                    if rows_limit and d.get("inlined_rows", 0) > rows_limit:
                        self.transaction(lambda cur, name=name: cur.execute(
                            "CALL ducklake_flush_inlined_data('lake', table_name => ?)", [name]).fetchall(),
                            serialise=True, guard=False)
                        done[name] = "inlined rows written out"
                        d["small_files"] = d.get("small_files", 0) + 1
                    if files_limit and d.get("small_files", 0) > files_limit:
                        self.transaction(lambda cur, name=name: cur.execute(
                            "CALL ducklake_merge_adjacent_files('lake', ?, max_file_size => ?)",
                            [name, self.settings.compact_file_bytes]).fetchall())
                        done[name] = (done[name] + ", " if name in done else "") + f"{d['small_files']} small files merged"
        except (duckdb.Error, CommitConflict) as e:
            log.warning("compaction left for later: %s", e)
        return done


    def maintain(self, retention: str | None = None) -> dict[str, Any]:
        """Compact small files, then forget snapshots (and delete files) older than the retention."""
        retention = retention or self.settings.snapshot_retention
        cur = self.cursor()
        before = cur.execute("SELECT count(*) FROM ducklake_list_files('lake', 'configurations')").fetchone()[0]
        with self.merge_guard(exclusive=True):  # waits for commits under way (SQLite catalogs)
            self.transaction(lambda c: c.execute("CALL ducklake_merge_adjacent_files('lake')").fetchall())
        cur.execute(f"CALL ducklake_expire_snapshots('lake', older_than => now() - INTERVAL {quote(retention)})")
        cur.execute(f"CALL ducklake_cleanup_old_files('lake', older_than => now() - INTERVAL {quote(retention)})")
        cur.execute(f"CALL ducklake_delete_orphaned_files('lake', older_than => now() - INTERVAL {quote(retention)})")
        after = cur.execute("SELECT count(*) FROM ducklake_list_files('lake', 'configurations')").fetchone()[0]
        return {"files_before": before, "files_after": after, "retention": retention}


_STORES: OrderedDict[tuple[int, str, str], TableStore] = OrderedDict()
_STORES_LOCK = threading.Lock()
_STORES_KEPT = 8


def open_store(url: str, root: str, local: bool, settings: Settings) -> TableStore:
    """The process's store for a lake: every ``Lake`` of one URL and settings shares one DuckDB
    instance (extensions loaded, catalog attached, views made once), so opening a lake again
    costs microseconds instead of a connection. Keyed by process too: a DuckDB instance must
    not cross a fork. The least recently opened beyond a few are dropped from the cache (their
    instance closes when the last ``Lake`` using it goes)."""
    key = (os.getpid(), url, settings.model_dump_json())
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is not None and store.still_current():
            _STORES.move_to_end(key)
            store._recheck_missing = True  # another process may have made a table since
            return store
        store = TableStore(url, root, local, settings)
        _STORES[key] = store
        while len(_STORES) > _STORES_KEPT:
            _STORES.popitem(last=False)
        return store


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    try:
        cur.execute("ROLLBACK")
    except duckdb.Error:
        pass  # a failed COMMIT has already ended the transaction


def _retryable(e: duckdb.Error) -> bool:
    text = str(e).lower()
    return isinstance(e, duckdb.TransactionException) or any(s in text for s in RETRYABLE)


def arrow_rows(cur: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]],
               schema: pa.Schema | None = None) -> None:
    """Insert Python rows into a lake table through Arrow (typed by the table's schema)."""
    if not rows:
        return
    tab = pa.Table.from_pylist(rows, schema=schema or TABLES[table])
    cur.register("_rows", tab)
    try:
        cur.execute(f"INSERT INTO lake.{table} SELECT * FROM _rows")
    finally:
        cur.unregister("_rows")
