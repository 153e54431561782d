"""Version-controlled specs (pipelines/specs/): training sets, models, benchmark sets -> partitions."""
from pathlib import Path

import dagster as dg
import yaml

from mliplake.ml import models as ml
from mliplake.ml import training_sets as training

SPECS = Path(__file__).resolve().parents[2] / "specs"


def training_set_specs() -> dict[str, training.TrainingSetSpec]:
    return {s.name: s for s in (training.load_spec(p) for p in sorted((SPECS / "training_sets").glob("*.yaml")))}


def model_specs() -> dict[str, ml.ModelSpec]:
    return {s.name: s for s in (ml.load_model_spec(p) for p in sorted((SPECS / "models").glob("*.yaml")))}


def benchmark_specs() -> dict[str, ml.BenchmarkSpec]:
    return {b["name"]: ml.BenchmarkSpec(**b) for b in yaml.safe_load((SPECS / "benchmarks.yaml").read_text())}


training_set_partitions = dg.StaticPartitionsDefinition(sorted(training_set_specs()))
model_partitions = dg.StaticPartitionsDefinition(sorted(model_specs()))
benchmark_partitions = dg.MultiPartitionsDefinition(
    {"model": model_partitions, "benchmark": dg.StaticPartitionsDefinition(sorted(benchmark_specs()))})
