"""The untrusted-SQL sandbox: real worker processes, real DuckDB, no mocks."""
from __future__ import annotations

import glob
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mliplake.query import sandbox
from mliplake.query.sandbox import Limits, SandboxError, check_query

ALLOWED = {"numbers", "elements", "structures"}
SLACK = 4.0  # seconds past the limit a stopped query may take on a busy two-core machine


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sandbox")
    (root / "data").mkdir()
    (root / "private").mkdir()
    data = root / "data" / "structures.parquet"
    pq.write_table(pa.table({"id": list(range(50)), "energy": [-1.5 * i for i in range(50)]}), data)
    secret = root / "private" / "secret.csv"
    secret.write_text("user,token\nalice,hunter2\n")
    return {"root": root, "data": data, "secret": secret}


@pytest.fixture(scope="module")
def setup(files) -> list[str]:
    return [
        "CREATE TEMP VIEW numbers AS SELECT range AS n, range % 10 AS k FROM range(100000)",
        "CREATE TEMP VIEW elements AS SELECT * FROM (VALUES ('H', 1), ('O', 8)) AS t(symbol, z)",
        f"CREATE TEMP VIEW structures AS SELECT * FROM read_parquet('{files['data']}')",
        f"SET allowed_directories = ['{files['data'].parent}/']",  # the view's files, nothing else
    ]


def _run(setup: list[str], sql: str, **limits) -> pa.Table:
    return sandbox.run(setup, sql, ALLOWED, Limits(**limits))


def _still_works(setup: list[str]) -> None:
    assert _run(setup, "SELECT count(*) AS n FROM elements").column("n").to_pylist() == [2]


def test_select_works_and_stays_warm(setup):
    sql = """SELECT k, count(*) AS c, (SELECT sum(energy) FROM structures) AS e
             FROM numbers JOIN elements ON k = z GROUP BY k ORDER BY k"""
    for _ in range(3):  # the later ones run on a warm worker and a cached connection
        table = _run(setup, sql)
        assert table.to_pylist() == [{"k": 1, "c": 10000, "e": -1837.5}, {"k": 8, "c": 10000, "e": -1837.5}]
    with_cte = "WITH h AS (SELECT * FROM elements WHERE symbol = 'H') SELECT z FROM h"
    assert _run(setup, with_cte).column("z").to_pylist() == [1]
    assert _run(setup, "SELECT * FROM range(3) AS t(x), unnest([7]) AS u(y)").num_rows == 3


@pytest.mark.parametrize("sql, message", [
    ("SELECT * FROM read_parquet('{data}')", "function read_parquet is not allowed here"),
    ("SELECT * FROM read_csv('{secret}')", "function read_csv is not allowed here"),
    ("SELECT * FROM read_text('{secret}')", "function read_text is not allowed here"),
    ("SELECT * FROM read_blob('{secret}')", "function read_blob is not allowed here"),
    ("SELECT * FROM glob('{root}/*')", "function glob is not allowed here"),
    ("SELECT * FROM parquet_metadata('{data}')", "function parquet_metadata is not allowed here"),
    ("SELECT * FROM numbers WHERE n IN (SELECT 1 FROM sniff_csv('{secret}'))", "function sniff_csv is not"),
    ("SELECT * FROM '{data}'", "table '{data}' is not available; tables: elements, numbers, structures"),
    ("FROM '{secret}'", "table '{secret}' is not available"),
    ("SELECT * FROM lake.configurations", "table 'lake.configurations' is not available; tables: elements,"),
    ("SELECT * FROM temp.main.numbers", "table 'temp.main.numbers' is not available"),
    ("SELECT * FROM duckdb_settings()", "function duckdb_settings is not allowed here"),
    ("SELECT * FROM duckdb_secrets()", "function duckdb_secrets is not allowed here"),
    ("SELECT current_setting('s3_secret_access_key')", "function current_setting is not allowed here"),
    ("SELECT n FROM numbers ORDER BY getvariable('x')", "function getvariable is not allowed here"),
    ("SELECT * FROM query_table('numbers')", "function query_table is not allowed here"),
    ("SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))", "json_execute_serialized_sql"),
    ("SELECT system.main.abs(1)", "function system.main.abs is not allowed here"),
    ("SHOW TABLES", "SHOW is not allowed here"),
    ("ATTACH '{secret}' AS s", "only SELECT queries may run here, not ATTACH"),
    ("COPY numbers TO '{root}/out.csv'", "only SELECT queries may run here, not COPY"),
    ("SET threads = 64", "only SELECT queries may run here, not SET"),
    ("PRAGMA database_list", "only SELECT queries may run here"),
    ("SHOW databases", "SHOW is not allowed here"),
    ("DESCRIBE", "SHOW is not allowed here"),
    ("DESCRIBE SELECT * FROM read_text('{secret}')", "function read_text is not allowed here"),
    ("INSTALL httpfs", "only SELECT queries may run here"),
    ("LOAD httpfs", "only SELECT queries may run here, not LOAD"),
    ("SELECT 1; SELECT * FROM read_text('{secret}')", "exactly one statement, please (got 2)"),
    ("SELEC 1", "Parser Error"),
    # CTE names are visible only where DuckDB binds them to the CTE; elsewhere they would reach the catalog
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", "table 'b' is not available"),
    ("WITH b AS (SELECT * FROM b) SELECT * FROM b", "table 'b' is not available"),
    ("SELECT * FROM (WITH s AS (SELECT 1) SELECT * FROM s), s", "table 's' is not available"),
    ("WITH \"x.parquet\" AS (SELECT 1) SELECT * FROM \"x.parquet\"", "must be a plain identifier"),
])
def test_refused(setup, files, sql, message):
    paths = {k: str(v) for k, v in files.items()}
    with pytest.raises(SandboxError) as err:
        _run(setup, sql.format(**paths))
    assert str(err.value).startswith("SQL: ")
    assert message.format(**paths) in str(err.value)


def test_check_query_returns_the_statement():
    assert check_query("SELECT 1 AS x;", set()).strip().rstrip(";") == "SELECT 1 AS x"
    recursive = "WITH RECURSIVE r AS (SELECT 1 AS x UNION ALL SELECT x + 1 FROM r WHERE x < 3) SELECT * FROM r"
    assert check_query(recursive, set()) == recursive
    assert check_query("DESCRIBE Numbers", {"numbers"})


def test_second_layer_without_the_check(setup, files):
    """Were the syntax check ever fooled, the worker itself reads no other file and changes no setting."""
    pool = sandbox._get_pool()
    with pytest.raises(SandboxError, match="disabled by configuration"):
        pool.run(setup, f"SELECT * FROM read_text('{files['secret']}')", Limits())
    with pytest.raises(SandboxError, match="lock"):
        pool.run(setup, "SET enable_external_access = true", Limits())
    settings = pool.run(setup, "SELECT current_setting('allow_unsigned_extensions') AS u, "
                               "current_setting('enable_external_access') AS e", Limits())
    assert settings.to_pylist() == [{"u": False, "e": False}]
    _still_works(setup)


STOPPED = r"^SQL: stopped after 3 s \(time limit\)$"
STOPPED_OR_OOM = r"^SQL: (stopped after 3 s \(time limit\)|out of memory \(limit 512MB\))$"


@pytest.mark.parametrize("sql, message", [
    # scalar work that DuckDB does not interrupt (1e8 does not bind in DuckDB 1.5: range wants BIGINTs)
    ("SELECT len(range(0, 100000000)::VARCHAR)", STOPPED_OR_OOM),
    ("SELECT len(list_sort(range(0, 200000000)))", STOPPED_OR_OOM),  # lists far past DuckDB's memory_limit
    ("SELECT levenshtein(repeat('ab', 30000), repeat('ba', 30000))", STOPPED),  # CPU only: must be killed
], ids=["varchar", "list_sort", "levenshtein"])
def test_runaway_query_is_stopped(setup, sql, message):
    _still_works(setup)
    start = time.monotonic()
    with pytest.raises(SandboxError, match=message):
        _run(setup, sql, timeout=3, memory="512MB", max_bytes=16 * 2**20)
    assert time.monotonic() - start < 3 + sandbox.GRACE + SLACK
    _still_works(setup)


def test_allocation_past_the_limit_fails_cleanly(setup):
    with pytest.raises(SandboxError, match=r"^SQL: out of memory \(limit 256MB\)$"):
        _run(setup, "SELECT len(list_sort(range(0, 200000000)))", timeout=20, memory="256MB", max_bytes=2**20)
    _still_works(setup)


def test_result_caps(setup):
    with pytest.raises(SandboxError, match=r"^SQL: result larger than 16 MB$"):
        _run(setup, "SELECT repeat('x', 1000000) AS s FROM range(100)", max_bytes=16 * 2**20)
    with pytest.raises(SandboxError, match=r"^SQL: more than 1000 rows; add a LIMIT or aggregate$"):
        _run(setup, "SELECT * FROM numbers", max_rows=1000)
    assert _run(setup, "SELECT * FROM numbers LIMIT 1000", max_rows=1000).num_rows == 1000
    # 6 GB in 20 rows: refused (by the memory cap while DuckDB builds the vector, or by the
    # time limit), never returned
    with pytest.raises(SandboxError, match=r"result larger than|out of memory|time limit"):
        _run(setup, "SELECT repeat('x', 300000000) AS s FROM range(20)", timeout=5, memory="512MB",
             max_bytes=16 * 2**20)
    _still_works(setup)


def test_spill_stays_in_the_private_folder(setup, tmp_path, monkeypatch):
    sandbox.shutdown()
    monkeypatch.chdir(tmp_path)  # new workers start here: DuckDB's default temp folder would be ./.tmp
    _still_works(setup)
    folders = [w.tmpdir for w in sandbox._get_pool().workers()]
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for folder in folders:
                seen.update(glob.glob(os.path.join(folder, "*")))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        sql = ("SELECT count(*) AS n FROM "
               "(SELECT DISTINCT n::VARCHAR || 'padpadpadpadpad' || r.range FROM numbers, range(20) AS r)")
        assert _run(setup, sql, memory="100MB").column("n").to_pylist() == [2_000_000]
    finally:
        done.set()
        watcher.join()
    assert seen, "the query was meant to spill"
    assert not (tmp_path / ".tmp").exists()
    assert list(tmp_path.iterdir()) == []
    sandbox.shutdown()
    assert not any(os.path.exists(folder) for folder in folders)


def test_concurrent_callers(setup):
    def one(i: int) -> int:
        return _run(setup, f"SELECT sum(n) AS s FROM numbers WHERE k = {i}").column("s").to_pylist()[0]

    with ThreadPoolExecutor(4) as ex:
        sums = list(ex.map(one, range(4)))
    assert sums == [sum(n for n in range(100000) if n % 10 == i) for i in range(4)]


def test_crashed_worker_is_replaced(setup):
    _still_works(setup)
    pids = [w.proc.pid for w in sandbox._get_pool().workers()]
    errors: list[Exception] = []

    def slow() -> None:
        try:
            _run(setup, "SELECT sum(a.n * b.n) FROM numbers a, numbers b", timeout=30)
        except SandboxError as e:
            errors.append(e)

    caller = threading.Thread(target=slow)
    caller.start()
    time.sleep(1.0)
    for pid in pids:  # the busy worker and the idle one
        os.kill(pid, signal.SIGKILL)
    caller.join(10)
    assert not caller.is_alive()
    assert len(errors) == 1 and "query process died (SIGKILL)" in str(errors[0])
    _still_works(setup)
    _still_works(setup)
    assert not set(pids) & {w.proc.pid for w in sandbox._get_pool().workers()}


def test_setup_error_is_the_servers(setup):
    with pytest.raises(sandbox.SetupError, match="no_such_table"):
        sandbox.run(["CREATE TEMP VIEW v AS SELECT * FROM no_such_table"], "SELECT * FROM v", {"v"})
    _still_works(setup)


def _ducklake_extension() -> str | None:
    try:
        import duckdb_extension_ducklake
    except ImportError:
        return None
    found = glob.glob(os.path.join(os.path.dirname(duckdb_extension_ducklake.__file__), "extensions",
                                   f"v{duckdb.__version__}", "ducklake.duckdb_extension"))
    return found[0] if found else None


def test_ducklake_views_with_external_access_off(tmp_path):
    ext = _ducklake_extension()
    if ext is None:
        pytest.skip("duckdb-extension-ducklake is not installed")
    meta, data = tmp_path / "meta.ducklake", tmp_path / "lake-data"
    con = duckdb.connect()
    con.execute(f"LOAD '{ext}'")
    con.execute(f"ATTACH 'ducklake:{meta}' AS lake (DATA_PATH '{data}/')")
    con.execute("CREATE TABLE lake.configurations AS SELECT range AS id, range * 0.5 AS energy FROM range(1000)")
    con.close()
    setup = [
        f"LOAD '{ext}'",  # signed: loads with the signature check on (allow_unsigned_extensions stays false)
        f"ATTACH 'ducklake:{meta}' AS lake (DATA_PATH '{data}/', READ_ONLY)",
        "CREATE TEMP VIEW configurations AS SELECT * FROM lake.configurations",
        f"SET allowed_directories = ['{data}/']",  # DuckLake opens its Parquet files at query time
    ]
    allowed = {"configurations"}
    table = sandbox.run(setup, "SELECT count(*) AS n, sum(energy) AS e FROM configurations", allowed)
    assert table.to_pylist() == [{"n": 1000, "e": 249750.0}]
    for sql, message in [("SELECT * FROM lake.configurations", "table 'lake.configurations' is not available"),
                         ("SELECT * FROM ducklake_snapshots('lake')", "function ducklake_snapshots is not"),
                         (f"SELECT * FROM read_parquet('{data}/**/*.parquet')", "function read_parquet is not")]:
        with pytest.raises(SandboxError, match=message):
            sandbox.run(setup, sql, allowed)
    # without the allowed directory the lake's files are out of reach (count(*) alone comes from metadata)
    with pytest.raises(SandboxError, match="disabled by configuration"):
        sandbox.run(setup[:3], "SELECT sum(energy) FROM configurations", allowed)
