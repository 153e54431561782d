"""The main job, headless, through Dagster: samples dropped into the inbox, the sensor evaluated,
one real run per deposit and a catalogue run against the ``dagster_home`` instance, then the catalogue.

    DAGSTER_HOME=$PWD/dagster_home python -m pipelines.demo
"""
import os
import sys
from pathlib import Path

import dagster as dg

import mliplake
from mliplake import inbox
from mliplake.cli import SAMPLES, sample_dir, table

REPO = Path(__file__).resolve().parents[1]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the run's events stay in the instance


def drop_samples(lake: mliplake.Lake) -> None:
    for name in SAMPLES:
        d = sample_dir(name)
        data = sorted(p for p in d.iterdir() if p.suffix in (".xyz", ".json"))
        inbox.drop(lake, data, f"sample-{name}", d / "manifest.yaml")


def run_inbox(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """One sensor tick, as the daemon would do it, and its run requests executed in this process."""
    sensor = defs.resolve_sensor_def("inbox_sensor")
    cursor = instance.run_storage.get_cursor_values({"mliplake/inbox_cursor"}).get("mliplake/inbox_cursor")
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=dict(defs.resources or {}),
                                 sensor_name="inbox_sensor") as ctx:
        result = sensor(ctx)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    instance.run_storage.set_cursor_values({"mliplake/inbox_cursor": result.cursor or ""})
    job = defs.resolve_job_def("ingest_deposit")
    runs = []
    for req in result.run_requests or []:
        if instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": req.run_key})):
            continue  # the run key was used already: nothing runs twice
        res = job.execute_in_process(instance=instance, partition_key=req.partition_key,
                                     tags={**req.tags, "dagster/run_key": req.run_key}, raise_on_error=False,
                                     run_config=QUIET)
        evals = res.get_asset_check_evaluations()
        failed = [e.check_name for e in evals if not e.passed]
        print(f"run {res.run_id[:8]} {req.partition_key}: {'ok' if res.success else 'FAILED'}; "
              f"checks {len(evals) - len(failed)}/{len(evals)} passed" + (f" (failed: {', '.join(failed)})" if failed else ""),
              flush=True)
        runs.append(res.dagster_run)
    return runs


def main() -> int:
    os.environ.setdefault("DAGSTER_HOME", str(REPO / "dagster_home"))
    os.environ.setdefault("MLIPLAKE_LAKE", str(REPO / "lake"))
    from pipelines.definitions import defs

    lake = mliplake.Lake(os.environ["MLIPLAKE_LAKE"])
    print(f"lake: {lake.url}\ndagster home: {os.environ['DAGSTER_HOME']}", flush=True)
    drop_samples(lake)
    with dg.DagsterInstance.get() as instance:
        run_inbox(defs, instance)
        res = defs.resolve_job_def("catalogue_refresh").execute_in_process(instance=instance, run_config=QUIET)
        print(f"run {res.run_id[:8]} catalogue: {'ok' if res.success else 'FAILED'}", flush=True)
    cards = lake.sql("SELECT dataset, configurations, atoms, elements, properties, license, quality_score "
                     "FROM catalogue ORDER BY dataset").to_arrow_table()
    print("\ncatalogue:")
    print(table(cards.to_pylist(), cards.column_names))
    print("\ndeposits:")
    print(table(lake.deposits()))
    print("\nopen the UI with the assets materialised:  make ui")
    return 0


if __name__ == "__main__":
    sys.exit(main())
