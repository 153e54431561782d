"""DuckDB's signed extensions, loaded from the files their PyPI packages ship.

DuckDB cannot download extensions on machines without its repository, and a lake must open
the same way everywhere: the ``duckdb-extension-<name>`` packages pinned in ``pyproject.toml``
carry the signed builds for this DuckDB version.  DuckDB's signature check stays on.
"""
from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

import duckdb

from mliplake.core.sql import quote

PACKAGES = {
    "ducklake": "duckdb_extension_ducklake",
    "httpfs": "duckdb_extension_httpfs",
    "sqlite_scanner": "duckdb_extension_sqlite_scanner",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
}


@cache
def extension_path(name: str) -> str:
    """The extension file of ``name`` for the installed DuckDB."""
    try:
        pkg = importlib.import_module(PACKAGES[name])
    except (KeyError, ImportError):
        raise RuntimeError(f"DuckDB extension {name!r} is not installed "
                           f"(pip install duckdb-extension-{name.replace('_', '-')}=={duckdb.__version__})") from None
    files = sorted(Path(pkg.__file__).parent.glob(f"extensions/v{duckdb.__version__}/{name}.duckdb_extension"))
    if not files:
        raise RuntimeError(f"the {PACKAGES[name]} package has no build of {name} for DuckDB {duckdb.__version__}")
    return str(files[0])


def load_sql(*names: str) -> list[str]:
    """``LOAD`` statements for the extensions (for a connection made elsewhere, e.g. a sandbox)."""
    return [f"LOAD {quote(extension_path(n))}" for n in names]


def load(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    for stmt in load_sql(*names):
        con.execute(stmt)
