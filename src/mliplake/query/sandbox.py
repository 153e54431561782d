"""One untrusted SQL SELECT over DuckDB views, with hard limits.

The SQL comes from the network and is assumed hostile.  Invariants:

* Parsing.  :func:`check_query` accepts exactly one SELECT.  DuckDB parses it
  (``json_serialize_sql``) and the syntax tree is walked: every table reference
  must be unqualified and name an allowed view or a CTE in scope where it is
  used (scoping as DuckDB binds it: a CTE sees only the CTEs before it, itself
  only in the recursive arm of a recursive CTE); every table function must be
  on :data:`TABLE_FUNCTIONS` (range, generate_series, unnest: nothing that
  reads files or lists settings, secrets, extensions or databases); scalar
  functions that expose the environment or state are refused by name or prefix
  (:data:`DENIED_FUNCTIONS`, :data:`DENIED_PREFIXES`); catalog- or
  schema-qualified function calls, ``SHOW``/``SHOW TABLES`` and unknown kinds
  of table reference are refused.  Replacement scans (``FROM 'x.parquet'``)
  are table references whose name is not allowed, so they are refused too.
* Process.  The query runs in a worker process from a small module-level pool
  (``MLIPLAKE_SQL_WORKERS``, default 2; further requests queue).  A worker is
  a fresh interpreter (fork+exec, as multiprocessing's ``spawn`` does: nothing
  of the parent's DuckDB threads or state is inherited) that loads this file
  by path and talks over a socket with multiprocessing's ``Connection``.  Not
  ``multiprocessing.get_context("spawn")`` itself: its children re-run the
  parent's ``__main__`` script, which fails (or starts a second server) when
  that script has no ``if __name__ == "__main__"`` guard, and would import the
  whole package where this module needs only DuckDB and pyarrow.  A worker keeps
  its connection while the setup and the DuckDB limits stay the same, so a
  warm query costs milliseconds.  The parent waits ``timeout`` (the worker's own
  timer calls ``con.interrupt()`` then) plus :data:`GRACE` seconds, then
  SIGKILLs the worker and replaces it: scalar and list work that DuckDB does not
  interrupt cannot outlive the limit.  A worker that dies (segfault, OOM kill)
  gives a :class:`SandboxError` and is replaced; other requests go on.  A worker
  that hit the time or the memory limit is replaced too, so none carries the
  state of an interrupted or failed allocation into the next query.
* Memory.  DuckDB's ``memory_limit`` bounds its buffer manager only (a
  ``list_sort(range(0, 200000000))`` goes far past it), so the worker's data
  segment is capped with ``RLIMIT_DATA`` (private writable mappings: the heap
  and mmap'd arenas, not the read-only code or PROT_NONE reservations of
  allocators, which ``RLIMIT_AS`` would count): twice ``memory``, plus twice
  ``max_bytes`` for the result, plus :data:`BASE_BYTES`.  DuckDB then fails the
  allocation cleanly: "SQL: out of memory (limit ...)".
* Files.  After the trusted setup the connection gets
  ``enable_external_access=false`` and then ``lock_configuration=true``, with
  extension autoloading and Python replacement scans off.  DuckLake tables do
  NOT read with external access off (their Parquet files are opened at query
  time), so a setup that attaches a DuckLake catalog must itself run
  ``SET allowed_directories = ['<data path>/']``: those files stay readable by
  the views, and the query cannot name them because every file-reading
  function is refused by the allow-list above.  DuckDB adds its temp directory
  to the allowed directories, so that is a fresh private folder per worker
  (made by the parent, removed with the worker, never ``<cwd>/.tmp``); spilling
  there is capped at ``memory`` by ``max_temp_directory_size``.
* Results.  Streamed in Arrow batches (with a ``LIMIT max_rows + 1`` on the
  relation, so DuckDB stops early), refused as soon as the rows exceed
  ``max_rows`` or the bytes ``max_bytes``, and sent back as Arrow IPC bytes.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import multiprocessing.connection as mpc
import os
import queue
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

__all__ = ["Limits", "SandboxError", "SetupError", "check_query", "run", "shutdown"]

TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
DENIED_FUNCTIONS = frozenset({
    "current_setting", "getenv", "getvariable", "which_secret", "query", "query_table", "glob", "sniff_csv",
    "nextval", "currval", "setseed", "sleep_ms", "write_log", "checkpoint", "force_checkpoint",
    "json_execute_serialized_sql", "col_description", "obj_description", "shobj_description",
    "get_block_size", "parse_duckdb_log_message", "current_query", "current_database", "current_catalog",
    "current_schema", "current_schemas", "in_search_path",
})
DENIED_PREFIXES = ("read_", "parquet_", "duckdb_", "pragma_", "ducklake_", "sqlite_", "postgres_", "pg_",
                   "iceberg_", "delta_", "mysql_", "http", "s3_", "enable_", "disable_", "icu_", "arrow_",
                   "pandas_", "python_", "test_", "json_execute")
# kinds of table reference that may appear; anything new in a later DuckDB is refused until looked at
TABLE_REFS = frozenset({"BASE_TABLE", "TABLE_FUNCTION", "JOIN", "SUBQUERY", "EXPRESSION_LIST", "EMPTY", "PIVOT",
                        "SHOW_REF"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

MAX_SQL_CHARS = 100_000
GRACE = 2.0  # seconds after con.interrupt() before the worker is killed
SETUP_TIMEOUT = 120.0  # trusted setup (ATTACH, views) may read a remote catalog
BASE_BYTES = 1 << 30  # interpreter, DuckDB, pyarrow, thread stacks
BATCH_ROWS = 2048


class SandboxError(ValueError):
    """What was wrong with the query, worded for the user who sent it."""


@dataclass(frozen=True)
class Limits:
    timeout: float = 30.0
    max_rows: int = 100_000
    max_bytes: int = 256 * 2**20
    memory: str = "2GB"
    threads: int = 2


# ---------------------------------------------------------------- checking

_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def _serialize(sql: str) -> tuple[list[duckdb.Statement], str]:
    """Statements and the JSON syntax tree, from one shared single-threaded connection
    (a connection per call costs ~15 ms; one thread: no DuckDB worker threads in the parent)."""
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect(":memory:", config={"threads": "1", "enable_external_access": "false",
                                                         "autoinstall_known_extensions": "false"})
        stmts = _parser.extract_statements(sql)
        tree = _parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0] if len(stmts) == 1 else ""
    return stmts, tree


def check_query(sql: str, allowed: set[str]) -> str:
    """The single SELECT statement in ``sql``, or SandboxError saying what is not allowed."""
    if len(sql) > MAX_SQL_CHARS:
        raise SandboxError(f"SQL: the query is longer than {MAX_SQL_CHARS} characters")
    try:
        stmts, tree = _serialize(sql)
    except duckdb.Error as e:
        raise SandboxError(f"SQL: {e}") from None
    if len(stmts) != 1:
        raise SandboxError(f"SQL: exactly one statement, please (got {len(stmts)})")
    if stmts[0].type != duckdb.StatementType.SELECT:
        raise SandboxError(f"SQL: only SELECT queries may run here, not {stmts[0].type.name}")
    try:
        ast = json.loads(tree)
    except RecursionError:
        raise SandboxError("SQL: the query is nested too deeply") from None
    if ast.get("error") and "Only SELECT" in str(ast.get("error_message")):  # PRAGMA parses as a SELECT
        raise SandboxError("SQL: only SELECT queries may run here")
    if ast.get("error"):
        raise SandboxError(f"SQL: {ast.get('error_message') or ast.get('error_type') or 'cannot be checked'}")
    _walk(ast["statements"], {a.lower() for a in allowed})
    return stmts[0].query


def _walk(root: Any, allowed: set[str]) -> None:
    """Every node of the tree, each with the CTE names visible where it stands.
    Iterative: a hostile query may nest deeper than Python's recursion limit."""
    stack: list[tuple[Any, frozenset[str]]] = [(root, frozenset())]
    while stack:
        node, ctes = stack.pop()
        if isinstance(node, list):
            stack.extend((item, ctes) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        _check_node(node, ctes, allowed)
        if node.get("type") == "RECURSIVE_CTE_NODE":
            # the recursive arm binds the CTE's own name; the anchor binds it to the catalog
            stack.append((node.get("left"), ctes))
            stack.append((node.get("right"), ctes | {str(node.get("cte_name", "")).lower()}))
            stack.extend((v, ctes) for k, v in node.items() if k not in ("left", "right"))
            continue
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict) and cte_map.get("map"):
            ctes = _push_ctes(cte_map["map"], ctes, stack)
        stack.extend((v, ctes) for k, v in node.items() if k != "cte_map")


def _push_ctes(entries: list[dict[str, Any]], ctes: frozenset[str],
               stack: list[tuple[Any, frozenset[str]]]) -> frozenset[str]:
    """Each CTE body sees only the CTEs before it (DuckDB binds a later or its own name to the
    catalog); the query after the WITH sees them all."""
    for entry in entries:
        name = str(entry.get("key", ""))
        if not _IDENT.fullmatch(name):
            raise SandboxError(f"SQL: CTE name {name!r} must be a plain identifier")
        stack.append((entry.get("value"), ctes))
        ctes = ctes | {name.lower()}
    return ctes


def _check_node(node: dict[str, Any], ctes: frozenset[str], allowed: set[str]) -> None:
    kind = node.get("type")
    if kind == "BASE_TABLE":
        _check_table(node, ctes, allowed)
    elif kind == "TABLE_FUNCTION":
        _check_table_function(node.get("function") or {})
    elif kind == "SHOW_REF" and (node.get("query") is None or node.get("table_name")):
        raise SandboxError("SQL: SHOW is not allowed here")  # SHOW TABLES lists every attached catalog
    elif "sample" in node and "alias" in node and "class" not in node and "modifiers" not in node \
            and kind not in TABLE_REFS:  # a kind of table reference unknown when this was written
        raise SandboxError(f"SQL: {str(kind).lower().replace('_', ' ')} is not allowed here")
    if isinstance(node.get("function_name"), str) and "class" in node:  # a scalar, aggregate or window call
        _check_function(node)


def _check_table(node: dict[str, Any], ctes: frozenset[str], allowed: set[str]) -> None:
    parts = [node.get("catalog_name") or "", node.get("schema_name") or "", node.get("table_name") or ""]
    name = parts[2].lower()
    if not parts[0] and not parts[1] and (name in allowed or name in ctes):
        return
    shown = ".".join(p for p in parts if p)
    raise SandboxError(f"SQL: table {shown!r} is not available; tables: {', '.join(sorted(allowed))}")


def _check_table_function(fn: dict[str, Any]) -> None:
    name = str(fn.get("function_name", "")).lower()
    if fn.get("catalog") or fn.get("schema") or name not in TABLE_FUNCTIONS:
        raise SandboxError(f"SQL: function {_qualified(fn)} is not allowed here")


def _check_function(fn: dict[str, Any]) -> None:
    name = str(fn["function_name"]).lower()
    # DuckDB itself qualifies desugared calls ([1, 2] is main.list_value); any other schema or a
    # catalog would reach functions and macros of attached databases
    if fn.get("catalog") or (fn.get("schema") or "main") != "main" \
            or name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES):
        raise SandboxError(f"SQL: function {_qualified(fn)} is not allowed here")


def _qualified(fn: dict[str, Any]) -> str:
    return ".".join(str(p) for p in (fn.get("catalog"), fn.get("schema"), fn.get("function_name")) if p)


# ---------------------------------------------------------------- the worker process

def _memory_bytes(memory: str) -> int:
    """DuckDB's spelling of sizes: KB = 1000 bytes, KiB = 1024."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b|bytes)?\s*", memory, re.IGNORECASE)
    if not m:
        raise ValueError(f"memory limit {memory!r}: expected a size such as '2GB'")
    unit = (m.group(2) or "b").lower()
    scale = 1 if unit in ("b", "bytes") else (1024 if "i" in unit else 1000) ** ("kmgt".index(unit[0]) + 1)
    return int(float(m.group(1)) * scale)


def _data_budget(limits: Limits) -> int:
    return 2 * _memory_bytes(limits.memory) + 2 * limits.max_bytes + BASE_BYTES


def _limit_data(budget: int) -> None:
    """Soft limit only: the next request may need a larger one, and SQL cannot call setrlimit."""
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = budget if hard == resource.RLIM_INFINITY else min(budget, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _die_with_parent(tmpdir: str) -> None:
    """A worker must not outlive the server that started it, even in a query DuckDB does not
    interrupt.  Not PR_SET_PDEATHSIG: that fires when the *thread* that started the worker ends."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        shutil.rmtree(tmpdir, ignore_errors=True)  # nobody else will
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _open(setup: list[str], tmpdir: str, limits: Limits) -> duckdb.DuckDBPyConnection:
    """A connection with the trusted setup done, then locked down."""
    fixed = {"memory_limit": limits.memory, "threads": str(limits.threads), "temp_directory": tmpdir,
            "max_temp_directory_size": limits.memory}
    con = duckdb.connect(":memory:", config=fixed)
    try:
        for stmt in setup:
            con.execute(stmt)
        # again after the setup, which may have changed them; the temp directory before external
        # access goes off, because DuckDB then adds it to the allowed directories
        for name, value in [*fixed.items(), ("python_enable_replacements", "false"),
                            ("autoinstall_known_extensions", "false"), ("autoload_known_extensions", "false"),
                            ("allow_community_extensions", "false"), ("enable_external_access", "false"),
                            ("lock_configuration", "true")]:
            con.execute(f"SET {name} = '{value.replace(chr(39), chr(39) * 2)}'")
    except BaseException:
        con.close()
        raise
    return con


def _worker_main(fd: int, tmpdir: str) -> None:
    _serve(mpc.Connection(fd), tmpdir)


def _serve(conn: mpc.Connection, tmpdir: str) -> None:
    """Worker main loop: (setup, sql, limits) in; ("started",) then a result or an error out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the server's terminal is the parent's business
    _die_with_parent(tmpdir)
    cached: tuple[tuple[Any, ...], duckdb.DuckDBPyConnection] | None = None
    with contextlib.suppress(EOFError, OSError):  # the parent went away: so does the worker
        while True:
            setup, sql, fields = conn.recv()
            limits = Limits(**fields)
            _limit_data(_data_budget(limits))
            key = (tuple(setup), limits.memory, limits.threads)
            if cached is None or cached[0] != key:
                if cached is not None:
                    cached[1].close()
                    cached = None
                try:
                    cached = (key, _open(setup, tmpdir, limits))
                except (duckdb.Error, MemoryError) as e:
                    conn.send(("setup", f"{type(e).__name__}: {e}"))
                    continue
            conn.send(("started",))
            reply = _execute(cached[1], sql, limits)
            if reply[0] == "ok":
                conn.send(("ok",))
                conn.send_bytes(reply[1])
            else:
                conn.send(reply)


def _execute(con: duckdb.DuckDBPyConnection, sql: str, limits: Limits) -> tuple[str, Any]:
    """("ok", Arrow IPC bytes), or (kind, message) with kind "error", "timeout" or "memory"."""
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(limits.timeout, stop)
    timer.daemon = True
    timer.start()
    try:
        return "ok", _stream(con, sql, limits, fired)
    except Exception as e:  # noqa: BLE001 - every failure goes back to the parent as a message
        text = str(e)
        if fired.is_set():
            return "timeout", ""
        if isinstance(e, (duckdb.OutOfMemoryException, MemoryError)) or "bad_alloc" in text \
                or "Out of Memory" in text:
            return "memory", f"SQL: out of memory (limit {limits.memory})"
        if isinstance(e, SandboxError):
            return "error", text
        return "error", f"SQL: {text}"
    finally:
        timer.cancel()


def _stream(con: duckdb.DuckDBPyConnection, sql: str, limits: Limits, fired: threading.Event) -> pa.Buffer:
    # the LIMIT on the relation, not pasted into the text: DuckDB stops early (a sort becomes a top-N)
    reader = con.sql(sql).limit(limits.max_rows + 1).to_arrow_reader(BATCH_ROWS)
    sink = pa.BufferOutputStream()
    rows = size = 0
    with pa.ipc.new_stream(sink, reader.schema) as writer:
        for batch in reader:
            if fired.is_set():
                raise TimeoutError
            rows += batch.num_rows
            size += batch.nbytes
            if rows > limits.max_rows:
                raise SandboxError(f"SQL: more than {limits.max_rows} rows; add a LIMIT or aggregate")
            if size > limits.max_bytes:
                raise SandboxError(f"SQL: result larger than {limits.max_bytes / 2**20:g} MB")
            writer.write_batch(batch)
    return sink.getvalue()


# ---------------------------------------------------------------- the pool, in the parent

# run by the worker's fresh interpreter: this file by path, not the package (whose __init__ imports
# the whole lake), registered in sys.modules because dataclasses look their module up there
_BOOT = """import importlib.util, sys
spec = importlib.util.spec_from_file_location("_mliplake_sql_worker", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
module._worker_main(int(sys.argv[2]), sys.argv[3])
"""


class _Worker:
    """One worker process, its socket and its private DuckDB temp folder."""

    def __init__(self) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix="mliplake-sql-")
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, os.path.abspath(__file__), str(theirs.fileno()), self.tmpdir],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                # pyarrow's default mimalloc pool maps a 1 GiB arena on first use, which RLIMIT_DATA counts
                # (pa.set_memory_pool does not reach the IPC writer's allocations; the variable does)
                env={**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"})
            self.conn = mpc.Connection(ours.detach())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def data_bytes(self) -> int:
        """The worker's data segment now: allocators keep what they once mapped, so a worker that
        served a larger budget may already be past a smaller one."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                line = next(line for line in f if line.startswith("VmData:"))
        except (OSError, StopIteration):
            return 0
        return int(line.split()[1]) * 1024

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.conn.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def died(self) -> str:
        """Why the process is gone, for the user."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        code = self.proc.returncode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = "; it probably ran out of memory" if -code == signal.SIGKILL else ""
            return f"SQL: the query process died ({name}){hint}"
        return f"SQL: the query process died (exit code {code})"

    def request(self, setup: list[str], sql: str, limits: Limits) -> tuple[pa.Table, bool]:
        """The result, and whether this worker may serve again."""
        try:
            self.conn.send((list(setup), sql, dataclasses.asdict(limits)))
        except OSError:
            raise _Retire(self.died()) from None
        first = self._reply(max(SETUP_TIMEOUT, limits.timeout), "setup")
        if first[0] == "setup":
            raise SetupError(f"sandbox setup failed: {first[1]}")
        reply = self._reply(limits.timeout + GRACE, "query", limits)
        if reply[0] == "ok":
            data = self.conn.recv_bytes()
            return pa.ipc.open_stream(data).read_all(), True
        if reply[0] == "timeout":
            raise _Retire(_time_message(limits))
        if reply[0] == "memory":
            raise _Retire(reply[1])
        raise SandboxError(reply[1])

    def _reply(self, wait: float, stage: str, limits: Limits | None = None) -> tuple[Any, ...]:
        if not self.conn.poll(wait):
            raise _Retire(_time_message(limits) if limits else f"sandbox {stage} took more than {wait:g} s")
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            raise _Retire(self.died()) from None


class SetupError(RuntimeError):
    """The trusted setup failed in the worker: the server's fault, not the user's."""


class _Retire(Exception):
    """The worker must be replaced; the message is for the user."""


def _time_message(limits: Limits) -> str:
    return f"SQL: stopped after {limits.timeout:g} s (time limit)"


class _Pool:
    """N warm workers; a request takes one (or waits), a broken one is replaced at once."""

    def __init__(self, size: int) -> None:
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        for _ in range(size):
            self._idle.put(self._start())

    def _start(self) -> _Worker:
        worker = _Worker()
        with self._lock:
            self._all.add(worker)
        return worker

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        with self._lock:
            self._all.discard(worker)
        return self._start()

    def run(self, setup: list[str], sql: str, limits: Limits) -> pa.Table:
        worker = self._idle.get()
        keep = False
        try:
            if not worker.alive() or worker.data_bytes() > _data_budget(limits) // 2:
                worker = self._replace(worker)
            table, keep = worker.request(setup, sql, limits)
            return table
        except (SandboxError, SetupError):
            keep = True  # the worker answered and waits for the next request
            raise
        except _Retire as e:
            raise SandboxError(str(e)) from None
        finally:
            self._release(worker, keep)

    def _release(self, worker: _Worker, keep: bool) -> None:
        if not (keep and worker.alive()):
            try:
                worker = self._replace(worker)
            except OSError:  # no process or folder now: the next request tries again
                pass
        self._idle.put(worker)

    def workers(self) -> list[_Worker]:
        with self._lock:
            return list(self._all)

    def close(self) -> None:
        for worker in self.workers():
            worker.kill()


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            from mliplake.settings import get_settings

            _pool = _Pool(max(1, get_settings().sql_workers))
        return _pool


def shutdown() -> None:
    """Stop the workers (a later run() starts new ones); also at exit."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


atexit.register(shutdown)


def run(setup: list[str], sql: str, allowed: set[str], limits: Limits = Limits()) -> pa.Table:
    """Run one untrusted SELECT over the views that ``setup`` (trusted SQL) creates.

    Raises SandboxError for the user: refused SQL, DuckDB's errors, a limit hit, a crashed worker.
    SetupError (a RuntimeError): the setup failed (the server's fault, not the user's).
    """
    query = check_query(sql, allowed)
    _memory_bytes(limits.memory)  # a bad size is the caller's bug: fail here, not in the worker
    return _get_pool().run(list(setup), query, limits)
