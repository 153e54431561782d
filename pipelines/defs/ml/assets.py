"""From data to potentials and back: training sets, models, benchmarks, leaderboard, generated structures."""
import json

import dagster as dg

from mliplake import Lake
from mliplake.ml import generate
from mliplake.ml import models as ml
from mliplake.ml import training_sets as training
from pipelines.defs.ingestion.assets import configurations
from pipelines.defs.ml.slurm import PipesSlurmClient
from pipelines.defs.ml.specs import (
    benchmark_partitions,
    benchmark_specs,
    model_partitions,
    model_specs,
    training_set_partitions,
    training_set_specs,
)
from pipelines.defs.resources import LakeResource, TrainerResource


@dg.asset(
    partitions_def=training_set_partitions,
    deps=[dg.AssetDep(configurations, partition_mapping=dg.AllPartitionMapping())],
    group_name="ml", kinds={"duckdb", "parquet"},
)
def training_sets(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """An immutable snapshot per spec: the filter's rows, split by seed, with E0s, as Parquet + MACE-ready
    extxyz + manifest; the same spec on unchanged data gives the same content hash."""
    ts = training.materialise(lake.lake(), training_set_specs()[context.partition_key])
    m = ts.manifest
    return dg.MaterializeResult(metadata={
        "version": ts.version, "content_hash": m["content_hash"], "filter": m["filter"], "seed": m["seed"],
        **{f"{k}_configurations": v for k, v in m["counts"].items()},
        "e0s": dg.MetadataValue.json(m["e0s"]), "source_deposits": dg.MetadataValue.json(m["source_deposits"]),
        "path": ts.path,
    }, data_version=dg.DataVersion(ts.version))


def _models_by_training_set() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, spec in model_specs().items():
        out.setdefault(spec.training_set, []).append(name)
    return out


@dg.asset(
    partitions_def=model_partitions,
    deps=[dg.AssetDep(training_sets, partition_mapping=dg.StaticPartitionMapping(_models_by_training_set()))],
    group_name="ml", kinds={"pytorch", "python"},
)
def models(context: dg.AssetExecutionContext, lake: LakeResource, trainer: TrainerResource) -> dg.MaterializeResult:
    """MACE trained out of process on its training set (CPU by default, GPU when present), seeded and
    resumable, as a local subprocess or a Slurm job followed through Pipes (the ``trainer`` resource);
    epoch metrics are logged as they come; the model and its card go into the registry."""
    lk, spec = lake.lake(), model_specs()[context.partition_key]
    if trainer.launcher == "slurm":
        card = _train_on_slurm(context, lk, spec, trainer)
    else:
        def on_epoch(e: dict) -> None:
            context.log.info(f"epoch {e['epoch']}: loss {e['loss']:.4g}, RMSE E {e['rmse_e_per_atom_meV']:.1f} "
                             f"meV/atom, RMSE F {e['rmse_f_meV_per_A']:.1f} meV/Å ({e['seconds']:.0f} s)")

        card = ml.train(lk, spec, on_epoch=on_epoch)
    table = "\n".join(f"| {e['epoch']} | {e['loss']:.4g} | {e['rmse_e_per_atom_meV']:.1f} | {e['rmse_f_meV_per_A']:.1f} |"
                      for e in card["training"]["epochs"])
    return dg.MaterializeResult(metadata={
        "model_id": card["model_id"], "parameters": card["parameters"], "elements": ", ".join(card["elements"]),
        "training_set": f"{card['training_set']['name']}@{card['training_set']['version']}",
        "training_seconds": card["training"]["seconds"], "device": card["training"]["device"] or "",
        "epochs": dg.MetadataValue.md("| epoch | loss | RMSE E meV/atom | RMSE F meV/Å |\n|---|---|---|---|\n" + table),
        "launcher": dg.MetadataValue.json(card["training"].get("launcher", {"kind": "local"})),
        "card": dg.MetadataValue.json(card),
    }, data_version=dg.DataVersion(card["model_id"]))


def _train_on_slurm(context: dg.AssetExecutionContext, lk: Lake, spec: ml.ModelSpec, trainer: TrainerResource) -> dict:
    ts = training.load(lk, spec.training_set)
    mid = ml.model_id(spec, ts)
    if ml.is_registered(lk, mid):
        return ml.card(lk, mid)
    mid, work, cmd = ml.prepare(lk, spec, ts)
    done = PipesSlurmClient(trainer.poll_seconds).run(
        context=context, command=cmd, workdir=work, name=f"mliplake-{mid}", options=trainer.slurm_options())
    job = done.metadata["slurm_job_id"].value
    return ml.register_from_workdir(lk, spec, ts, launcher={"kind": "slurm", "job_id": job,
                                                           "partition": trainer.partition})


@dg.asset(
    name="benchmarks",
    partitions_def=benchmark_partitions,
    deps=[dg.AssetDep(models, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="model"))],
    group_name="ml", kinds={"pytorch", "duckdb"},
)
def benchmark_results(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """A model on a benchmark set: energy, force and stress errors, per element and element pair, run time;
    a parity plot and an error histogram stored with the result."""
    keys = context.partition_key.keys_by_dimension
    lk = lake.lake()
    mid = ml.train(lk, model_specs()[keys["model"]])["model_id"]  # registered already: returns the card
    r = ml.benchmark(lk, mid, benchmark_specs()[keys["benchmark"]])
    return dg.MaterializeResult(metadata={
        "model_id": mid, "configurations": r["configurations"],
        "energy_mae_eV_per_atom": r["energy_per_atom"]["mae"], "energy_rmse_eV_per_atom": r["energy_per_atom"]["rmse"],
        "forces_mae_eV_per_A": r["forces"]["mae"], "forces_rmse_eV_per_A": r["forces"]["rmse"],
        "forces_r2": r["forces"]["r2"], "missing_predictions": r["missing_predictions"], "seconds": r["seconds"],
        "per_element": dg.MetadataValue.json(r["forces_per_element"]),
        "parity_plot": dg.MetadataValue.path(lk.uri(lk.path(ml.BENCHMARKS, mid, keys["benchmark"], "parity.png"))),
    })


@dg.asset(deps=[dg.AssetDep(benchmark_results, partition_mapping=dg.AllPartitionMapping())],
          group_name="ml", kinds={"duckdb"}, automation_condition=dg.AutomationCondition.eager())
def leaderboard(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Models with their card fields and metrics, per benchmark, best first."""
    rows = ml.leaderboard(lake.lake())
    md = "| model | benchmark | E MAE eV/atom | F MAE eV/Å | params | training set |\n|---|---|---|---|---|---|\n" + "\n".join(
        f"| {r['model_id']} | {r['benchmark']} | {r['energy_mae']:.4g} | {r['forces_mae']:.4g} | {r['parameters']} "
        f"| {r['training_set']}@{r['training_set_version']} |" for r in rows)
    return dg.MaterializeResult(metadata={"rows": len(rows), "leaderboard": dg.MetadataValue.md(md)})


@dg.asset(partitions_def=model_partitions, deps=[models], group_name="ml", kinds={"python"})
def generated_structures(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Short Langevin MD with the model from seed structures of its training data, sampled, labelled with
    EMT as the reference, and dropped into the inbox with provenance naming the model."""
    lk = lake.lake()
    spec = model_specs()[context.partition_key]
    card = ml.train(lk, spec)
    ts = training.load(lk, spec.training_set)
    settings = generate.MDSettings(seeds=ts.manifest["filter"], max_seeds=2, steps=20, sample_every=5,
                                   temperature_K=300.0, seed=0, reference="emt")
    name, n = generate.deposit_generated(lk, card["model_id"], settings)
    return dg.MaterializeResult(metadata={"inbox": name, "frames": n, "model_id": card["model_id"],
                                          "md": dg.MetadataValue.json(json.loads(json.dumps(settings.__dict__)))})
