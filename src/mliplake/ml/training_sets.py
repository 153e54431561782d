"""Training sets: a spec (filter, split, isolated-atom energies, keys) materialised as an immutable,
content-addressed snapshot in the lake: Parquet, MACE-ready extxyz files and a manifest.

The split of a configuration depends only on the seed and its own id (or its group's value),
so adding data to the lake never moves a frame from train to test; the same spec on the same
data gives the same content hash, and a changed lake gives a new version beside the old one.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import yaml

from mliplake import __version__, filters
from mliplake.core.schema import CONFIGURATIONS
from mliplake.filters.sql import where
from mliplake.query.export import frames, write_extxyz

if TYPE_CHECKING:
    from mliplake.lake import Lake

SPLITS = ("train", "valid", "test")
ROOT = "tables/training_sets"


class SpecError(ValueError):
    """A training-set or model spec that cannot be used."""


@dataclass
class SplitSpec:
    method: str = "random"  # random | group
    key: str = ""  # group: config_type, structure_hash, dataset or info.<key>
    fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "valid": 0.1, "test": 0.1})
    seed: int = 0


@dataclass
class E0Spec:
    source: str = "isolated"  # isolated | table | average
    table: dict[str, float] = field(default_factory=dict)  # element -> eV, for source: table


@dataclass
class TrainingSetSpec:
    name: str
    filter: str = ""
    split: SplitSpec = field(default_factory=SplitSpec)
    e0s: E0Spec = field(default_factory=E0Spec)
    keys: dict[str, str] = field(default_factory=lambda: {"energy": "REF_energy", "forces": "REF_forces",
                                                          "stress": "REF_stress"})
    description: str = ""

    def canonical(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def load_spec(source: str | Path | dict[str, Any]) -> TrainingSetSpec:
    """A spec from a YAML file, a YAML/JSON string or a dict; checked (the filter too)."""
    raw = source
    if isinstance(source, Path) or (isinstance(source, str) and Path(source).suffix in (".yaml", ".yml", ".json")
                                    and Path(source).exists()):
        raw = yaml.safe_load(Path(source).read_text())
    elif isinstance(source, str):
        raw = yaml.safe_load(source)
    if not isinstance(raw, dict) or not raw.get("name"):
        raise SpecError("training-set spec: needs at least a name")
    split = SplitSpec(**(raw.get("split") or {}))
    if split.method not in ("random", "group"):
        raise SpecError(f"training-set spec: split.method {split.method!r} is not random or group")
    if split.method == "group" and not split.key:
        raise SpecError("training-set spec: a group split needs split.key (e.g. config_type or structure_hash)")
    if set(split.fractions) - set(SPLITS) or abs(sum(split.fractions.values()) - 1) > 1e-9:
        raise SpecError(f"training-set spec: split.fractions must be over {SPLITS} and sum to 1")
    e0s = E0Spec(**(raw.get("e0s") or {}))
    if e0s.source not in ("isolated", "table", "average"):
        raise SpecError(f"training-set spec: e0s.source {e0s.source!r} is not isolated, table or average")
    spec = TrainingSetSpec(name=str(raw["name"]), filter=str(raw.get("filter") or ""), split=split, e0s=e0s,
                           keys={**TrainingSetSpec("x").keys, **(raw.get("keys") or {})},
                           description=str(raw.get("description") or ""))
    filters.parse(spec.filter)  # a bad filter fails here, with its position
    return spec


def _unit(seed: int, value: str) -> float:
    """A uniform number in [0, 1) from the seed and a value: the same on every machine."""
    h = hashlib.sha256(f"{seed}\x00{value}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _assign(values: list[str], split: SplitSpec) -> list[str]:
    edges = np.cumsum([split.fractions.get(s, 0.0) for s in SPLITS])
    return [SPLITS[min(int(np.searchsorted(edges, _unit(split.seed, v), side="right")), 2)] for v in values]


def _group_expr(key: str) -> str:
    if key.startswith("info."):
        name = key[5:]
        if not filters.KEY.match(name):
            raise SpecError(f"training-set spec: bad key {key!r}")
        return f"coalesce(json_extract_string(info, '$.\"{name}\"'), '')"
    if key in ("config_type",):
        return "coalesce(info->>'config_type', '')"
    if key in ("structure_hash", "dataset", "deposit_id", "chemical_formula_reduced", "source_file"):
        return key
    raise SpecError(f"training-set spec: cannot group by {key!r}")


def _e0s(spec: E0Spec, isolated: pa.Table, train: pa.Table) -> dict[str, float]:
    if spec.source == "table":
        return dict(spec.table)
    if spec.source == "isolated":
        out: dict[str, float] = {}
        for row in isolated.select(["elements", "energy"]).to_pylist():
            out.setdefault(row["elements"][0], row["energy"])
        return out
    # average: least squares of total energy against element counts over the training frames
    rows = train.select(["numbers", "energy"]).to_pylist()
    zs = sorted({z for r in rows for z in r["numbers"]})
    a = np.array([[r["numbers"].count(z) for z in zs] for r in rows], dtype=float)
    e = np.array([r["energy"] for r in rows])
    coef, *_ = np.linalg.lstsq(a, e, rcond=None)
    from mliplake.core.chemistry import SYMBOLS

    return {str(SYMBOLS[z]): float(c) for z, c in zip(zs, coef)}


@dataclass
class TrainingSet:
    name: str
    version: str  # the content hash, 16 hex digits
    path: str  # folder in the lake
    manifest: dict[str, Any]

    def file(self, split: str) -> str:
        return f"{self.path}/{split}.xyz"

    def config_ids(self, split: str | None = None) -> list[str]:
        ids = self.manifest["config_ids"]
        return ids[split] if split else [i for s in SPLITS for i in ids[s]]


def materialise(lake: Lake, spec: TrainingSetSpec) -> TrainingSet:
    """Select, split and write the snapshot (or find the identical one already there)."""
    clause, params = where(filters.parse(spec.filter))
    group = _group_expr(spec.split.key) if spec.split.method == "group" else "config_id"
    cols = ", ".join(f'"{f.name}"' for f in CONFIGURATIONS)
    con = lake.connection()
    con.execute("BEGIN TRANSACTION")  # one snapshot: the version recorded is the version read
    try:
        lake_version = int(con.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0])
        table = con.execute(
            f"SELECT {cols}, {group} AS split_group FROM configurations WHERE {clause} ORDER BY config_id",
            params).to_arrow_table()
    finally:
        con.execute("COMMIT")
    if table.num_rows == 0:
        raise SpecError(f"training set {spec.name}: the filter selects nothing")
    nsites = np.asarray(table.column("nsites"))
    ctype = [json.loads(i or "{}").get("config_type") for i in table.column("info").to_pylist()]
    is_iso = (nsites == 1) | np.array([c == "IsolatedAtom" for c in ctype])
    labelled = ~np.asarray(table.column("energy").is_null())
    isolated = table.filter(pa.array(is_iso & labelled))
    rest = table.filter(pa.array(~is_iso & labelled))
    split = _assign([str(v) for v in rest.column("split_group").to_pylist()], spec.split)
    rest = rest.append_column("split", pa.array(split))
    members = {s: [cid for cid, sp in zip(rest.column("config_id").to_pylist(), split) if sp == s] for s in SPLITS}
    e0s = _e0s(spec.e0s, isolated, rest.filter(pa.compute.equal(rest.column("split"), "train")))
    content = hashlib.sha256(json.dumps({"spec": json.loads(spec.canonical()), "members": members, "e0s": e0s},
                                        sort_keys=True).encode()).hexdigest()
    version = content[:16]
    path = lake.path(ROOT, spec.name, version)
    if lake.fs.exists(f"{path}/manifest.json"):
        return TrainingSet(spec.name, version, path, lake.read_json(f"{path}/manifest.json"))
    deposits = sorted(set(rest.column("deposit_id").to_pylist()) | set(isolated.column("deposit_id").to_pylist()))
    manifest = {
        "name": spec.name, "version": version, "content_hash": content, "spec": asdict(spec),
        "filter": spec.filter, "seed": spec.split.seed, "e0s": e0s,
        "counts": {s: len(members[s]) for s in SPLITS} | {"isolated": isolated.num_rows},
        "config_ids": members, "isolated_config_ids": isolated.column("config_id").to_pylist(),
        "source_deposits": {d: _deposit_hash(lake, d) for d in deposits},
        "source_datasets": sorted(set(rest.column("dataset").to_pylist()) | set(isolated.column("dataset").to_pylist())),
        "lake_version": lake_version,
        "mliplake_version": __version__, "code_version": _git_version(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write(lake, path, rest.drop_columns(["split_group"]), isolated, manifest)
    return TrainingSet(spec.name, version, path, manifest)


def _deposit_hash(lake: Lake, deposit_id: str) -> str:
    files = lake.record(deposit_id).get("files", [])
    return hashlib.sha256("".join(f"{f['name']}:{f['sha256']}\n" for f in files).encode()).hexdigest()


def _git_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _write(lake: Lake, path: str, rows: pa.Table, isolated: pa.Table, manifest: dict[str, Any]) -> None:
    # isolated atoms are not written to the split files: their energies travel as the E0s of the manifest
    import tempfile

    lake.write_table(f"{path}/configurations.parquet", rows)
    with tempfile.TemporaryDirectory() as tmp:
        for s in SPLITS:
            part = rows.filter(pa.compute.equal(rows.column("split"), s)).drop_columns(["split"]).cast(CONFIGURATIONS)
            items = list(frames(part))
            for f, cid in zip(items, part.column("config_id").to_pylist()):
                f.info["config_id"] = cid  # lineage down to the row, in the file the trainer reads
            local = Path(tmp) / f"{s}.xyz"
            write_extxyz(local, iter(items))
            lake.put_file(local, f"{path}/{s}.xyz")
    lake.write_json(f"{path}/manifest.json", manifest)  # last: its presence marks a complete snapshot


def versions(lake: Lake, name: str | None = None) -> list[dict[str, Any]]:
    """Manifests of every materialised training set (without the id lists), newest first."""
    out = []
    scope = lake.scope()
    for p in lake.fs.glob(lake.path(ROOT, name or "*", "*", "manifest.json")):
        m = lake.read_json(p)
        if not all(scope.allows(d) for d in m.get("source_datasets", [])):
            continue  # a training set is as private as the most private data in it
        out.append({k: v for k, v in m.items() if k not in ("config_ids", "isolated_config_ids")})
    return sorted(out, key=lambda m: m["created_at"], reverse=True)


def load(lake: Lake, name: str, version: str | None = None) -> TrainingSet:
    if version is None:
        found = versions(lake, name)
        if not found:
            raise KeyError(f"no training set {name!r}")
        version = found[0]["version"]
    path = lake.path(ROOT, name, version)
    manifest = lake.read_json(f"{path}/manifest.json")
    if not all(lake.scope().allows(d) for d in manifest.get("source_datasets", [])):
        raise KeyError(f"no training set {name!r}")
    return TrainingSet(name, version, path, manifest)
