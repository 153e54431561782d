"""The search index in Dagster and the CLI, against osmem-server."""
from __future__ import annotations

import dagster as dg
import pytest
from click.testing import CliRunner
from conftest import SAMPLES, sample_files

import mliplake
from mliplake import inbox, search
from mliplake.cli import main
from pipelines.defs.resources import LakeResource, SearchResource

pytestmark = pytest.mark.xdist_group("dagster")


def test_search_index_asset_reconciliation_and_cli(opensearch_url, tmp_path, monkeypatch):
    from pipelines.definitions import defs
    from pipelines.demo import run_inbox

    monkeypatch.setenv("MLIPLAKE_OPENSEARCH_INDEX", f"t-{tmp_path.name.lower()}")
    lake = mliplake.Lake(tmp_path / "lake")
    inbox.drop(lake, sample_files("mlearn"), "sample-mlearn", SAMPLES["mlearn"] / "manifest.yaml")
    res = {"lake": LakeResource(url=lake.url), "opensearch": SearchResource(url=opensearch_url)}
    with dg.instance_for_test() as instance:
        run_inbox(defs, instance, res)
        job = dg.define_asset_job("idx", selection=["search_index"]).resolve(asset_graph=defs.resolve_asset_graph())
        out = job.execute_in_process(instance=instance, partition_key="sample-mlearn", resources=res)
        assert out.success
        md = out.asset_materializations_for_node("search_index")[0].metadata
        assert md["documents"].value == 239
        client = search.connect(opensearch_url)
        alias = search.index_name(lake)
        assert client.count(index=alias)["count"] == 239
        # drift: a document lost from the index is found and repaired by the scheduled asset
        some = lake.search(None, columns=["dataset", "id"], limit=3).to_pylist()
        for r in some:
            client.delete(index=search.current_index(client, alias), id=search.doc_id(r["dataset"], r["id"]),
                          refresh=True)
        rec = defs.resolve_job_def("reconcile_search_index").execute_in_process(instance=instance, resources=res)
        md = rec.asset_materializations_for_node("search_index_reconciliation")[0].metadata
        assert md["missing_indexed"].value == 3 and client.count(index=alias)["count"] == 239
    # the CLI searches through OpenSearch when it is configured, with the same answers as DuckDB
    f = 'info.group = "Vacancy" AND nsites < 64'
    monkeypatch.setenv("MLIPLAKE_OPENSEARCH_URL", opensearch_url)
    via_os = CliRunner().invoke(main, ["--lake", lake.url, "search", f, "--count"]).output.strip()
    monkeypatch.delenv("MLIPLAKE_OPENSEARCH_URL")
    via_duckdb = CliRunner().invoke(main, ["--lake", lake.url, "search", f, "--count"]).output.strip()
    assert via_os == via_duckdb == str(lake.count(f)) != "0"
