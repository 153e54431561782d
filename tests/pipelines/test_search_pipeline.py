"""The search index in Dagster and the CLI, against osmem-server."""
from __future__ import annotations

import os
import threading
import time

import dagster as dg
import pytest
from click.testing import CliRunner
from support import SAMPLES, sample_files

import mliplake
from mliplake import search
from mliplake.cli import main
from mliplake.ingest import inbox
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
        assert any("239 documents indexed" in (e.message or "") for e in instance.all_logs(out.run_id))
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


@pytest.mark.skipif(bool(os.environ.get("MLIPLAKE_TEST_OPENSEARCH_URL")), reason="cannot stop an external OpenSearch")
def test_search_index_asset_fails_clearly_when_the_server_stops_mid_indexing(tmp_path, monkeypatch):
    """osmem-server is really stopped (SIGTERM) once the asset's first bulk chunk has landed: the run fails
    with a message naming the server; after a restart on the same address, the scheduled reconciliation
    brings the index back to exactly the lake's content."""
    from support import start_osmem

    from pipelines.definitions import defs
    from pipelines.demo import run_inbox

    server = start_osmem()
    url, port = server.url, int(server.url.rsplit(":", 1)[1])
    monkeypatch.setenv("MLIPLAKE_OPENSEARCH_INDEX", f"t-{tmp_path.name.lower()}")
    lake = mliplake.Lake(tmp_path / "lake")
    inbox.drop(lake, sample_files("rmd17"), "sample-rmd17", SAMPLES["rmd17"] / "manifest.yaml")
    res = {"lake": LakeResource(url=lake.url), "opensearch": SearchResource(url=url)}
    stopped_at: list[int] = []

    def stop_when_documents_arrive() -> None:
        watcher = search.connect(url)
        while True:
            n = sum(int(row["count"]) for row in watcher.cat.count(format="json"))
            if n:
                server.process.terminate()
                server.process.wait(10)
                stopped_at.append(n)
                return
            time.sleep(0.01)

    try:
        with dg.instance_for_test() as instance:
            run_inbox(defs, instance, res)
            total = lake.count()
            job = dg.define_asset_job("idx", selection=["search_index"]).resolve(asset_graph=defs.resolve_asset_graph())
            thread = threading.Thread(target=stop_when_documents_arrive, daemon=True)
            thread.start()
            out = job.execute_in_process(instance=instance, partition_key="sample-rmd17", resources=res,
                                         raise_on_error=False)
            thread.join(30)
            assert stopped_at and 0 < stopped_at[0] < total
            assert not out.success
            error = out.get_step_failure_events()[0].event_specific_data.error
            message = (error.cause or error).message
            assert "SearchError" in message and url in message and "unreachable" in message, message

            server = start_osmem(port)  # same address, empty: the in-memory index is gone
            rec = defs.resolve_job_def("reconcile_search_index").execute_in_process(instance=instance, resources=res)
            md = rec.asset_materializations_for_node("search_index_reconciliation")[0].metadata
            assert md["created"].value and md["missing_indexed"].value == total
            client = search.connect(url)
            alias = search.index_name(lake)
            assert search.index_fingerprints(client, search.current_index(client, alias)) == search.lake_fingerprints(lake)
    finally:
        server.close()
