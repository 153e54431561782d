"""Resources configured from the environment, so the same code runs on a folder or on S3."""

import os
from pathlib import Path

import dagster as dg

import mliplake

DEFAULT_LAKE = str(Path(__file__).resolve().parents[2] / "lake")


class LakeResource(dg.ConfigurableResource):
    """The lake: a local folder or ``s3://bucket/prefix`` (credentials and endpoint from the AWS variables)."""

    url: str

    def lake(self) -> mliplake.Lake:
        return mliplake.Lake(self.url)


class SearchResource(dg.ConfigurableResource):
    """OpenSearch (``$MLIPLAKE_OPENSEARCH_URL``); empty: the embedded engine, DuckDB over the lake."""

    url: str = ""

    def client(self):  # noqa: ANN201
        from mliplake import search

        return search.connect(self.url)


def resources() -> dict[str, object]:
    url = dg.EnvVar("MLIPLAKE_LAKE") if os.environ.get("MLIPLAKE_LAKE") else DEFAULT_LAKE
    search_url = dg.EnvVar("MLIPLAKE_OPENSEARCH_URL") if os.environ.get("MLIPLAKE_OPENSEARCH_URL") else ""
    return {"lake": LakeResource(url=url), "opensearch": SearchResource(url=search_url)}
