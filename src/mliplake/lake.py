"""The lake: one URL decides where everything lives; ``Lake`` is the facade over its layers.

Layout under the lake root (a local folder, or ``s3://bucket/prefix``)::

    catalog.sqlite                      the DuckLake catalog of a local lake (MLIPLAKE_CATALOG elsewhere)
    data/                               the DuckLake data path: Parquet files of the tables
    raw/<deposit_id>/files/<path>       originals, byte for byte, at their paths inside the deposit
    raw/<deposit_id>/SHA256SUMS         their checksums
    raw/<deposit_id>/manifest.json      the manifest as understood
    tables/...                          files that later stages keep (catalogue, training sets, models)
    inbox/                              drop zone watched by the Dagster sensor

The tables (configurations, quarantine, the deposit log, access policies, the audit log) are
DuckLake tables (storage.tables): snapshot isolation, optimistic commits, versions.  Reads go
through a query session (query.session) whose views only show what the lake's principal may see.
"""
from __future__ import annotations

import functools
import json
import os
import re
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import IO, Any

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from mliplake.access import LOCAL_OWNER, AccessError, Principal, Scope, may_manage, visible_datasets
from mliplake.settings import DEFAULT_LAKE, Settings, get_settings
from mliplake.storage.tables import TableStore, open_store

# per TableStore: (the access inputs of a snapshot, {(principal, day): Scope})
_SCOPES: weakref.WeakKeyDictionary[TableStore, tuple[Any, dict[Any, Scope]]] = weakref.WeakKeyDictionary()

DEPOSIT_ID = re.compile(r"^dep-[0-9a-f]{1,16}$")


class NotFound(KeyError):
    """Nothing by that name that the principal may see (the same answer whether it exists or not)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


def default_url() -> str:
    return get_settings().lake


def _storage_options(url: str, settings: Settings) -> dict[str, Any]:
    if url.startswith("s3://"):
        # s3fs reads credentials from the usual AWS variables; the endpoint too, for MinIO / moto.
        # No listings cache: other processes' files must be seen at once.
        opts: dict[str, Any] = {"use_listings_cache": False}
        endpoint = settings.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            opts["endpoint_url"] = endpoint
        return opts
    return {}


def check_deposit_id(deposit_id: str) -> str:
    """A deposit id (or a unique prefix of one), never a path."""
    if not isinstance(deposit_id, str) or not DEPOSIT_ID.match(deposit_id):
        raise NotFound(f"{deposit_id!r} is not a deposit id (dep- and up to 16 hexadecimal digits)")
    return deposit_id


class Lake:
    """A lake at a URL: a local folder (default ``$MLIPLAKE_LAKE`` or ``./lake``) or ``s3://...``.

    ``principal``: who reads through this object (default: the local owner, who sees everything).
    """

    def __init__(self, url: str | os.PathLike | None = None, settings: Settings | None = None,
                 principal: Principal | None = None, **storage_options: Any) -> None:
        self.settings = settings or get_settings()
        url = str(url) if url is not None else self.settings.lake or DEFAULT_LAKE
        if "://" not in url:
            url = str(Path(url).expanduser().resolve())
        self.url = url
        self._fs_options = _storage_options(url, self.settings) | storage_options
        if url.startswith("s3://"):
            # the filesystem (s3fs, botocore: a quarter of a second of imports) is made when a file
            # is first read or written; queries go through DuckDB and never need it
            self.root, self.local = url[len("s3://"):].rstrip("/"), False
        else:
            fs, root = fsspec.core.url_to_fs(url, **self._fs_options)
            self.__dict__["fs"] = fs
            self.root, self.local = root.rstrip("/"), isinstance(fs, LocalFileSystem)
            if self.local:
                fs.makedirs(self.root, exist_ok=True)
        self.principal = principal or LOCAL_OWNER
        self.tables = open_store(self.url, self.root, self.local, self.settings)

    @functools.cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        return fsspec.core.url_to_fs(self.url, **self._fs_options)[0]

    def __repr__(self) -> str:
        return f"Lake({self.url!r})" if self.principal is LOCAL_OWNER else f"Lake({self.url!r}, as {self.principal.name or self.principal.kind})"

    def as_principal(self, principal: Principal) -> Lake:
        """The same lake (same connections) seen by someone else."""
        other = object.__new__(Lake)
        other.__dict__.update(self.__dict__)
        other.principal = principal
        return other

    # ---------------------------------------------------------------- paths

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def raw_dir(self, deposit_id: str) -> str:
        return self.path("raw", check_deposit_id(deposit_id))

    def shard_dir(self, table: str, dataset: str, deposit_id: str) -> str:
        """Where a deposit stages its rows before the commit copies them into the table."""
        return self.path("data", table, f"dataset={dataset}", f"deposit={check_deposit_id(deposit_id)}")

    def uri(self, path: str) -> str:
        """A full URL for a path inside the lake (for DuckDB and for people)."""
        if self.url.startswith("s3://"):
            return f"s3://{path}"
        proto = self.fs.protocol[0] if isinstance(self.fs.protocol, tuple) else self.fs.protocol
        return path if self.local else f"{proto}://{path}"

    # ---------------------------------------------------------------- atomic writes

    @contextmanager
    def atomic_open(self, path: str, durable: bool = True) -> Iterator[IO[bytes]]:
        """A file that appears at ``path`` whole, or not at all (``durable``: and on disk before it
        appears; a file that lives only until a commit copies it needs no fsync)."""
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if self.local:
            # hidden, and not ending in .parquet, so no glob over the lake picks it up
            tmp = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:12]}.tmp"
            try:
                with open(tmp, "wb") as f:
                    yield f
                    if durable:
                        f.flush()
                        os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            # object stores publish an object only when its upload completes
            with self.fs.open(path, "wb") as f:
                yield f

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.atomic_open(path) as f:
            f.write(data)

    def write_json(self, path: str, obj: Any) -> None:
        self.write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())

    def read_json(self, path: str) -> Any:
        with self.fs.open(path, "rb") as f:
            return json.load(f)

    def write_table(self, path: str, table: pa.Table) -> int:
        import io

        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(path, buf.getvalue())
        return buf.tell()

    def put_file(self, local_path: str | Path, path: str) -> None:
        with open(local_path, "rb") as src, self.atomic_open(path) as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)

    # ---------------------------------------------------------------- access

    @staticmethod
    def load_views() -> None:
        """Load the layers that keep tables of their own (catalogue, models): each registers its views with
        :func:`mliplake.query.engine.register_view` when imported, so the query layer never imports them."""
        from mliplake.catalogue import cards  # noqa: F401
        from mliplake.ml import models  # noqa: F401

    def scope(self) -> Scope:
        """What this lake's principal may see now (embargoes are compared with today's date)."""
        if self.principal.sees_everything:
            return Scope(self.principal, None)
        names, policies = self.tables.access_inputs()
        from mliplake.query.engine import visible_relation

        # one scope per snapshot, principal and day: requests reuse it (and the views built for it)
        at, memo = _SCOPES.get(self.tables, (None, {}))
        if at is not names or len(memo) > 1000:
            memo = {}  # another snapshot: the scopes of the last one are done with
            _SCOPES[self.tables] = (names, memo)
        key = (self.principal.cache_key(), date.today())
        scope = memo.get(key)
        if scope is None:
            visible = visible_datasets(names, policies, self.principal) or []
            scope = memo[key] = Scope(self.principal, visible, visible_relation(self, visible) if visible else None)
        return scope

    def policy(self, dataset: str) -> Any:
        return self.tables.policies().get(dataset)

    def set_visibility(self, dataset: str, visibility: str, groups: list[str] | None = None,
                       embargo_until: str | None = None, owner: str | None = None) -> Any:
        """Change who may see a dataset (its owner, a curator or an admin); effective at once."""
        from mliplake.ingest.retract import set_visibility

        return set_visibility(self, dataset, visibility, groups, embargo_until, owner)

    def retract(self, deposit_id: str | None = None, dataset: str | None = None, reason: str = "",
                purge: bool = False) -> list[str]:
        """Take a deposit (or every deposit of a dataset) out of every view at once; see docs/lake.md."""
        from mliplake.ingest.retract import retract

        return retract(self, deposit_id=deposit_id, dataset=dataset, reason=reason, purge=purge)

    def _require_manage(self, dataset: str) -> None:
        if not may_manage(self.policy(dataset), self.principal):
            raise AccessError(f"only the owner of dataset {dataset!r}, a curator or an admin may do that")

    # ---------------------------------------------------------------- deposits

    def deposit(self, paths: list[str | Path] | str | Path, dataset: str | None = None,
                manifest: Any = None, progress: bool | None = False, replace: bool = False) -> Any:
        """Ingest files (and a manifest) as one deposit; returns a :class:`DepositReport`.

        ``replace``: let a deposit whose frames were all quarantined replace a stored version of
        the same files (otherwise the stored version stays and the deposit is refused)."""
        from mliplake.ingest.deposit import deposit

        if not self.principal.can_deposit:
            raise AccessError("this account may not deposit (role depositor, curator or admin needed)")
        if isinstance(paths, (str, Path)):
            paths = [paths]
        return deposit(self, [Path(p) for p in paths], dataset=dataset, manifest=manifest, progress=progress,
                       replace=replace)

    def records(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """Every deposit record the principal may see (of one dataset if given), oldest first
        (retracted ones marked)."""
        s = self.scope()
        if dataset is not None:
            return self.tables.records(f"dataset = ? AND {s.sql_predicate()}", [dataset])
        return self.tables.records(s.sql_predicate())

    def record(self, deposit_id: str) -> dict[str, Any]:
        """One deposit's record, by id or unique prefix."""
        check_deposit_id(deposit_id)
        s = self.scope()
        recs = self.tables.records(f"deposit_id LIKE ? AND {s.sql_predicate()}", [deposit_id + "%"])
        exact = [r for r in recs if r["deposit_id"] == deposit_id]
        if exact or len(recs) == 1:
            return (exact or recs)[0]
        raise NotFound(f"no deposit {deposit_id!r} in {self.url}" if not recs else
                       f"{deposit_id!r} is the prefix of {len(recs)} deposits; give more of it")

    def deposits(self) -> list[dict[str, Any]]:
        """One summary row per deposit."""
        return self.sql("SELECT deposit_id, dataset, status, created_at, frames_read, stored, duplicates, "
                        "quarantined, files FROM deposits ORDER BY created_at, deposit_id").to_arrow_table().to_pylist()

    def datasets(self) -> list[dict[str, Any]]:
        """One row per dataset: deposits, configurations, atoms, elements, labels, licence, visibility."""
        return self.sql("SELECT * FROM datasets ORDER BY dataset").to_arrow_table().to_pylist()

    def data_files(self) -> list[str]:
        """The Parquet files behind the configurations table in the current snapshot."""
        if not self.principal.sees_everything:
            raise AccessError("the lake's files are for admins")
        rows = self.tables.cursor().execute(
            "SELECT data_file FROM ducklake_list_files('lake', 'configurations')").fetchall()
        return sorted(r[0] for r in rows)

    def snapshot(self) -> int:
        """The current version of the lake's tables (training sets record it; time travel reads it)."""
        return self.tables.snapshot()

    def maintain(self, retention: str | None = None) -> dict[str, Any]:
        """Compact small files and delete what no snapshot younger than the retention needs."""
        if not self.principal.sees_everything:
            raise AccessError("maintenance is for admins")
        return self.tables.maintain(retention)

    # ---------------------------------------------------------------- reading tables

    def connection(self) -> Any:
        """A DuckDB cursor of its own, over views showing what the principal may see."""
        from mliplake.query.engine import session

        return session(self)

    def configurations(self, dataset: str | None = None, columns: list[str] | None = None,
                       filter: Any = None) -> pa.Table:
        """Stored configurations as an Arrow table (``filter``: a pyarrow expression)."""
        from mliplake.query.engine import configurations

        table = configurations(self, dataset, columns)
        return table.filter(filter) if filter is not None else table

    def quarantine(self, deposit_id: str) -> pa.Table:
        rec = self.record(deposit_id)
        return self.connection().execute("SELECT * FROM quarantine WHERE deposit_id = ? ORDER BY source_file, "
                                         "frame_index NULLS FIRST", [rec["deposit_id"]]).to_arrow_table()

    def atoms(self, dataset: str | None = None, filter: Any = None, original_keys: bool = False) -> Iterator[Any]:
        """The configurations back as ASE ``Atoms``, labels on a SinglePointCalculator, ``info["config_id"]`` set.

        ``filter``: a filter-language string (docs/query.md) or a pyarrow expression.
        """
        from mliplake.query.atoms import table_to_atoms
        from mliplake.query.export import batches

        text = filter if isinstance(filter, str) else None
        for t in batches(self, text, dataset=dataset):
            if filter is not None and not isinstance(filter, str):
                t = t.filter(filter)
            yield from table_to_atoms(t, original_keys=original_keys)

    # ---------------------------------------------------------------- queries

    def sql(self, query: str, untrusted: bool = False, **limits: Any) -> Any:
        """Run SQL over the views (configurations, datasets, deposits, quarantine, keys, ...).

        Trusted: a DuckDB relation.  ``untrusted=True``: an Arrow table, from one sandboxed,
        time-, memory- and size-limited SELECT over the views only (what the API accepts).
        """
        from mliplake.query.engine import SQLError, run_sql

        if untrusted:
            return run_sql(self, query, untrusted=True, **limits)
        import duckdb

        try:
            return self.connection().sql(query)
        except duckdb.Error as e:
            raise SQLError(f"SQL: {e}") from None

    def search(self, filter: str | None = None, columns: list[str] | None = None, limit: int | None = None,
               order: str | None = None) -> pa.Table:
        """Configurations matching a filter (the OPTIMADE-based language of docs/query.md)."""
        from mliplake.query.engine import search

        return search(self, filter, columns, limit, order)

    def count(self, filter: str | None = None) -> int:
        from mliplake.query.engine import count

        return count(self, filter)

    def export(self, filter: str | None, out: str, format: str = "extxyz", original_keys: bool = False,
               progress: bool | None = False) -> int:
        """Write matching configurations to extxyz (MACE-ready REF_* keys) or Parquet; returns the count."""
        from mliplake.query.export import export

        return export(self, filter, out, format=format, original_keys=original_keys, progress=progress)

    def summary(self, filter: str | None = None, keys: list[str] | None = None) -> Any:
        """Counts, statistics, value counts, element counts, histograms (a :class:`mliplake.query.stats.Summary`)."""
        from mliplake.query.stats import summarise

        return summarise(self, filter, keys)

    def keys(self, dataset: str | None = None) -> pa.Table:
        """Every key: labels, derived columns, user info and per-atom keys, with counts and datasets
        (of one dataset if given)."""
        from mliplake.query.engine import keys

        return keys(self, dataset)

    def raw_files(self, deposit_id: str) -> list[str]:
        """The originals of a deposit the principal may see, at their paths inside the deposit."""
        rec = self.record(deposit_id)
        if rec.get("purged"):
            return []
        base = self.raw_dir(rec["deposit_id"]) + "/files/"
        return sorted(self.fs.find(base)) if self.fs.exists(base) else []
