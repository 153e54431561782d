"""The search index: one OpenSearch index over the lake's configurations, kept in step per deposit
and reconciled on a schedule. Without ``MLIPLAKE_OPENSEARCH_URL`` the embedded engine (DuckDB over
the lake) answers searches and these assets have nothing to do."""
import time

import dagster as dg

from mliplake import search
from pipelines.defs.ingestion.assets import configurations
from pipelines.defs.partitions import deposits
from pipelines.defs.resources import LakeResource, SearchResource


@dg.asset(partitions_def=deposits, deps=[configurations], group_name="search", kinds={"opensearch"},
          automation_condition=dg.AutomationCondition.eager())
def search_index(context: dg.AssetExecutionContext, lake: LakeResource, opensearch: SearchResource) -> dg.MaterializeResult:
    """The deposit's configurations in the search index (replacing its earlier documents)."""
    if not opensearch.url:
        return dg.MaterializeResult(metadata={"engine": "duckdb (embedded): nothing to index"})
    from mliplake.ingest import inbox

    lk = lake.lake()
    dep = inbox.staged(lk, context.partition_key).deposit_id
    client = opensearch.client()
    t0 = time.perf_counter()

    def progress(n: int) -> None:
        context.log.info(f"{n} documents indexed ({n / (time.perf_counter() - t0):.0f}/s)")

    if search.current_index(client, search.index_name(lk)) is None:
        report = search.index_lake(lk, client, on_progress=progress)  # the first deposit creates the index
        n = report.indexed
    else:
        search.delete_deposit(client, dep)
        n = search.index_deposit(lk, client, dep, on_progress=progress)
    return dg.MaterializeResult(metadata={"engine": "opensearch", "server": opensearch.url, "deposit_id": dep,
                                          "documents": n, "seconds": round(time.perf_counter() - t0, 3)})


@dg.asset(group_name="search", kinds={"opensearch"})
def search_index_reconciliation(context: dg.AssetExecutionContext, lake: LakeResource,
                                opensearch: SearchResource) -> dg.MaterializeResult:
    """Drift between the lake and the index, found and repaired: missing, stale and extra documents."""
    if not opensearch.url:
        return dg.MaterializeResult(metadata={"engine": "duckdb (embedded): nothing to reconcile"})
    r = search.reconcile(lake.lake(), opensearch.client())
    return dg.MaterializeResult(metadata={
        "index": r.index, "checked": r.checked, "missing_indexed": len(r.missing), "stale_reindexed": len(r.stale),
        "extra_deleted": len(r.extra), "created": r.created, "clean_before": r.clean,
        "examples": dg.MetadataValue.json({"missing": r.missing[:10], "stale": r.stale[:10], "extra": r.extra[:10]}),
    })


@dg.asset(deps=["datasets"], group_name="search", kinds={"opensearch"},
          automation_condition=dg.AutomationCondition.eager())
def catalogue_index(context: dg.AssetExecutionContext, lake: LakeResource, opensearch: SearchResource) -> dg.MaterializeResult:
    """The dataset cards in a full-text index (names, titles, descriptions, authors, methods, sampling),
    with facets and element selections; rebuilt and swapped in whenever the catalogue changes."""
    if not opensearch.url:
        return dg.MaterializeResult(metadata={"engine": "embedded: the cards are searched directly"})
    from mliplake.catalogue import search as catalog_search

    n = catalog_search.index_catalogue(lake.lake(), opensearch.client())
    return dg.MaterializeResult(metadata={"engine": "opensearch", "datasets": n, "alias": catalog_search.ALIAS})


reconcile_job = dg.define_asset_job("reconcile_search_index", selection=["search_index_reconciliation"])
hourly_reconciliation = dg.ScheduleDefinition(name="search_reconciliation", job=reconcile_job,
                                              cron_schedule="17 * * * *",
                                              default_status=dg.DefaultScheduleStatus.RUNNING)
