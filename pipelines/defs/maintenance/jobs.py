"""Lake maintenance: compaction, expiry of old snapshots, deletion of the files no snapshot needs.

Deposits merge small files as they go (``MLIPLAKE_COMPACT_FILES``); this nightly job does the
rest of ``mliplake maintain``: it merges whatever is left (derived tables included), forgets
snapshots older than ``MLIPLAKE_SNAPSHOT_RETENTION`` and deletes the files only they needed, and
orphans of killed writers."""
import time

import dagster as dg

from pipelines.defs.resources import LakeResource


@dg.op
def lake_maintenance(context: dg.OpExecutionContext, lake: LakeResource) -> dg.Output:
    """The lake compacted and vacuumed (``lake.maintain()``): data files before and after."""
    t0 = time.perf_counter()
    lk = lake.lake()
    before = lk.tables.catalog_load()
    r = lk.maintain()
    after = lk.tables.catalog_load()
    context.log.info(f"configurations: {r['files_before']} -> {r['files_after']} data files")
    return dg.Output(None, metadata={
        "files_before": r["files_before"], "files_after": r["files_after"], "retention": r["retention"],
        "seconds": round(time.perf_counter() - t0, 3),
        "catalog_before": dg.MetadataValue.json(before), "catalog_after": dg.MetadataValue.json(after),
    })


@dg.job(description="Compact the lake's tables, expire old snapshots, delete unneeded and orphaned files.")
def maintain_lake() -> None:
    lake_maintenance()


nightly_maintenance = dg.ScheduleDefinition(name="nightly_maintenance", job=maintain_lake, cron_schedule="30 3 * * *",
                                            default_status=dg.DefaultScheduleStatus.RUNNING)
