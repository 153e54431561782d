"""The inbox sensor: one partition and one run per deposit folder, never twice."""

import json

import dagster as dg

from mliplake.ingest import inbox
from pipelines.defs.ingestion.assets import configurations, raw_deposits
from pipelines.defs.partitions import deposits
from pipelines.defs.resources import LakeResource

ingest_deposit = dg.define_asset_job(
    "ingest_deposit",
    selection=dg.AssetSelection.assets(raw_deposits, configurations),
    description="Stage one inbox deposit into the raw zone and normalise it into the lake.",
)


@dg.sensor(job=ingest_deposit, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def inbox_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    """Watches ``inbox/`` in the lake. The cursor remembers each folder's content signature; the run key
    (folder + signature) makes a request that was already made a no-op, so nothing runs twice and a
    daemon that was down catches up on its next tick."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    ready = inbox.pending(lake.lake())
    new = [p for p in ready if seen.get(p.name) != p.signature]
    known = set(context.instance.get_dynamic_partitions(deposits.name)) if context.instance else set()
    add = sorted({p.name for p in new} - known)
    requests = [
        dg.RunRequest(partition_key=p.name, run_key=f"{p.name}:{p.signature}",
                      tags={"mliplake/dataset": p.dataset or "unknown", "mliplake/inbox": p.name})
        for p in new
    ]
    seen.update({p.name: p.signature for p in new})
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[deposits.build_add_request(add)] if add else [],
        cursor=json.dumps(seen, sort_keys=True),
    )
