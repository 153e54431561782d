"""The catalogue: one card per dataset (with a quality score that explains itself) and the key registry.

Both are computed inside DuckDB from the lake and stored back into it as lake tables
(``catalogue``, ``key_registry``), which the views of the same names read, restricted to
what the principal may see.
"""
from __future__ import annotations

import json
import threading
import weakref
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from mliplake.query.engine import per_snapshot, register_view

if TYPE_CHECKING:
    from mliplake.access import Scope
    from mliplake.lake import Lake

METADATA_FIELDS = ("title", "description", "authors", "license", "links_or_doi", "method.code",
                   "method.functional", "sampling")


def _metadata_complete(m: dict[str, Any]) -> tuple[float, list[str]]:
    method = m.get("method") or {}
    have = {
        "title": bool(m.get("title")), "description": bool(m.get("description")),
        "authors": bool(m.get("authors")), "license": bool(m.get("license")),
        "links_or_doi": bool(m.get("links") or m.get("doi")), "method.code": bool(method.get("code")),
        "method.functional": bool(method.get("functional")), "sampling": bool(m.get("sampling")),
    }
    missing = [k for k, v in have.items() if not v]
    return 1 - len(missing) / len(have), missing


def cards(lake: Lake, dataset: str | None = None) -> list[dict[str, Any]]:
    """A card per dataset (or for one): metadata from its latest deposit, numbers from DuckDB, a
    quality score."""
    con = lake.connection()
    where, params = ("WHERE dataset = ?", [dataset]) if dataset is not None else ("", [])
    stats = {r[0]: r for r in con.execute(f"""
        SELECT dataset, count(*), sum(nsites),
               avg(CAST(has_energy AS DOUBLE)), avg(CAST(has_forces AS DOUBLE)), avg(CAST(has_stress AS DOUBLE)),
               sum(CAST(has_virial AS INTEGER)), count(charges), count(magmoms), count(dipole),
               min(energy_per_atom), max(energy_per_atom), avg(energy_per_atom), stddev_samp(energy_per_atom),
               min(max_force), max(max_force), avg(max_force), median(max_force)
        FROM configurations {where} GROUP BY dataset""", params).fetchall()}
    element_counts: dict[str, dict[str, int]] = {}
    for ds, el, n in con.execute(f"""SELECT dataset, e, count(*) FROM
                                     (SELECT dataset, unnest(elements) AS e FROM configurations {where})
                                     GROUP BY ALL ORDER BY 1, 3 DESC, 2""", params).fetchall():
        element_counts.setdefault(ds, {})[el] = n
    out = []
    records = [r for r in lake.records(dataset) if r.get("status") not in ("rejected", "retracted")]
    for dataset in sorted({r["dataset"] for r in records}):
        recs = [r for r in records if r["dataset"] == dataset]
        latest = max(recs, key=lambda r: r.get("created_at", ""))
        m = latest.get("manifest") or {}
        read = sum(r.get("frames_read", 0) for r in recs)
        dups = sum(r.get("duplicates", 0) for r in recs)
        quarantined = sum(r.get("quarantined", 0) for r in recs)
        s = stats.get(dataset)
        n = s[1] if s else 0
        props = [name for name, present in (
            ("energy", s and s[3]), ("forces", s and s[4]), ("stress", s and s[5]), ("virial", s and s[6]),
            ("charges", s and s[7]), ("magmoms", s and s[8]), ("dipole", s and s[9])) if present]
        meta, missing = _metadata_complete(m)
        parts = {
            "accepted": {"value": (read - quarantined) / read if read else 0.0,
                         "why": f"{read - quarantined} of {read} frames read passed validation"},
            "labels_complete": {"value": ((s[3] or 0) + (s[4] or 0)) / 2 if s else 0.0,
                                "why": "mean fraction of configurations with an energy and with forces"},
            "units_declared": {"value": 1.0 if all((r.get("manifest") or {}).get("units", {}).get("declared")
                                                  for r in recs) else 0.0,
                               "why": "every deposit's manifest declares its units" if all(
                                   (r.get("manifest") or {}).get("units", {}).get("declared") for r in recs)
                               else "some deposits did not declare units (eV/Å assumed)"},
            "metadata_complete": {"value": meta, "why": "missing: " + ", ".join(missing) if missing else "all present"},
            "unique": {"value": 1 - dups / read if read else 0.0,
                       "why": f"{dups} exact duplicates among {read} frames"},
        }
        score = sum(p["value"] for p in parts.values()) / len(parts)
        out.append({
            "dataset": dataset, "title": m.get("title", ""), "description": m.get("description", ""),
            "authors": m.get("authors", []), "license": m.get("license", ""), "links": m.get("links", []),
            "doi": m.get("doi", ""), "method": json.dumps(m.get("method") or {}, sort_keys=True),
            "sampling": json.dumps(m.get("sampling")) if not isinstance(m.get("sampling"), str) else m["sampling"],
            "visibility": m.get("visibility", "public"),
            "deposits": len(recs), "configurations": n, "atoms": int(s[2]) if s else 0,
            "frames_read": read, "duplicates": dups, "quarantined": quarantined,
            "elements": list(element_counts.get(dataset, {})),
            "element_counts": json.dumps(element_counts.get(dataset, {})),
            "properties": props,
            "energy_per_atom_min": s and s[10], "energy_per_atom_max": s and s[11],
            "energy_per_atom_mean": s and s[12], "energy_per_atom_std": s and s[13],
            "max_force_min": s and s[14], "max_force_max": s and s[15], "max_force_mean": s and s[16],
            "max_force_median": s and s[17],
            "quality_score": round(score, 4), "quality": json.dumps(parts),
            "created_at": min(r.get("created_at", "") for r in recs), "updated_at": latest.get("created_at", ""),
        })
    return out


_CACHE: weakref.WeakKeyDictionary[Any, tuple[int, list[dict[str, Any]]]] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def visible_cards(lake: Lake, dataset: str | None = None) -> list[dict[str, Any]]:
    """The cards the principal may see (or the one of ``dataset``), as :func:`cards` gives them now.

    Every card is computed once per lake snapshot and process (a card holds only its own dataset's
    numbers, so a scope just picks cards); until then a single dataset's card is computed alone."""
    from mliplake.access import Principal

    snap = lake.tables.snapshot()
    with _CACHE_LOCK:
        hit = _CACHE.get(lake.tables)
    if hit is None or hit[0] != snap:
        if dataset is not None:
            return per_snapshot(lake, ("card", dataset), lambda: cards(lake, dataset))
        everything = lake.as_principal(Principal.local_owner())
        snap = lake.tables.snapshot()  # the cards below are at least this new
        hit = (snap, cards(everything))
        with _CACHE_LOCK:
            _CACHE[lake.tables] = hit
    scope = lake.scope()
    return [c for c in hit[1] if scope.allows(c["dataset"]) and (dataset is None or c["dataset"] == dataset)]


CARD_SCHEMA = pa.schema([
    ("dataset", pa.string()), ("title", pa.string()), ("description", pa.string()), ("authors", pa.list_(pa.string())),
    ("license", pa.string()), ("links", pa.list_(pa.string())), ("doi", pa.string()), ("method", pa.string()),
    ("sampling", pa.string()), ("visibility", pa.string()), ("deposits", pa.int64()), ("configurations", pa.int64()),
    ("atoms", pa.int64()), ("frames_read", pa.int64()), ("duplicates", pa.int64()), ("quarantined", pa.int64()),
    ("elements", pa.list_(pa.string())), ("element_counts", pa.string()), ("properties", pa.list_(pa.string())),
    ("energy_per_atom_min", pa.float64()), ("energy_per_atom_max", pa.float64()),
    ("energy_per_atom_mean", pa.float64()), ("energy_per_atom_std", pa.float64()),
    ("max_force_min", pa.float64()), ("max_force_max", pa.float64()), ("max_force_mean", pa.float64()),
    ("max_force_median", pa.float64()), ("quality_score", pa.float64()), ("quality", pa.string()),
    ("created_at", pa.string()), ("updated_at", pa.string()),
])


def refresh(lake: Lake) -> tuple[pa.Table, pa.Table]:
    """Rebuild the dataset cards and the key registry, store both as lake tables; returns them."""
    card_table = pa.Table.from_pylist(cards(lake), schema=CARD_SCHEMA)
    keys = lake.keys()
    keys = keys.append_column("refreshed_at", pa.array([datetime.now(timezone.utc).isoformat()] * keys.num_rows))
    lake.tables.replace_table("catalogue", card_table, "catalogue refresh")
    lake.tables.replace_table("key_registry", keys, "key registry refresh")
    return card_table, keys


def _catalogue_view(lake: Lake, scope: Scope, schema: str) -> str | None:
    """Cards of the datasets the principal may see; visibility as the access policy says now."""
    if not lake.tables.has_table("catalogue"):
        return None
    return (f"SELECT c.* REPLACE (coalesce(p.visibility, 'public') AS visibility) FROM lake.catalogue c "
            f"LEFT JOIN lake.policies p USING (dataset) WHERE {scope.sql_predicate('c.dataset')}")


def _key_registry_view(lake: Lake, scope: Scope, schema: str) -> str | None:
    """The stored registry for whoever sees everything; for anyone else, computed from what they may
    see (its counts and dataset lists would otherwise tell of private data)."""
    if scope.datasets is None and lake.tables.has_table("key_registry"):
        return "SELECT * FROM lake.key_registry"
    return f"SELECT *, NULL::VARCHAR AS refreshed_at FROM {schema}.keys"


register_view("catalogue", _catalogue_view)
register_view("key_registry", _key_registry_view)
