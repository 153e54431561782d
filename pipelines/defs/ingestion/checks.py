"""Quality gates on each deposit's configurations (blocking where bad data must not flow on)."""

import dagster as dg

from mliplake.ingest import checks, inbox
from mliplake.ingest.checks import CheckOutcome
from pipelines.defs.ingestion.assets import configurations
from pipelines.defs.partitions import deposits
from pipelines.defs.resources import LakeResource


def _result(outcome: CheckOutcome, severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=outcome.passed, severity=severity, description=outcome.description,
                               metadata=outcome.metadata)


def _deposit(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> tuple:
    lk = lake.lake()
    staged = inbox.staged(lk, context.partition_key)
    return lk, staged.deposit_id, staged.manifest.dataset


@dg.asset_check(asset=configurations, partitions_def=deposits, blocking=True)
def labels_finite(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    """Every stored energy, force and stress is a finite number."""
    lk, dep, _ = _deposit(context, lake)
    return _result(checks.labels_finite(lk, dep), dg.AssetCheckSeverity.ERROR)


@dg.asset_check(asset=configurations, partitions_def=deposits, blocking=True)
def quarantine_rate(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    """At most 20% of the deposit's frames were rejected."""
    lk, dep, _ = _deposit(context, lake)
    return _result(checks.quarantine_rate(lk, dep), dg.AssetCheckSeverity.ERROR)


@dg.asset_check(asset=configurations, partitions_def=deposits)
def no_extreme_outliers(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    """Per-atom energies and force maxima within 12 robust standard deviations of their dataset."""
    lk, dep, dataset = _deposit(context, lake)
    return _result(checks.outliers(lk, dep, dataset), dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset=configurations, partitions_def=deposits)
def units_declared(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    """The manifest says which units the data is in."""
    lk, dep, _ = _deposit(context, lake)
    return _result(checks.units_declared(lk, dep), dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset=configurations, partitions_def=deposits)
def duplicate_rate(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    """At most half of the deposit's frames are exact duplicates of stored ones."""
    lk, dep, _ = _deposit(context, lake)
    return _result(checks.duplicate_rate(lk, dep), dg.AssetCheckSeverity.WARN)
