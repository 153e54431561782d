"""Quality gates for one deposit, computed in DuckDB; the Dagster asset checks call these.

Each returns a :class:`CheckOutcome`: passed or not, and the numbers behind the
verdict, so a failure in the UI says what to look at.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mliplake.lake import Lake

MAX_QUARANTINE_RATE = 0.2
MAX_DUPLICATE_RATE = 0.5
OUTLIER_Z = 12.0  # robust z-score (median / MAD) beyond which a value is an extreme outlier


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def labels_finite(lake: Lake, deposit_id: str) -> CheckOutcome:
    n_bad, n = lake.connection().sql(
        """SELECT count(*) FILTER (WHERE NOT (coalesce(isfinite(energy), TRUE)
                   AND coalesce(list_bool_and(list_transform(flatten(forces), lambda x: isfinite(x))), TRUE)
                   AND coalesce(list_bool_and(list_transform(stress, lambda x: isfinite(x))), TRUE))),
                  count(*)
           FROM configurations WHERE deposit_id = ?""", params=[deposit_id]).fetchall()[0]
    return CheckOutcome(n_bad == 0, f"{n_bad} of {n} configurations with a non-finite energy, force or stress",
                        {"non_finite": n_bad, "configurations": n})


def outliers(lake: Lake, deposit_id: str, dataset: str, z: float = OUTLIER_Z) -> CheckOutcome:
    """Per-atom energies and force maxima far outside the dataset's robust spread (isolated atoms excluded)."""
    rows = lake.connection().sql(f"""
        WITH d AS (SELECT deposit_id, energy_per_atom AS e, max_force AS f FROM configurations
                   WHERE dataset = ? AND nsites > 1),
             s AS (SELECT median(e) AS me, 1.4826 * mad(e) AS se, median(f) AS mf, 1.4826 * mad(f) AS sf FROM d)
        SELECT count(*) FILTER (WHERE se > 0 AND abs(e - me) / se > {z}),
               count(*) FILTER (WHERE sf > 0 AND abs(f - mf) / sf > {z}),
               count(*), any_value(me), any_value(se), any_value(mf), any_value(sf)
        FROM d, s WHERE deposit_id = ?""", params=[dataset, deposit_id]).fetchall()[0]
    n_e, n_f, n, me, se, mf, sf = rows
    return CheckOutcome(
        n_e == 0 and n_f == 0,
        f"{n_e} per-atom energies and {n_f} force maxima beyond {z:g} robust standard deviations of {dataset}",
        {"energy_outliers": n_e, "force_outliers": n_f, "configurations": n,
         "energy_per_atom_median": me, "energy_per_atom_robust_std": se,
         "max_force_median": mf, "max_force_robust_std": sf, "z": z})


def units_declared(lake: Lake, deposit_id: str) -> CheckOutcome:
    m = lake.record(deposit_id).get("manifest") or {}
    units = m.get("units") or {}
    declared = bool(units.get("declared"))
    return CheckOutcome(declared, "units declared in the manifest" if declared
                        else "no units in the manifest: eV and Å were assumed",
                        {k: v for k, v in units.items() if v is not None and k != "declared"})


def _rate(lake: Lake, deposit_id: str, key: str) -> tuple[float, int, int]:
    r = lake.record(deposit_id)
    read = r.get("frames_read", 0)
    return (r.get(key, 0) / read if read else 1.0), r.get(key, 0), read


def duplicate_rate(lake: Lake, deposit_id: str, limit: float = MAX_DUPLICATE_RATE) -> CheckOutcome:
    rate, n, read = _rate(lake, deposit_id, "duplicates")
    return CheckOutcome(rate <= limit, f"{n} of {read} frames were exact duplicates ({rate:.1%}; limit {limit:.0%})",
                        {"duplicate_rate": rate, "duplicates": n, "frames_read": read})


def quarantine_rate(lake: Lake, deposit_id: str, limit: float = MAX_QUARANTINE_RATE) -> CheckOutcome:
    rate, n, read = _rate(lake, deposit_id, "quarantined")
    reasons = lake.record(deposit_id).get("reasons", {})
    top = "; ".join(f"{c} x {w}" for w, c in list(reasons.items())[:3])
    return CheckOutcome(rate <= limit, f"{n} of {read} frames quarantined ({rate:.1%}; limit {limit:.0%})"
                        + (f": {top}" if top else ""),
                        {"quarantine_rate": rate, "quarantined": n, "frames_read": read})
