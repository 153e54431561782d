"""Lake-wide assets: the dataset catalogue and the key registry."""

import json

import dagster as dg

from mliplake.catalogue import cards as catalogue
from pipelines.defs.ingestion.assets import configurations
from pipelines.defs.resources import LakeResource


@dg.multi_asset(
    specs=[
        dg.AssetSpec("datasets", deps=[configurations], group_name="catalogue", kinds={"duckdb", "parquet"},
                     description="One catalogue card per dataset: metadata, counts, elements, properties, "
                                 "energy and force statistics, and a quality score with its parts explained.",
                     automation_condition=dg.AutomationCondition.eager()),
        dg.AssetSpec("key_registry", deps=[configurations], group_name="catalogue", kinds={"duckdb", "parquet"},
                     description="Every key seen (labels, derived, info and per-atom keys) with category, dtype, "
                                 "unit, how many configurations carry it and in which datasets.",
                     automation_condition=dg.AutomationCondition.eager()),
    ],
)
def catalogue_tables(context: dg.AssetExecutionContext, lake: LakeResource):
    """Rebuilt together from one pass over the lake's views, stored as Parquet tables in the lake."""
    cards, keys = catalogue.refresh(lake.lake())
    rows = cards.to_pylist()
    table = "\n".join(
        f"| {r['dataset']} | {r['configurations']:,} | {', '.join(r['elements'])} | {', '.join(r['properties'])} "
        f"| {r['quality_score']:.3f} |" for r in rows)
    yield dg.MaterializeResult(asset_key="datasets", metadata={
        "datasets": len(rows),
        "configurations": sum(r["configurations"] for r in rows),
        "catalogue": dg.MetadataValue.md("| dataset | configurations | elements | properties | quality |\n"
                                         "|---|---|---|---|---|\n" + table),
        "quality": dg.MetadataValue.json({r["dataset"]: json.loads(r["quality"]) for r in rows}),
    })
    krows = keys.to_pylist()
    yield dg.MaterializeResult(asset_key="key_registry", metadata={
        "keys": len(krows),
        "registry": dg.MetadataValue.md("| key | category | dtype | configurations | datasets |\n|---|---|---|---|---|\n"
                                        + "\n".join(f"| {k['key']} | {k['category']} | {k['dtype']} | "
                                                    f"{k['configurations']:,} | {', '.join(k['datasets'] or [])} |"
                                                    for k in krows)),
    })


catalogue_refresh = dg.define_asset_job("catalogue_refresh", selection=["datasets", "key_registry"],
                                        description="Rebuild the dataset catalogue and the key registry.")

nightly_catalogue = dg.ScheduleDefinition(
    name="nightly_catalogue", job=catalogue_refresh, cron_schedule="0 2 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
