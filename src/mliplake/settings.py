"""Every ``MLIPLAKE_*`` setting in one typed object, read once and passed down.

Nothing reads the environment at import time: :func:`get_settings` reads it on first use and
keeps the result; code that needs other values builds its own ``Settings(...)`` and passes it
(``Lake(url, settings=...)``).  ``mliplake config`` prints the effective values with secrets
masked; ``infra/env.example`` lists every variable.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_LAKE = "lake"


class Settings(BaseSettings):
    """The effective configuration: environment (``MLIPLAKE_<NAME>``) over the defaults."""

    model_config = SettingsConfigDict(env_prefix="MLIPLAKE_", extra="ignore", frozen=True)

    # ---- storage
    lake: str = Field(DEFAULT_LAKE, description="where the lake lives: a local folder or s3://bucket/prefix")
    catalog: str = Field("", description="the table catalog: sqlite:PATH or postgres:CONNINFO; "
                                         "default: catalog.sqlite inside a local lake, or a per-machine "
                                         "SQLite file under state_dir for an S3 lake")
    accounts: str = Field("", description="the accounts database: sqlite:///PATH or postgresql+psycopg://...; "
                                          "default: accounts.sqlite in the lake's state folder")
    s3_endpoint: str = Field("", description="S3-compatible endpoint (MinIO, Ceph, moto); "
                                             "default: AWS_ENDPOINT_URL, else AWS")
    s3_region: str = Field("", description="S3 region; default: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1")
    state_dir: str = Field(str(Path.home() / ".local" / "state" / "mliplake"),
                           description="per-machine state (catalogs of S3 lakes with no catalog set)")
    shard_rows: int = Field(250_000, gt=0, description="rows per Parquet file written by a deposit")
    snapshot_retention: str = Field("7 days", description="how long replaced or retracted data stays "
                                                          "readable by version before a vacuum may remove it")
    # ---- ingest
    workers: int = Field(0, ge=0, description="parser processes for big files (0: one per core)")
    parallel_min_bytes: int = Field(16 << 20, gt=0, description="files at least this big are parsed in parallel")
    commit_retries: int = Field(50, gt=0, description="attempts at a commit that meets concurrent writers")
    commit_pause: float = Field(0.0, ge=0, description="seconds each commit waits inside its transaction before "
                                                       "it is sent (failure drills: kill a writer mid-commit)")
    compact_files: int = Field(100, ge=0, description="a table with more small data files than this is compacted "
                                                      "(merged) by the deposit that finds it so; 0: only "
                                                      "mliplake maintain compacts")
    compact_file_bytes: int = Field(16 << 20, gt=0, description="data files smaller than this count as small, and "
                                                                "only they are merged by that compaction (bytes)")
    compact_inlined_rows: int = Field(100, ge=0, description="a table with more rows kept in the catalog (DuckLake "
                                                              "data inlining) than this has them written out to a "
                                                              "Parquet file by the deposit that finds it so; 0: never")
    # ---- queries
    sql_timeout: float = Field(30.0, gt=0, description="wall-clock limit of one untrusted SQL query (s)")
    sql_max_rows: int = Field(100_000, gt=0, description="rows an untrusted SQL query may return")
    sql_max_bytes: int = Field(256 << 20, gt=0, description="bytes an untrusted SQL query may return")
    sql_memory: str = Field("2GB", description="DuckDB memory limit of an untrusted SQL query")
    sql_workers: int = Field(2, gt=0, description="worker processes that run untrusted SQL (more requests queue)")
    filter_timeout: float = Field(60.0, gt=0, description="wall-clock limit of one filter query (s)")
    # ---- search
    opensearch_url: SecretStr = Field(SecretStr(""), description="OpenSearch URL (may hold credentials); "
                                                                 "empty: DuckDB answers searches")
    opensearch_index: str = Field("mliplake-configurations", description="alias of the configurations index")
    # ---- the service (mliplake serve)
    api_host: str = Field("127.0.0.1", description="address the API listens on")
    api_port: int = Field(8000, gt=0, lt=65536, description="port the API listens on")
    api_public_url: str = Field("", description="the API's address as users reach it (links, OPTIMADE); "
                                                "default: from each request")
    api_rate: float = Field(10.0, gt=0, description="requests per second one token (or one address, without a "
                                                    "token) may make on average")
    api_burst: int = Field(100, gt=0, description="requests one token may make at once before the rate applies")
    api_max_body: int = Field(1 << 20, gt=0, description="largest request body other than an upload (bytes)")
    api_page_max: int = Field(1000, gt=0, description="most entries in one page of results")
    api_ingest: Literal["inline", "dagster"] = Field(
        "inline", description="who processes HTTP deposits: the API itself (inline), or Dagster's inbox sensor")
    upload_max_bytes: int = Field(64 << 30, gt=0, description="largest upload (bytes)")
    upload_chunk_max: int = Field(256 << 20, gt=0, description="largest piece of an upload sent in one request")
    upload_expiry_hours: float = Field(24.0, gt=0, description="unfinished uploads are deleted after this long")
    archive_max_files: int = Field(10_000, gt=0, description="most files an uploaded archive may unpack to")
    archive_max_bytes: int = Field(256 << 30, gt=0, description="most bytes an uploaded archive may unpack to")
    predict_max_atoms: int = Field(5000, gt=0, description="most atoms in one structure sent to predict")
    # ---- ML
    workdir: str = Field(str(Path.home() / ".cache" / "mliplake"), description="training work directories")
    trainer: Literal["local", "slurm"] = Field("local", description="where the models asset trains")
    # Slurm job options: unset ones take mliplake.ml.slurm.SlurmOptions' defaults (the one place they live)
    slurm_partition: str | None = Field(None, description="Slurm partition")
    slurm_account: str | None = Field(None, description="Slurm account")
    slurm_time: str | None = Field(None, description="Slurm time limit (default 04:00:00)")
    slurm_gpus: int | None = Field(None, ge=0, description="GPUs per training job (default 1)")
    slurm_cpus_per_task: int | None = Field(None, gt=0, description="CPUs per training job (default 8)")
    slurm_mem: str | None = Field(None, description="memory per training job (default 32G)")
    slurm_setup: str | None = Field(None, description="shell lines a job runs first (module load ...)")

    def slurm_options(self) -> dict[str, Any]:
        """The Slurm options that are set, by SlurmOptions' field names."""
        names = ("partition", "account", "time", "gpus", "cpus_per_task", "mem", "setup")
        return {n: getattr(self, f"slurm_{n}") for n in names if getattr(self, f"slurm_{n}") is not None}

    def catalog_url(self, lake_url: str, root: str, local: bool) -> str:
        """The DuckLake catalog of a lake: the setting, or the default for where the lake lives."""
        if self.catalog:
            return self.catalog
        if local:
            return f"sqlite:{root}/catalog.sqlite"
        key = hashlib.sha256(lake_url.encode()).hexdigest()[:16]
        return f"sqlite:{Path(self.state_dir).expanduser()}/{key}/catalog.sqlite"

    def masked(self) -> dict[str, Any]:
        """Every setting with its effective value, secrets (and credentials inside URLs) masked."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = _mask_url(value.get_secret_value())
            elif name in ("catalog", "accounts"):
                value = _mask_url(value)
            out[name] = value
        return out


def _mask_url(value: str) -> str:
    """``scheme://user:password@host`` and ``password=...`` with the secret replaced by ``***``."""
    import re

    value = re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", value)
    return re.sub(r"(password=)\S+", r"\1***", value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once, on first use."""
    return Settings()


def reload_settings() -> Settings:
    """Forget the cached settings (tests and long-lived processes after changing the environment)."""
    get_settings.cache_clear()
    return get_settings()
