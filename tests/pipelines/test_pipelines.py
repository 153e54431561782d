"""The Dagster code location: loads, sensor semantics, partitioned runs on a test instance, checks, end to end on S3."""
from __future__ import annotations

import json

import dagster as dg
import pytest
from support import SAMPLES, make_bucket, sample_files

import mliplake
from mliplake.ingest import inbox
from pipelines.defs.resources import LakeResource

pytestmark = pytest.mark.xdist_group("dagster")  # one worker: sqlite instances and the moto server


@pytest.fixture(scope="module")
def defs():
    from pipelines.definitions import defs

    return defs


def drop_sample(lake, name, folder=None):
    return inbox.drop(lake, sample_files(name), folder or f"sample-{name}", SAMPLES[name] / "manifest.yaml")


def tick(defs, instance, lake, cursor=None):
    sensor = defs.resolve_sensor_def("inbox_sensor")
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lake": LakeResource(url=lake.url)}) as ctx:
        return sensor(ctx)


def run_requests(defs, instance, lake, result):
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    job = defs.resolve_job_def("ingest_deposit")
    out = []
    for req in result.run_requests:
        out.append(job.execute_in_process(instance=instance, partition_key=req.partition_key, tags=req.tags,
                                          resources={"lake": LakeResource(url=lake.url)}, raise_on_error=False))
    return out


def test_code_location_loads(defs):
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"raw_deposits", "configurations", "datasets", "key_registry", "training_sets", "models",
                    "benchmarks", "leaderboard", "generated_structures", "search_index", "search_index_reconciliation",
                    "catalogue_index"}
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {"labels_finite", "quarantine_rate", "no_extreme_outliers", "units_declared", "duplicate_rate"}
    assert defs.resolve_schedule_def("nightly_catalogue").cron_schedule == "0 2 * * *"
    graph = defs.resolve_asset_graph()
    assert all(graph.get(dg.AssetKey(k)).automation_condition is not None for k in ("configurations", "datasets"))


def test_code_location_loads_as_dagster_loads_it(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("dagster")
    out = subprocess.run([str(exe), "definitions", "validate", "-m", "pipelines.definitions"],
                         cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
                         env={**__import__("os").environ, "DAGSTER_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Validation successful" in out.stdout + out.stderr


def test_sensor_one_request_per_new_deposit_and_never_twice(defs, tmp_path):
    lake = mliplake.Lake(tmp_path / "lake")
    with dg.instance_for_test() as instance:
        assert tick(defs, instance, lake).run_requests == []
        drop_sample(lake, "mlearn")
        first = tick(defs, instance, lake)
        assert [r.partition_key for r in first.run_requests] == ["sample-mlearn"]
        assert first.run_requests[0].tags["mliplake/dataset"] == "mlearn-si"
        assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [["sample-mlearn"]]
        # the same deposit again: nothing
        again = tick(defs, instance, lake, cursor=first.cursor)
        assert again.run_requests == [] and again.dynamic_partitions_requests == []
        # a daemon that was down sees both the old and a new deposit, and requests only the new one
        drop_sample(lake, "3bpa")
        later = tick(defs, instance, lake, cursor=first.cursor)
        assert [r.partition_key for r in later.run_requests] == ["sample-3bpa"]
        run_key = first.run_requests[0].run_key
        assert run_key.startswith("sample-mlearn:")  # the run key is stable for the same content
        fresh = {r.partition_key: r.run_key for r in tick(defs, instance, lake).run_requests}
        assert fresh["sample-mlearn"] == run_key


def test_incomplete_folder_is_not_taken(defs, tmp_path):
    lake = mliplake.Lake(tmp_path / "lake")
    lake.put_file(sample_files("mlearn")[0], lake.path("inbox", "half", "Si_test.json"))  # no manifest yet
    with dg.instance_for_test() as instance:
        assert tick(defs, instance, lake).run_requests == []


def test_partitioned_runs_and_checks_on_good_and_bad_deposits(defs, tmp_path):
    lake = mliplake.Lake(tmp_path / "lake")
    drop_sample(lake, "rmd17")
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = sample_files("3bpa")[1].read_text().splitlines(keepends=True)[: 29 * 10]
    for k in range(0, 29 * 6, 29):  # 6 of 10 frames get an unknown element: 60% quarantined
        lines[k + 2] = "Xx" + lines[k + 2][1:]
    (bad / "frames.xyz").write_text("".join(lines))
    (bad / "manifest.yaml").write_text("dataset: broken\n")  # and no units declared
    inbox.drop(lake, [bad / "frames.xyz"], "broken-upload", bad / "manifest.yaml")
    with dg.instance_for_test() as instance:
        results = {r.dagster_run.tags["dagster/partition"]: r for r in
                   run_requests(defs, instance, lake, tick(defs, instance, lake))}
        good, broken = results["sample-rmd17"], results["broken-upload"]
        assert good.success
        assert {e.check_name: e.passed for e in good.get_asset_check_evaluations()} == {
            "labels_finite": True, "quarantine_rate": True, "no_extreme_outliers": True, "units_declared": True,
            "duplicate_rate": True}
        md = good.asset_materializations_for_node("configurations")[0].metadata
        assert md["frames_stored"].value == 2000 and md["quarantined"].value == 0
        verdicts = {e.check_name: e for e in broken.get_asset_check_evaluations()}
        assert not verdicts["quarantine_rate"].passed and verdicts["quarantine_rate"].severity == dg.AssetCheckSeverity.ERROR
        assert "6 of 10 frames quarantined" in verdicts["quarantine_rate"].description
        assert not verdicts["units_declared"].passed
        assert not broken.success  # a blocking check failed: the deposit must not flow on
        dep = next(r["deposit_id"] for r in lake.records() if r["dataset"] == "broken")
        assert lake.count('dataset = "broken"') == 4 and lake.quarantine(dep).num_rows == 6
        # partitions are recorded on the instance, one per deposit
        assert set(instance.get_dynamic_partitions("deposits")) == {"sample-rmd17", "broken-upload"}


def test_rerun_of_a_partition_is_idempotent(defs, tmp_path):
    lake = mliplake.Lake(tmp_path / "lake")
    drop_sample(lake, "mlearn")
    with dg.instance_for_test() as instance:
        run_requests(defs, instance, lake, tick(defs, instance, lake))
        job = defs.resolve_job_def("ingest_deposit")
        res = job.execute_in_process(instance=instance, partition_key="sample-mlearn",
                                     resources={"lake": LakeResource(url=lake.url)})
        assert res.success
    assert lake.count() == 239 and len(lake.records()) == 1


def test_end_to_end_on_s3(defs, s3_endpoint, tmp_path):
    lake = mliplake.Lake(f"s3://{make_bucket(s3_endpoint)}/lake")
    drop_sample(lake, "mlearn")
    bad = tmp_path / "bad"
    bad.mkdir()
    recs = json.loads(sample_files("mlearn")[0].read_text())[:10]
    recs[3]["outputs"]["energy"] = float("nan")
    recs[7]["structure"]["sites"][0]["species"][0]["element"] = "Qq"
    (bad / "si_bad.json").write_text(json.dumps(recs).replace("NaN", "NaN"))
    (bad / "manifest.yaml").write_text((SAMPLES["mlearn"] / "manifest.yaml").read_text().replace(
        "dataset: mlearn-si", "dataset: si-extra"))
    inbox.drop(lake, [bad / "si_bad.json"], "si-extra", bad / "manifest.yaml")
    with dg.instance_for_test() as instance:
        results = run_requests(defs, instance, lake, tick(defs, instance, lake))
        assert all(r.success for r in results)
        res = defs.resolve_job_def("catalogue_refresh").execute_in_process(
            instance=instance, resources={"lake": LakeResource(url=lake.url)})
        assert res.success
    assert not lake.fs.exists(lake.path("inbox", "si-extra"))  # moved into the raw zone
    assert lake.count('dataset = "si-extra"') == 8
    dep = next(r for r in lake.records() if r["dataset"] == "si-extra")
    q = {r["frame_index"]: r["detail"] for r in lake.quarantine(dep["deposit_id"]).to_pylist()}
    assert set(q) == {3, 7} and "non-finite energy" in q[3] and "unknown element 'Qq'" in q[7]
    cards = {r["dataset"]: r for r in lake.sql("SELECT * FROM catalogue").to_arrow_table().to_pylist()}
    assert cards["si-extra"]["configurations"] == 8 and cards["si-extra"]["quarantined"] == 2
    assert cards["mlearn-si"]["configurations"] == 239 and cards["mlearn-si"]["properties"] == ["energy", "forces", "stress"]
    quality = json.loads(cards["si-extra"]["quality"])
    assert quality["accepted"]["value"] == pytest.approx(0.8)
    registry = {(r["key"], r["category"]): r for r in lake.sql("SELECT * FROM key_registry").to_arrow_table().to_pylist()}
    assert registry[("group", "info")]["configurations"] == 247
    assert registry[("group", "info")]["datasets"] == ["mlearn-si", "si-extra"]


def test_key_registry_of_the_samples(defs, tmp_path):
    lake = mliplake.Lake(tmp_path / "lake")
    for name in SAMPLES:
        drop_sample(lake, name)
    with dg.instance_for_test() as instance:
        run_requests(defs, instance, lake, tick(defs, instance, lake))
        defs.resolve_job_def("catalogue_refresh").execute_in_process(
            instance=instance, resources={"lake": LakeResource(url=lake.url)})
    reg = {(r["key"], r["category"]): r["configurations"] for r in
           lake.sql("SELECT * FROM key_registry").to_arrow_table().to_pylist()}
    assert reg[("dihedrals", "info")] == 500
    assert reg[("md17_index", "info")] == 2000 and reg[("config_type", "info")] == 2004
    assert reg[("group", "info")] == reg[("tag", "info")] == reg[("description", "info")] == 239
    assert reg[("energy", "label")] == 2743 and reg[("stress", "label")] == 239
