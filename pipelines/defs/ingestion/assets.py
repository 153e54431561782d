"""Per-deposit assets: the originals in the raw zone, then the normalised configurations."""

import time

import dagster as dg

from mliplake.ingest import inbox
from pipelines.defs.partitions import deposits
from pipelines.defs.resources import LakeResource


@dg.asset(
    partitions_def=deposits,
    group_name="ingestion",
    kinds={"python", "parquet"},
)
def raw_deposits(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """The deposit's original files, moved from the inbox into the raw zone, byte for byte, with SHA-256 sums."""
    t0 = time.perf_counter()
    lk = lake.lake()
    staged = inbox.stage(lk, context.partition_key)
    context.log.info(f"staged {len(staged.files)} files as {staged.deposit_id}")
    return dg.MaterializeResult(metadata={
        "deposit_id": staged.deposit_id,
        "dataset": staged.manifest.dataset,
        "files": dg.MetadataValue.md("\n".join(f"- `{f.name}`: {f.bytes:,} B, sha256 `{f.sha256[:16]}…`"
                                               for f in staged.files)),
        "bytes": sum(f.bytes for f in staged.files),
        "raw_zone": lk.uri(lk.raw_dir(staged.deposit_id)),
        "seconds": round(time.perf_counter() - t0, 3),
    })


@dg.asset(
    partitions_def=deposits,
    deps=[raw_deposits],
    group_name="ingestion",
    kinds={"duckdb", "parquet"},
    automation_condition=dg.AutomationCondition.eager(),
)
def configurations(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """The deposit's frames normalised into Parquet shards (units, keys, derived columns, hashes);
    rejected frames in quarantine with their reasons."""
    lk = lake.lake()
    report = inbox.ingest_staged(lk, context.partition_key)
    context.log.info(report.summary())
    top = "\n".join(f"- {n} × {why}" for why, n in report.reasons.most_common(5)) or "none"
    return dg.MaterializeResult(metadata={
        "deposit_id": report.deposit_id,
        "dataset": report.dataset,
        "status": report.status,
        "frames_read": report.frames_read,
        "frames_stored": report.stored,
        "duplicates": report.duplicates,
        "relabelled": report.relabelled,
        "quarantined": report.quarantined,
        "top_quarantine_reasons": dg.MetadataValue.md(top),
        "elements": ", ".join(report.elements),
        "labels": ", ".join(report.labels),
        "atoms": report.atoms,
        "bytes_written": report.bytes_written,
        "seconds": round(report.seconds, 3),
    })
