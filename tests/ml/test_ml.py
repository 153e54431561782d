"""From data to potentials and back: training sets, MACE through Dagster, registry, benchmarks, lineage, generation."""
from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pytest
from support import SAMPLES, sample_files

import mliplake
from mliplake.ingest import inbox
from mliplake.ml import models as ml
from mliplake.ml import training_sets as training
from pipelines.defs.ml.specs import model_specs
from pipelines.defs.resources import LakeResource

pytestmark = [pytest.mark.xdist_group("dagster"), pytest.mark.slow]

SPEC = {"name": "ethanol", "filter": 'dataset = "rmd17-ethanol" AND info.md17_index < 50000',
        "split": {"method": "random", "seed": 7}, "e0s": {"source": "average"}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The samples ingested and the ML loop run through the Dagster jobs, once for this module."""
    from pipelines.definitions import defs

    root = tmp_path_factory.mktemp("ml")
    lake = mliplake.Lake(root / "lake")
    for name in ("rmd17", "3bpa"):
        inbox.drop(lake, sample_files(name), f"sample-{name}", SAMPLES[name] / "manifest.yaml")
    res = {"lake": LakeResource(url=lake.url)}
    mp = pytest.MonkeyPatch()
    mp.setenv("MLIPLAKE_WORKDIR", str(root / "work"))
    with dg.instance_for_test() as instance:
        from pipelines.demo import run_inbox  # one sensor tick and its runs

        run_inbox(defs, instance, res)
        run = lambda job, key=None: defs.resolve_job_def(job).execute_in_process(  # noqa: E731
            instance=instance, partition_key=key, resources=res)
        assert run("materialise_training_set", "ethanol").success
        model_run = run("train_model", "ethanol-tiny")
        assert model_run.success
        assert run("run_benchmark", dg.MultiPartitionKey({"model": "ethanol-tiny", "benchmark": "held-out-test"})).success
        assert run("refresh_leaderboard").success
        gen = run("generate_structures", "ethanol-tiny")
        assert gen.success
        sensor_runs = run_inbox(defs, instance, res)
        logs = [e.message for e in instance.all_logs(model_run.run_id) if e.message and "epoch" in e.message]
    mp.undo()
    return {"lake": lake, "epoch_logs": logs, "generated_runs": sensor_runs, "gen": gen, "work": root / "work"}


def test_training_set_hash_is_stable_and_versions_stay_readable(tmp_path):
    lake = mliplake.Lake(tmp_path / "lake")
    lake.deposit(sample_files("rmd17")[:1], manifest=SAMPLES["rmd17"] / "manifest.yaml")
    spec = training.load_spec(SPEC)
    a, b = training.materialise(lake, spec), training.materialise(lake, spec)
    assert a.version == b.version and a.manifest["content_hash"] == b.manifest["content_hash"]
    counts = a.manifest["counts"]
    assert counts["train"] > 5 * counts["test"] > 0 and counts["isolated"] == 0
    assert not set(a.config_ids("train")) & set(a.config_ids("test"))
    # more data: a new version, the old one still readable, no frame moved between splits
    lake.deposit(sample_files("rmd17")[1:], manifest=SAMPLES["rmd17"] / "manifest.yaml")
    c = training.materialise(lake, spec)
    assert c.version != a.version
    old = training.load(lake, "ethanol", a.version)
    assert old.manifest["config_ids"] == a.manifest["config_ids"]
    assert set(a.config_ids("train")) <= set(c.config_ids("train"))
    assert set(a.config_ids("test")) <= set(c.config_ids("test"))
    assert {v["version"] for v in training.versions(lake, "ethanol")} == {a.version, c.version}


def test_group_split_keeps_groups_together(tmp_path):
    lake = mliplake.Lake(tmp_path / "lake")
    lake.deposit(sample_files("mlearn"), manifest=SAMPLES["mlearn"] / "manifest.yaml")
    ts = training.materialise(lake, training.load_spec({"name": "si", "split": {"method": "group", "key": "info.group"}}))
    groups = {r["id"]: json.loads(r["info"])["group"] for r in lake.search(None, columns=["id", "info"]).to_pylist()}
    where = {}
    for split in ("train", "valid", "test"):
        for cid in ts.config_ids(split):
            where.setdefault(groups[cid], set()).add(split)
    assert all(len(s) == 1 for s in where.values())  # no group straddles two splits


def test_model_trains_through_dagster_and_loads_as_calculator(trained):
    lake = trained["lake"]
    (card,) = ml.models(lake)
    assert card["elements"] == ["H", "C", "O"] and card["parameters"] > 1000
    assert len(card["training"]["epochs"]) == 4
    assert len(trained["epoch_logs"]) >= 4  # streamed to the run, one log line per epoch
    calc = mliplake.load_calculator(card["model_id"], lake)
    atoms = next(lake.atoms(filter='dataset = "rmd17-ethanol"'))
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy()) and atoms.get_forces().shape == (9, 3)


def test_exported_training_files_train_without_key_warnings(trained):
    """The training set's extxyz (mliplake's export, REF_* keys) as MACE read it: MACE's own log of the
    run has no warning about keys (ASE-unsafe 'energy'/'forces'/'stress', or labels not found)."""
    (card,) = ml.models(trained["lake"])
    logs = list((trained["work"] / "train" / card["model_id"] / "logs").glob("*.log"))
    assert logs, "MACE wrote no log"
    text = "\n".join(p.read_text() for p in logs)
    assert "Epoch 0" in text or "Epoch 1" in text  # the log is the training's
    warnings = [line for line in text.splitlines() if "WARNING" in line]
    keyed = [w for w in warnings if "_key" in w or "found with key" in w or "None of" in w]
    assert not keyed, keyed


def test_benchmark_equals_an_independent_evaluation(trained):
    lake = trained["lake"]
    (row,) = ml.leaderboard(lake, "held-out-test")
    result = next(b for b in ml.benchmarks(lake) if b["benchmark"] == "held-out-test")
    test_ids = ml.lineage(lake, row["model_id"])["config_ids"]["test"]
    calc = mliplake.load_calculator(row["model_id"], lake)
    e_err, f_err = [], []
    for atoms in lake.atoms(filter='dataset = "rmd17-ethanol"'):
        if atoms.info["config_id"] not in test_ids:
            continue
        ref_e, ref_f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = calc
        e_err.append((atoms.get_potential_energy() - ref_e) / len(atoms))
        f_err.append(atoms.get_forces() - ref_f)
    assert result["configurations"] == len(test_ids) == len(e_err)
    assert result["energy_per_atom"]["mae"] == pytest.approx(np.mean(np.abs(e_err)), rel=1e-6)
    f = np.concatenate(f_err).ravel()
    assert result["forces"]["rmse"] == pytest.approx(np.sqrt(np.mean(f**2)), rel=1e-6)
    assert row["energy_mae"] == result["energy_per_atom"]["mae"]
    (view,) = lake.sql("SELECT model_id, energy_mae, forces_rmse, training_set_version FROM leaderboard "
                       "WHERE benchmark = 'held-out-test'").fetchall()
    assert view == (row["model_id"], row["energy_mae"], row["forces_rmse"], row["training_set_version"])
    assert lake.fs.exists(lake.path(ml.BENCHMARKS, row["model_id"], "held-out-test", "parity.png"))


def test_lineage_from_a_leaderboard_row(trained):
    lake = trained["lake"]
    row = ml.leaderboard(lake)[0]
    out = ml.lineage(lake, row["model_id"])
    assert out["card"]["model_id"] == row["model_id"]
    assert out["training_set"]["version"] == row["training_set_version"]
    ids = out["config_ids"]
    ts = training.load(lake, "ethanol", row["training_set_version"])
    assert ids == ts.manifest["config_ids"]
    got = set(lake.search('dataset = "rmd17-ethanol" AND info.md17_index < 50000', columns=["id"]).column("id").to_pylist())
    assert set(ids["train"]) | set(ids["valid"]) | set(ids["test"]) == got


def test_generated_structures_come_back_in_with_provenance(trained):
    lake = trained["lake"]
    runs = trained["generated_runs"]
    assert len(runs) == 1 and runs[0].is_success
    card = ml.models(lake)[0]
    rec = next(r for r in lake.records() if r["dataset"] == "generated-ethanol-tiny")
    assert rec["stored"] == 8  # 2 seeds x 20 steps sampled every 5
    assert rec["manifest"]["sampling"]["model_id"] == card["model_id"]
    rows = lake.search('dataset = "generated-ethanol-tiny"', columns=["energy", "info"]).to_pylist()
    assert all(r["energy"] is not None for r in rows)  # labelled by the EMT reference
    assert {json.loads(r["info"])["config_type"] for r in rows} == {"generated"}


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    """A real single-node Slurm cluster on this machine (see slurm_cluster.py)."""
    from support import slurm_cluster

    why = slurm_cluster.available()
    if why:
        pytest.skip(why)
    cluster = slurm_cluster.LocalSlurm(tmp_path_factory.mktemp("slurm"))
    env = cluster.start()
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    yield cluster
    mp.undo()
    cluster.stop()


def test_batch_script_asks_for_what_the_options_say(tmp_path):
    from mliplake.ml import slurm

    opts = slurm.SlurmOptions(partition="gpu", gpus=2, account="proj1", mem="64G", setup="module load cuda",
                              directives=["--qos=high"])
    script = slurm.batch_script(["python", "-m", "x", "--a", "b c"], tmp_path, "job", opts, {"K": "v w"})
    for line in ("#SBATCH --gpus=2", "#SBATCH --partition=gpu", "#SBATCH --account=proj1", "#SBATCH --mem=64G",
                 "#SBATCH --qos=high", "module load cuda", "export K='v w'", "python -m x --a 'b c' 2>&1 | tee train.log"):
        assert line in script.splitlines()
    assert "--gpus" not in slurm.batch_script(["true"], tmp_path, "job", slurm.SlurmOptions(gpus=0))


def test_models_asset_trains_on_slurm_followed_through_pipes(local_slurm, tmp_path, monkeypatch):
    """The models asset with the Slurm launcher writes a batch script, sbatch-es it to a real slurmctld, and
    follows the job through Dagster Pipes: the job's epoch lines reach the run's log, and the model is
    registered with its Slurm job id, loads as a calculator and predicts."""
    from pipelines.definitions import defs
    from pipelines.defs.resources import TrainerResource

    monkeypatch.setenv("MLIPLAKE_WORKDIR", str(tmp_path / "work"))
    lake = mliplake.Lake(tmp_path / "lake")
    lake.deposit(sample_files("rmd17")[:1], manifest=SAMPLES["rmd17"] / "manifest.yaml")
    res = {"lake": LakeResource(url=lake.url),
           "trainer": TrainerResource(launcher="slurm", gpus=0, cpus_per_task=2, mem="4G", poll_seconds=0.5)}
    with dg.instance_for_test() as instance:
        run = lambda job, key: defs.resolve_job_def(job).execute_in_process(  # noqa: E731
            instance=instance, partition_key=key, resources=res)
        assert run("materialise_training_set", "ethanol").success
        result = run("train_model", "ethanol-tiny")
        assert result.success
        messages = [e.message for e in instance.all_logs(result.run_id) if e.message]
    card = ml.models(lake)[0]
    launcher = card["training"]["launcher"]
    assert launcher["kind"] == "slurm" and any(f"Slurm job {launcher['job_id']}: COMPLETED" in m for m in messages)
    from_job = [m for m in messages if m.startswith("Epoch") or " Epoch " in m]
    assert len(from_job) >= len(card["training"]["epochs"]) == model_specs()["ethanol-tiny"].max_num_epochs
    script = (ml.workdir_for(card["model_id"]) / "job.sh").read_text()
    assert "#SBATCH --mem=4G" in script and "--gpus" not in script and "export DAGSTER_PIPES_CONTEXT=" in script
    atoms = next(lake.atoms("rmd17-ethanol"))
    atoms.calc = ml.load_calculator(card["model_id"], lake)
    assert np.isfinite(atoms.get_potential_energy())


def test_cli_trains_on_slurm(local_slurm, tmp_path, monkeypatch):
    """``mliplake train SPEC --slurm`` on a login node: submits, follows the job's states, registers."""
    import yaml
    from click.testing import CliRunner

    from mliplake.cli import main

    monkeypatch.setenv("MLIPLAKE_WORKDIR", str(tmp_path / "work"))
    lake = mliplake.Lake(tmp_path / "lake")
    lake.deposit(sample_files("rmd17")[:1], manifest=SAMPLES["rmd17"] / "manifest.yaml")
    training.materialise(lake, training.load_spec(SPEC))
    spec = tmp_path / "hpc.yaml"
    spec.write_text(yaml.safe_dump({"name": "hpc", "training_set": "ethanol", "max_num_epochs": 1}))
    args = ["--lake", lake.url, "train", str(spec), "--slurm", "--gpus", "0", "--cpus", "2", "--mem", "4G"]
    shown = CliRunner().invoke(main, [*args, "--script-only"])
    assert shown.exit_code == 0 and "#SBATCH --mem=4G" in shown.output and "--gpus" not in shown.output
    assert not ml.models(lake)  # nothing submitted
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    (card,) = ml.models(lake)
    assert f"Slurm job {card['training']['launcher']['job_id']}: COMPLETED" in out.output
    assert card["model_id"] in out.output and len(card["training"]["epochs"]) == 1


def test_failed_slurm_job_fails_the_asset_and_names_its_output(local_slurm, tmp_path):
    from mliplake.ml import slurm
    from pipelines.defs.ml.slurm import PipesSlurmClient

    @dg.asset
    def failing(context):  # noqa: ANN001 (this module has postponed annotations, which Dagster cannot read)
        PipesSlurmClient(poll_seconds=0.2).run(
            context=context, command=["python3", "-c", "import sys; print('boom'); sys.exit(3)"],
            workdir=tmp_path, name="fails", options=slurm.SlurmOptions(gpus=0, cpus_per_task=1, mem="100M"))

    result = dg.materialize([failing], raise_on_error=False)
    assert not result.success
    err = result.get_step_failure_events()[0].event_specific_data.error.cause
    assert err.cls_name == "SlurmError" and "ended FAILED" in err.message and f"{tmp_path}/slurm-" in err.message
    assert "boom" in (tmp_path / "train.log").read_text()


def test_the_api_serves_models_leaderboard_lineage_and_predictions(trained):
    import io

    import httpx
    from ase.build import bulk
    from ase.io import write
    from support import start_api, stop

    lake = trained["lake"]
    (card,) = ml.models(lake)
    atoms = next(lake.atoms(filter='dataset = "rmd17-ethanol"'))
    calc = mliplake.load_calculator(card["model_id"], lake)
    expected = atoms.copy()
    expected.calc = calc
    proc, url = start_api(lake.root, {"MLIPLAKE_WORKDIR": str(trained["work"])})
    try:
        c = mliplake.Client(url, progress=False)
        board = c.leaderboard(sort="forces_mae")
        assert [r["model_id"] for r in board] == [card["model_id"]] and board[0]["forces_mae"] > 0
        assert c.model(card["model_id"])["benchmarks"][0]["benchmark"] == "held-out-test"
        lineage = c.lineage(card["model_id"])
        assert lineage["config_ids"] == ml.lineage(lake, card["model_id"])["config_ids"] != []
        buf = io.StringIO()
        write(buf, atoms, format="extxyz")
        out = c.predict(card["model_id"], buf.getvalue())
        assert out["energy"] == pytest.approx(expected.get_potential_energy(), rel=1e-6)
        assert np.allclose(out["forces"], expected.get_forces(), atol=1e-6)
        relaxed = c.predict(card["model_id"], buf.getvalue(), relax=True)
        assert len(relaxed["trajectory"]) >= 2 and relaxed["energy"] <= out["energy"] + 1e-9
        poscar = io.StringIO()
        write(poscar, bulk("Si", "diamond", a=5.43), format="vasp")
        r = httpx.post(url + "/api/v1/predict", json={"model": card["model_id"], "structure": poscar.getvalue()})
        assert r.status_code == 422 and "Si" in r.json()["detail"] and r.json()["unsupported"] == ["Si"]
        assert httpx.get(url + f"/api/v1/models/{card['model_id']}/file").content[:2] == b"PK"  # a torch zip
    finally:
        stop(proc)
