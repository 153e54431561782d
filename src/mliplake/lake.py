"""The lake on fsspec: one URL decides where everything lives.

Layout under the lake root (a local folder, or ``s3://bucket/prefix``)::

    raw/<deposit_id>/files/<name>          originals, byte for byte
    raw/<deposit_id>/SHA256SUMS            their checksums
    raw/<deposit_id>/manifest.json         the manifest as understood
    tables/configurations/dataset=<d>/deposit=<id>/part-<attempt>-<k>.parquet
    tables/quarantine/dataset=<d>/deposit=<id>/part-<attempt>.parquet
    tables/deposits/<deposit_id>.json      the deposit record: the commit
    inbox/                                 drop zone watched by the Dagster sensor

Commit protocol: shards are written under fresh names (an attempt id), each
file atomically (local: temporary name then rename; S3: one PUT or multipart
upload, visible only once complete).  A deposit becomes visible when its record
is written, atomically, listing its shards; readers go through the records, so
a crash at any point leaves either the old deposit or the new one.  Files of
attempts that never committed are removed by the next run of that deposit.
"""
from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from .schema import CONFIGURATIONS, QUARANTINE

DEFAULT_LAKE = "lake"
LEADERBOARD_VIEW = """
CREATE VIEW leaderboard AS
SELECT b.model_id, b.benchmark, m.architecture, m.parameters, m.training_set.name AS training_set,
       m.training_set.version AS training_set_version, m.license, m.created_at,
       b.energy_per_atom.mae AS energy_mae, b.energy_per_atom.rmse AS energy_rmse, b.energy_per_atom.r2 AS energy_r2,
       b.forces.mae AS forces_mae, b.forces.rmse AS forces_rmse, b.forces.r2 AS forces_r2,
       b.configurations, b.missing_predictions, b.seconds
FROM benchmarks b JOIN models m USING (model_id)
"""
SHARD_ROWS = int(os.environ.get("MLIPLAKE_SHARD_ROWS", 250_000))  # rows per Parquet shard


def default_url() -> str:
    return os.environ.get("MLIPLAKE_LAKE", DEFAULT_LAKE)


def _storage_options(url: str) -> dict[str, Any]:
    if url.startswith("s3://"):
        # s3fs reads credentials from the usual AWS variables; the endpoint too, for MinIO / moto.
        endpoint = os.environ.get("MLIPLAKE_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            return {"endpoint_url": endpoint}
    return {}


class Lake:
    """A lake at a URL: a local folder (default ``$MLIPLAKE_LAKE`` or ``./lake``) or ``s3://...``."""

    def __init__(self, url: str | os.PathLike | None = None, **storage_options: Any) -> None:
        url = str(url) if url is not None else default_url()
        if "://" not in url:
            url = str(Path(url).expanduser().resolve())
        self.url = url
        opts = _storage_options(url) | storage_options
        self.fs, self.root = fsspec.core.url_to_fs(url, **opts)
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            self.fs.makedirs(self.root, exist_ok=True)

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    # ---------------------------------------------------------------- paths

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def raw_dir(self, deposit_id: str) -> str:
        return self.path("raw", deposit_id)

    def shard_dir(self, table: str, dataset: str, deposit_id: str) -> str:
        return self.path("tables", table, f"dataset={dataset}", f"deposit={deposit_id}")

    def record_path(self, deposit_id: str) -> str:
        return self.path("tables", "deposits", f"{deposit_id}.json")

    def uri(self, path: str) -> str:
        """A full URL for a path inside the lake (for DuckDB and for people)."""
        return path if self.local else f"{self.fs.protocol[0] if isinstance(self.fs.protocol, tuple) else self.fs.protocol}://{path}"

    # ---------------------------------------------------------------- atomic writes

    @contextmanager
    def atomic_open(self, path: str) -> Iterator[IO[bytes]]:
        """A file that appears at ``path`` whole, or not at all."""
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if self.local:
            # hidden, and not ending in .parquet, so no glob over the lake picks it up
            tmp = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:12]}.tmp"
            try:
                with open(tmp, "wb") as f:
                    yield f
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
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(path, buf.getvalue())
        return buf.tell()

    def put_file(self, local_path: str | Path, path: str) -> None:
        with open(local_path, "rb") as src, self.atomic_open(path) as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)

    # ---------------------------------------------------------------- deposits

    def deposit(self, paths: list[str | Path] | str | Path, dataset: str | None = None,
                manifest: Any = None, progress: bool | None = False) -> Any:
        """Ingest files (and a manifest) as one deposit; returns a :class:`DepositReport`."""
        from .ingest import deposit

        if isinstance(paths, (str, Path)):
            paths = [paths]
        return deposit(self, [Path(p) for p in paths], dataset=dataset, manifest=manifest, progress=progress)

    def records(self) -> list[dict[str, Any]]:
        """Every committed deposit record, oldest first."""
        d = self.path("tables", "deposits")
        if not self.fs.exists(d):
            return []
        recs = [self.read_json(p) for p in sorted(self.fs.glob(d + "/*.json"))]
        return sorted(recs, key=lambda r: (r.get("created_at", ""), r["deposit_id"]))

    def record(self, deposit_id: str) -> dict[str, Any]:
        p = self.record_path(deposit_id)
        if not self.fs.exists(p):
            matches = [r for r in self.records() if r["deposit_id"].startswith(deposit_id)]
            if len(matches) == 1:
                return matches[0]
            raise KeyError(f"no deposit {deposit_id!r} in {self.url}")
        return self.read_json(p)

    def deposits(self) -> list[dict[str, Any]]:
        """One summary row per deposit."""
        keys = ("deposit_id", "dataset", "status", "created_at", "frames_read", "stored", "duplicates",
                "quarantined", "files")
        return [{k: (len(r[k]) if k == "files" else r.get(k)) for k in keys} for r in self.records()]

    def datasets(self) -> list[dict[str, Any]]:
        """One row per dataset: deposits, configurations, atoms, elements, labels present."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.records():
            d = out.setdefault(r["dataset"], {"dataset": r["dataset"], "title": "", "license": "", "deposits": 0,
                                              "configurations": 0, "atoms": 0, "quarantined": 0,
                                              "elements": set(), "labels": set()})
            d["deposits"] += 1
            d["configurations"] += r.get("stored", 0)
            d["atoms"] += r.get("atoms", 0)
            d["quarantined"] += r.get("quarantined", 0)
            d["elements"] |= set(r.get("elements", []))
            d["labels"] |= set(r.get("labels", []))
            m = r.get("manifest") or {}
            d["title"] = m.get("title") or d["title"]
            d["license"] = m.get("license") or d["license"]
        for d in out.values():
            d["elements"] = sorted(d["elements"])
            d["labels"] = sorted(d["labels"])
        return sorted(out.values(), key=lambda d: d["dataset"])

    # ---------------------------------------------------------------- reading tables

    def shard_files(self, table: str = "configurations", dataset: str | None = None,
                    exclude_deposit: str | None = None) -> list[str]:
        key = "shards" if table == "configurations" else "quarantine_shards"
        files = []
        for r in self.records():
            if (dataset is None or r["dataset"] == dataset) and r["deposit_id"] != exclude_deposit:
                files += [self.path(p) for p in r.get(key, [])]
        return files

    def dataset(self, table: str = "configurations", dataset: str | None = None) -> pads.Dataset:
        """The committed shards as one Arrow dataset (lazy; filter and project before reading)."""
        schema = CONFIGURATIONS if table == "configurations" else QUARANTINE
        files = self.shard_files(table, dataset)
        return pads.dataset(files, schema=schema, format="parquet", filesystem=self.fs)

    def configurations(self, dataset: str | None = None, columns: list[str] | None = None,
                       filter: Any = None) -> pa.Table:
        return self.dataset("configurations", dataset).to_table(columns=columns, filter=filter)

    def quarantine(self, deposit_id: str) -> pa.Table:
        rec = self.record(deposit_id)
        files = [self.path(p) for p in rec.get("quarantine_shards", [])]
        return pads.dataset(files, schema=QUARANTINE, format="parquet", filesystem=self.fs).to_table()

    def atoms(self, dataset: str | None = None, filter: Any = None, original_keys: bool = False) -> Iterator[Any]:
        """The configurations back as ASE ``Atoms``, labels on a SinglePointCalculator, ``info["config_id"]`` set.

        ``filter``: a filter-language string (docs/query.md) or a pyarrow expression.
        """
        from .atoms import table_to_atoms

        if isinstance(filter, str) or (filter is None and dataset is None):
            from .export import batches

            text = filter or ""
            if dataset:
                text = f'dataset = "{dataset}"' + (f" AND ({text})" if text else "")
            for t in batches(self, text):
                yield from table_to_atoms(t, original_keys=original_keys)
            return
        for batch in self.dataset("configurations", dataset).to_batches(filter=filter, batch_size=4096):
            yield from table_to_atoms(pa.Table.from_batches([batch]), original_keys=original_keys)

    # ---------------------------------------------------------------- DuckDB

    def _records_signature(self) -> tuple:
        sig = []
        for d in (self.path("tables", "deposits"), self.path("tables", "catalogue"), self.path("tables", "models"),
                  self.path("tables", "benchmarks")):
            if self.fs.exists(d):
                self.fs.invalidate_cache(d)
                sig += sorted((e["name"], e.get("size"), str(e.get("mtime") or e.get("LastModified") or e.get("ETag")))
                              for e in self.fs.ls(d, detail=True))
        return tuple(sig)

    def connection(self) -> Any:
        """A DuckDB connection with the lake's views, rebuilt when deposits change."""
        from .query import connect

        sig = self._records_signature()
        if getattr(self, "_con_sig", None) != sig:
            if getattr(self, "_con", None) is not None:
                self._con.close()
            self._con = connect(self)
            self._con_sig = sig
        return self._con

    def extra_views(self) -> list[str]:
        """Views over tables that later stages store in the lake (the catalogue, ...), when present."""
        from .catalogue import CARDS, KEYS

        views = []
        for name, rel in (("catalogue", CARDS), ("key_registry", KEYS)):
            if self.fs.exists(self.path(rel)):
                views.append(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{self.uri(self.path(rel))}')")
        cards = self.fs.glob(self.path("tables", "models", "*", "card.json"))
        results = self.fs.glob(self.path("tables", "benchmarks", "*", "*", "result.json"))
        if cards:
            files = ", ".join(f"'{self.uri(p)}'" for p in cards)
            views.append(f"CREATE VIEW models AS SELECT * FROM read_json([{files}], union_by_name = true)")
        if cards and results:
            files = ", ".join(f"'{self.uri(p)}'" for p in results)
            views.append(f"CREATE VIEW benchmarks AS SELECT * FROM read_json([{files}], union_by_name = true)")
            views.append(LEADERBOARD_VIEW)
        return views

    def sql(self, query: str, untrusted: bool = False, **limits: Any) -> Any:
        """Run SQL over the views (configurations, datasets, deposits, quarantine, keys).

        Trusted: a DuckDB relation.  ``untrusted=True``: an Arrow table, from one sandboxed,
        time- and row-limited SELECT (what the API accepts).
        """
        from .query import SQLError, run_sql

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
        from .query import search

        return search(self, filter, columns, limit, order)

    def count(self, filter: str | None = None) -> int:
        from .query import count

        return count(self, filter)

    def export(self, filter: str | None, out: str, format: str = "extxyz", original_keys: bool = False,
               progress: bool | None = False) -> int:
        """Write matching configurations to extxyz (MACE-ready REF_* keys) or Parquet; returns the count."""
        from .export import export

        return export(self, filter, out, format=format, original_keys=original_keys, progress=progress)

    def summary(self, filter: str | None = None, keys: list[str] | None = None) -> Any:
        """Counts, statistics, value counts, element counts, histograms (a :class:`mliplake.stats.Summary`)."""
        from .stats import summarise

        return summarise(self, filter, keys)

    def keys(self) -> pa.Table:
        """Every key: labels, derived columns, user info and per-atom keys, with counts and datasets."""
        return self.sql("SELECT * FROM keys ORDER BY category, key").to_arrow_table()

    def raw_files(self, deposit_id: str) -> list[str]:
        return sorted(self.fs.glob(self.raw_dir(deposit_id) + "/files/*"))

    def existing_ids(self, dataset: str, exclude_deposit: str) -> set[str]:
        files = self.shard_files("configurations", dataset, exclude_deposit)
        if not files:
            return set()
        tab = pads.dataset(files, schema=CONFIGURATIONS, format="parquet", filesystem=self.fs).to_table(
            columns=["config_id"])
        return set(tab.column("config_id").to_pylist())

    def remove_uncommitted(self, dataset: str, deposit_id: str, keep: list[str]) -> None:
        """Delete shard files of a deposit that its record does not list (old or crashed attempts)."""
        keep_full = {self.path(p) for p in keep}
        for table in ("configurations", "quarantine"):
            d = self.shard_dir(table, dataset, deposit_id)
            if self.fs.exists(d):
                for p in self.fs.find(d):
                    if p not in keep_full:
                        self.fs.rm(p)
