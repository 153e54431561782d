"""The main job, headless, through Dagster: samples dropped into the inbox, the sensor evaluated,
one real run per deposit and a catalogue run against the ``dagster_home`` instance, then the catalogue.

    DAGSTER_HOME=$PWD/dagster_home python -m pipelines.demo
"""
import os
import sys
from pathlib import Path

import dagster as dg

import mliplake
from mliplake.cli import SAMPLES, sample_dir, table
from mliplake.ingest import inbox

REPO = Path(__file__).resolve().parents[1]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the run's events stay in the instance


def drop_samples(lake: mliplake.Lake) -> None:
    for name in SAMPLES:
        d = sample_dir(name)
        data = sorted(p for p in d.iterdir() if p.suffix in (".xyz", ".json"))
        inbox.drop(lake, data, f"sample-{name}", d / "manifest.yaml")


def run_inbox(defs: dg.Definitions, instance: dg.DagsterInstance,
              resources: dict[str, object] | None = None) -> list[dg.DagsterRun]:
    """One sensor tick, as the daemon would do it, and its run requests executed in this process."""
    resources = resources or dict(defs.resources or {})
    sensor = defs.resolve_sensor_def("inbox_sensor")
    cursor = instance.run_storage.get_cursor_values({"mliplake/inbox_cursor"}).get("mliplake/inbox_cursor")
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources,
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
                                     run_config=QUIET, resources=resources)
        evals = res.get_asset_check_evaluations()
        failed = [e.check_name for e in evals if not e.passed]
        print(f"run {res.run_id[:8]} {req.partition_key}: {'ok' if res.success else 'FAILED'}; "
              f"checks {len(evals) - len(failed)}/{len(evals)} passed" + (f" (failed: {', '.join(failed)})" if failed else ""),
              flush=True)
        runs.append(res.dagster_run)
    return runs


def _run(defs: dg.Definitions, instance: dg.DagsterInstance, job: str, partition: object = None) -> None:
    res = defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=partition, run_config=QUIET)
    print(f"run {res.run_id[:8]} {job}{f' [{partition}]' if partition else ''}: {'ok' if res.success else 'FAILED'}",
          flush=True)
    if not res.success:
        raise SystemExit(f"{job} failed; see the run in the UI (make ui)")


def ml_loop(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """Training set -> tiny MACE on CPU -> benchmark on the held-out split -> leaderboard -> generated structures."""
    _run(defs, instance, "materialise_training_set", "ethanol")
    _run(defs, instance, "train_model", "ethanol-tiny")
    _run(defs, instance, "run_benchmark", dg.MultiPartitionKey({"model": "ethanol-tiny", "benchmark": "held-out-test"}))
    _run(defs, instance, "refresh_leaderboard")
    _run(defs, instance, "generate_structures", "ethanol-tiny")


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
        ml_loop(defs, instance)
        run_inbox(defs, instance)  # the generated structures come back in as a deposit
        defs.resolve_job_def("catalogue_refresh").execute_in_process(instance=instance, run_config=QUIET)
    cards = lake.sql("SELECT dataset, configurations, atoms, elements, properties, license, quality_score "
                     "FROM catalogue ORDER BY dataset").to_arrow_table()
    print("\ncatalogue:")
    print(table(cards.to_pylist(), cards.column_names))
    print("\ndeposits:")
    print(table(lake.deposits()))
    from mliplake.ml import models as ml

    board = ml.leaderboard(lake)
    print("\nleaderboard:")
    print(table(board, ["model_id", "benchmark", "energy_mae", "forces_mae", "forces_r2", "parameters",
                        "training_set", "training_set_version", "configurations"]))
    print("\nopen the UI with the assets materialised:  make ui")
    return 0


if __name__ == "__main__":
    sys.exit(main())
