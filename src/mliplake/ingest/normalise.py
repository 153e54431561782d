"""Normalisation and validation of a batch of frames into canonical Arrow rows.

One pass per frame does what only a frame can (pick labels by key map and
aliases, check types and shapes, encode the remaining keys as JSON); everything
numeric (validation of finite values, unit conversion, derived columns,
composition formulas) then runs over the whole batch at once with numpy.

Values are taken by their type, never coerced: ``True`` is not 1 eV and
``"false"`` is not periodic.  A frame that holds one is rejected with a reason
naming the key.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from mliplake.core import hashing
from mliplake.core.chemistry import MAX_Z, Z_OF, compositions
from mliplake.core.manifest import ALIASES, Manifest, Units
from mliplake.core.schema import CONFIGURATIONS, HASH_VERSION, LABELS
from mliplake.core.units import UnitError, stress_to_3x3
from mliplake.readers import RawFrame, describe, parse_pbc

PER_ATOM = {k for k, (per_atom, _) in LABELS.items() if per_atom}


@dataclass
class Rejection:
    frame_index: int | None
    reason: str


@dataclass(frozen=True)
class _Plan:
    picks: tuple[tuple[str, str, bool], ...]  # (label, source key, from arrays?)
    missing: tuple[str, ...]  # labels the manifest requires that the frame lacks
    keys: tuple[tuple[str, str], ...]  # (source key, label), for provenance
    usage_keys: tuple[str, ...]  # "source->target" of every label picked and key renamed
    copy: bool
    fault: str | None = None  # keys no query could address: every frame with them is rejected


@dataclass
class FileContext:
    """What every frame of one source file shares."""

    dataset: str
    deposit_id: str
    source_file: str
    manifest: Manifest
    file_info: dict[str, Any] = field(default_factory=dict)
    deposited_at: str = ""

    def __post_init__(self) -> None:
        m = self.manifest
        self.factors = m.units.factors()
        self.method_bytes = hashing.method_bytes(m.method)
        self.method_json = json.dumps(m.method, sort_keys=True, default=str)
        # explicit key-map entries are tried before the built-in aliases
        self.sources: dict[str, tuple[str, ...]] = {
            label: tuple(k for k, v in m.key_map.items() if v == label) + ALIASES[label] for label in LABELS
        }
        self.renames = {k: v for k, v in m.key_map.items() if v not in LABELS}
        # JSON records keep keys they do not know as per-atom in info: mapped ones are labels all the same
        self.mapped = {label: tuple(k for k, v in m.key_map.items() if v == label) for label in LABELS}
        self.alias_keys = frozenset(k for srcs in self.sources.values() for k in srcs)
        units = {
            "energy": m.units.energy, "length": m.units.length,
            "forces": m.units.forces or f"{m.units.energy}/{m.units.length}",
            "stress": m.units.stress or f"{m.units.energy}/{m.units.length}^3",
            "stress_convention": m.units.stress_convention, "declared": m.units.declared,
        }
        self._prov_head = json.dumps(
            {"source_file": self.source_file, "deposited_at": self.deposited_at, "submitter": m.submitter,
             "units": units}
        )[:-1]
        self._prov_cache: dict[tuple, str] = {}
        self._plans: dict[tuple, _Plan] = {}

    def plan(self, info: dict[str, Any], arrays: dict[str, Any]) -> _Plan:
        """Which key becomes which label, worked out once per distinct set of keys."""
        sig = (tuple(info), tuple(arrays))
        plan = self._plans.get(sig)
        if plan is None:
            plan = self._plans[sig] = self._make_plan(info.keys(), arrays.keys())
        return plan

    def _make_plan(self, info_keys: Any, array_keys: Any) -> _Plan:
        fault = _unaddressable(info_keys, "info") or _unaddressable(array_keys, "arrays")
        renamed = tuple(f"{k}->{self.renames[k]}" for keys in (info_keys, array_keys) for k in keys
                        if k in self.renames)
        info_keys = {self.renames.get(k, k) for k in info_keys} | set(self.file_info)
        array_keys = {self.renames.get(k, k) for k in array_keys}
        picks = []
        for label, sources in self.sources.items():
            per_atom = label in PER_ATOM
            src = next((k for k in sources if k in (array_keys if per_atom else info_keys)), None)
            if src is None and per_atom:
                src = next((k for k in self.mapped[label] if k in info_keys), None)
                per_atom = False
            if src is not None:
                picks.append((label, src, per_atom))
        found = {p[0] for p in picks}
        missing = tuple(lab for lab in self.manifest.labels
                        if lab not in found and not (lab == "stress" and "virial" in found))
        keys = tuple((src, label) for label, src, _ in picks)
        return _Plan(tuple(picks), missing, keys, tuple(f"{a}->{b}" for a, b in keys) + renamed,
                     copy=bool(picks or self.renames or self.file_info), fault=fault)

    def provenance(self, index: int, keys: tuple[tuple[str, str], ...], extra: dict | None) -> str:
        if extra:
            return self._prov_head + f', "frame_index": {index}, "keys": {json.dumps(dict(keys))}, "record": {_dumps(extra)}}}'
        tail = self._prov_cache.get(keys)
        if tail is None:
            tail = self._prov_cache[keys] = f', "keys": {json.dumps(dict(keys))}}}'
        return f'{self._prov_head}, "frame_index": {index}{tail}'


def _unaddressable(keys: Any, where: str) -> str | None:
    """Why a key could never be named in a query (``info->>'key'``), or None."""
    for k in keys:
        if not isinstance(k, str):
            return f"{where} key {k!r} is {describe(k)}, not a string: it could not be addressed"
        if not k:
            return f"{where} has an empty key: it could not be addressed"
        if "\x00" in k:
            return f"{where} key {k!r} holds a NUL byte: it could not be addressed"
    return None


def _np_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    if hasattr(o, "todict"):  # ASE objects (Spacegroup, constraints, ...) serialise themselves
        return o.todict()
    return str(o)  # anything else, as text rather than lost


def _finite_only(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite_only(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_finite_only(v) for v in o]
    return o


_encode = json.JSONEncoder(default=_np_default).encode  # one encoder: json.dumps(default=) builds one per call


def _dumps(d: dict[str, Any]) -> str:
    s = _encode(d)
    if "NaN" in s or "Infinity" in s:
        # JSON has no NaN/inf: such values are stored as null so DuckDB can read the column.
        s = json.dumps(_finite_only(json.loads(s)))
    return s


def _json_column(d: dict[str, Any], where: str) -> str:
    """``d`` as the text of a JSON column; a value JSON cannot hold rejects the frame, not the batch."""
    if not d:
        return "{}"
    try:
        return _dumps(d)
    except (RecursionError, ValueError, TypeError) as e:  # nesting past the stack, circular values
        raise _Reject(f"{where} cannot be stored as JSON: {e.__class__.__name__}: {str(e)[:80]}") from None


class _Reject(Exception):
    pass


@dataclass
class _Batch:
    """Accepted frames of a batch, collected column by column."""

    index: list[int] = field(default_factory=list)
    numbers: list[np.ndarray] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)
    cell: list[np.ndarray] = field(default_factory=list)
    pbc: list[np.ndarray] = field(default_factory=list)
    labels: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in LABELS})
    info: list[str] = field(default_factory=list)
    arrays: list[str] = field(default_factory=list)
    provenance: list[str] = field(default_factory=list)
    factors: list[dict[str, float]] = field(default_factory=list)

    def subset(self, keep: np.ndarray) -> _Batch:
        pick = lambda xs: [x for x, k in zip(xs, keep) if k]  # noqa: E731
        out = _Batch(**{name: pick(getattr(self, name)) for name in
                        ("index", "numbers", "positions", "cell", "pbc", "info", "arrays", "provenance", "factors")})
        out.labels = {k: pick(v) for k, v in self.labels.items()}
        return out


# symbols -> Z by binary search in a sorted table: vectorised, no Python loop over atoms
_SORTED_SYMBOLS = np.array(sorted(Z_OF))
_SORTED_Z = np.array([Z_OF[s] for s in _SORTED_SYMBOLS], dtype=np.uint8)


def _holds_bool(value: list) -> bool:
    """Whether nested lists hold a boolean: numpy turns ``[True, 0.5]`` into ``[1.0, 0.5]`` unasked."""
    level: list = value
    while level:
        types = set(map(type, level))
        if bool in types:
            return True
        level = [x for x in level if type(x) is list] if list in types else []
        level = [y for x in level for y in x]
    return False


def _array(name: str, value: Any, kinds: str, want: str) -> np.ndarray:
    """``value`` as an array whose dtype kind is one of ``kinds``; else a rejection naming ``name``.

    The file's own types decide: a boolean or a numeric string is refused, not converted.
    """
    if type(value) is np.ndarray:
        arr = value
    else:
        if isinstance(value, (str, bytes, dict)):
            raise _Reject(f"{name}: expected a list of {want}, got {describe(value)}")
        try:
            arr = np.asarray(value)
        except ValueError:
            raise _Reject(f"{name}: expected {want}, got nested lists of uneven lengths") from None
        if arr.dtype.kind in "iuf" and isinstance(value, list) and _holds_bool(value):
            raise _Reject(f"{name}: expected {want}, got a boolean among them")
    if arr.dtype.kind not in kinds:
        got = describe(value) if arr.ndim == 0 else f"{_KIND_NAMES.get(arr.dtype.kind, str(arr.dtype))}"
        raise _Reject(f"{name}: expected {want}, got {got}")
    return arr


_KIND_NAMES = {"b": "booleans", "U": "strings", "S": "strings", "O": "mixed values (null, lists, mappings)",
               "f": "non-integers", "c": "complex numbers", "i": "integers", "u": "integers"}


_F64 = np.dtype(np.float64)
_BOOL = np.dtype(bool)


def _floats(name: str, value: Any) -> np.ndarray:
    if type(value) is np.ndarray and value.dtype is _F64:  # what the extxyz parser gives: no checks to make
        return value
    arr = _array(name, value, "iuf", "numbers")
    return arr if arr.dtype == np.float64 else arr.astype(float)


def _species(frame: RawFrame) -> np.ndarray:
    """Atomic numbers (checked), or symbols as strings, mapped later for the whole batch at once."""
    if frame.numbers is not None:
        nums = _array("numbers", frame.numbers, "iu", "atomic numbers (integers)")
        if nums.ndim != 1:
            raise _Reject(f"numbers: expected a list of atomic numbers, got shape {nums.shape}")
        bad = nums[(nums < 1) | (nums > MAX_Z)]
        if bad.size:
            raise _Reject(f"unknown element: atomic number {int(bad[0])}")
        return nums.astype(np.uint8)
    if frame.symbols is None:
        raise _Reject("no species: neither symbols nor atomic numbers")
    syms = frame.symbols
    if type(syms) is np.ndarray and syms.dtype.kind == "U" and syms.ndim == 1:
        return syms
    syms = _array("symbols", syms, "US", "element symbols (strings)")
    if syms.ndim != 1:
        raise _Reject(f"symbols: expected a list of element symbols, got shape {syms.shape}")
    return syms if syms.dtype.kind == "U" else syms.astype(str)


def _numbers(species: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Flat atomic numbers of a batch, and per atom whether the symbol was unknown."""
    if all(s.dtype.kind == "U" for s in species):  # the common case: symbols throughout
        flat = np.concatenate(species)
        idx = np.minimum(np.searchsorted(_SORTED_SYMBOLS, flat), len(_SORTED_SYMBOLS) - 1)
        return _SORTED_Z[idx], _SORTED_SYMBOLS[idx] != flat
    out = np.empty(sum(len(s) for s in species), dtype=np.uint8)
    unknown = np.zeros(len(out), bool)
    syms = [(i, s) for i, s in enumerate(species) if s.dtype.kind == "U"]
    offsets = np.cumsum([0] + [len(s) for s in species])
    for i, s in enumerate(species):
        if s.dtype.kind != "U":
            out[offsets[i]:offsets[i + 1]] = s
    if syms:
        flat = np.concatenate([s for _, s in syms])
        idx = np.minimum(np.searchsorted(_SORTED_SYMBOLS, flat), len(_SORTED_SYMBOLS) - 1)
        bad = _SORTED_SYMBOLS[idx] != flat
        where = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i, _ in syms])
        out[where] = _SORTED_Z[idx]
        unknown[where] = bad
    return out, unknown


_NON_FINITE = frozenset({"nan", "inf", "infinity"})


def _scalar(name: str, value: Any) -> float:
    """A label that is one number: an int or float, not a boolean, a string or a list of one."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return float(value)
    if type(value) is np.ndarray and value.ndim == 0 and value.dtype.kind in "iuf":
        return float(value)
    if isinstance(value, str) and value.strip().lower().lstrip("+-") in _NON_FINITE:
        return float(value)  # how extxyz writes NaN and inf (the C parser leaves them text): rejected later as such
    what = "a list" if isinstance(value, np.ndarray) and value.ndim else describe(value)
    raise _Reject(f"{name}: expected a number, got {what}")


def _label_value(name: str, value: Any, n: int, convention: str) -> np.ndarray | float:
    if name == "energy":
        return value if type(value) is float else _scalar(name, value)  # float: the common case, no numpy
    arr = _floats(name, value)
    if name in PER_ATOM:
        want = (n, 3) if name == "forces" else (n,)
        if arr.shape != want:
            raise _Reject(f"{name} has shape {arr.shape}, expected {want} for {n} atoms")
        return arr
    if name in ("stress", "virial"):
        if arr.size not in (6, 9):
            raise _Reject(f"{name} has {arr.size} components, expected 6 (Voigt) or 9")
        return stress_to_3x3(arr.ravel(), convention)[0]
    if arr.shape != (3,):
        raise _Reject(f"{name} has shape {arr.shape}, expected (3,)")
    return arr


_UNIT_KEYS = ("energy", "length", "forces", "stress", "stress_convention")


def _factors(ctx: FileContext, frame: RawFrame) -> dict[str, float]:
    if not frame.units:
        return ctx.factors
    units = frame.units
    if not isinstance(units, dict):
        raise _Reject(f"record units: expected a mapping such as {{energy: eV}}, got {describe(units)}")
    unknown = sorted(str(k) for k in units if k not in _UNIT_KEYS)
    if unknown:
        raise _Reject(f"record units: unknown entries {unknown}; known: {', '.join(_UNIT_KEYS)}")
    odd = next((k for k, v in units.items() if not isinstance(v, str)), None)
    if odd is not None:
        raise _Reject(f"record units: {odd}: expected a unit name, got {describe(units[odd])}")
    m = ctx.manifest.units
    merged = {"energy": m.energy, "length": m.length, "forces": m.forces, "stress": m.stress,
              "stress_convention": m.stress_convention}
    merged.update(units)
    if "energy" in units or "length" in units:
        merged.setdefault("forces", None)
    try:
        return Units(**merged, declared=True).factors() | {"convention": merged["stress_convention"]}
    except (UnitError, TypeError) as e:
        raise _Reject(f"record units: {e}") from None


def _cell(value: Any) -> np.ndarray:
    if value is None:
        return np.zeros((3, 3))
    if type(value) is np.ndarray and value.dtype is _F64 and value.shape == (3, 3):
        return value
    cell = _floats("cell", value)
    if cell.shape == (3,):  # JSON records may give the lengths of a rectangular box, or 9 numbers
        return np.diag(cell)
    if cell.shape == (9,):
        return cell.reshape(3, 3)
    if cell.shape != (3, 3):
        raise _Reject(f"cell has shape {cell.shape}, expected (3, 3)")
    return cell


def _pbc(value: Any) -> np.ndarray:
    if type(value) is np.ndarray and value.dtype is _BOOL and value.shape == (3,):
        return value
    if value is None:
        return np.zeros(3, bool)
    try:
        return parse_pbc(value)
    except ValueError as e:
        raise _Reject(str(e)) from None


def _take_frame(frame: RawFrame, ctx: FileContext, out: _Batch, usage: dict[str, int]) -> None:
    pos = frame.positions
    if pos is None:
        raise _Reject("no positions")
    pos = _floats("positions", pos)
    if pos.size == 0:
        raise _Reject("no atoms")
    n = len(pos) if pos.ndim else 0
    if pos.shape != (n, 3):
        raise _Reject(f"positions have shape {pos.shape}, expected (number of atoms, 3)")
    species = _species(frame)
    if len(species) != n:
        raise _Reject(f"{len(species)} species for {n} positions")
    cell = _cell(frame.cell)
    pbc = _pbc(frame.pbc)
    factors = _factors(ctx, frame)
    convention = factors.get("convention", ctx.manifest.units.stress_convention)

    info, arrays = frame.info, frame.arrays
    plan = ctx.plan(info, arrays)
    if plan.fault is not None:
        raise _Reject(plan.fault)
    if plan.copy:
        info, arrays = dict(info), dict(arrays)  # the caller's frame stays as it was read
    if ctx.renames:
        info = {ctx.renames.get(k, k): v for k, v in info.items()}
        arrays = {ctx.renames.get(k, k): v for k, v in arrays.items()}
    for k, v in ctx.file_info.items():
        info.setdefault(k, v)
    found: dict[str, Any] = {}
    for label, src, per_atom in plan.picks:
        found[label] = _label_value(label, (arrays if per_atom else info).pop(src), n, convention)
    if plan.missing:
        raise _Reject(f"missing label {', '.join(plan.missing)} (the manifest requires {ctx.manifest.labels})")
    for k, v in arrays.items():
        rows = _rows(v)
        if rows != n:
            raise _Reject(f"per-atom array {k!r} has {rows} rows for {n} atoms")
    info_json, arrays_json = _json_column(info, "info"), _json_column(arrays, "arrays")

    keys = plan.keys
    for k in plan.usage_keys:
        usage[k] = usage.get(k, 0) + 1
    out.info.append(info_json)
    out.arrays.append(arrays_json)
    out.provenance.append(ctx.provenance(frame.index, keys, frame.provenance))
    out.index.append(frame.index)
    out.numbers.append(species)
    out.positions.append(pos)
    out.cell.append(cell)
    out.pbc.append(pbc)
    out.factors.append(factors)
    for label in LABELS:
        out.labels[label].append(found.get(label))


def _rows(value: Any) -> int:
    if type(value) is np.ndarray:
        return len(value) if value.ndim else 0
    return len(value) if isinstance(value, (list, tuple)) else 0


def _list_array(values: np.ndarray, offsets: np.ndarray, width: int | None = None,
                mask: np.ndarray | None = None) -> pa.Array:
    inner = pa.array(values.ravel())
    if width:
        inner = pa.ListArray.from_arrays(pa.array(np.arange(0, len(inner) + 1, width, dtype=np.int32)), inner)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), inner,
                                    mask=pa.array(mask) if mask is not None else None)


def _fixed(values: np.ndarray, width: int, mask: np.ndarray | None = None) -> pa.Array:
    flat = pa.array(values.ravel())
    offsets = pa.array(np.arange(0, len(flat) + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, flat, mask=pa.array(mask) if mask is not None and mask.any() else None)


def _per_atom_label(vals: list[Any], nsites: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate a per-atom label that some frames lack: values, offsets, null mask."""
    present = np.array([v is not None for v in vals])
    lens = np.where(present, nsites, 0)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    parts = [v for v in vals if v is not None]
    flat = np.concatenate(parts).reshape(-1, width) if parts else np.zeros((0, width))
    return flat, offsets, ~present


def _frame_all(ok_rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per frame: are all its rows true (frames are non-empty)."""
    return np.logical_and.reduceat(ok_rows, offsets[:-1]) if len(offsets) > 1 else np.zeros(0, bool)


def normalise_batch(frames: list[RawFrame], ctx: FileContext,
                    usage: dict[str, int] | None = None) -> tuple[pa.Table, list[Rejection]]:
    """Canonical rows for the good frames of a batch, and a rejection for each bad one."""
    usage = {} if usage is None else usage
    rejected: list[Rejection] = []
    b = _Batch()
    for frame in frames:
        try:
            _take_frame(frame, ctx, b, usage)
        except _Reject as e:
            rejected.append(Rejection(frame.index, str(e)))
    while b.index:
        table, reasons = _columns(b, ctx)
        if not reasons:
            return table, rejected
        # numerically bad frames: reject them, build the columns again for the rest
        rejected += [Rejection(b.index[i], why) for i, why in sorted(reasons.items())]
        keep = np.ones(len(b.index), bool)
        keep[list(reasons)] = False
        b = b.subset(keep)
    return CONFIGURATIONS.empty_table(), rejected


def _columns(b: _Batch, ctx: FileContext) -> tuple[pa.Table | None, dict[int, str]]:
    """Pass two, over the whole batch: validate numbers, convert units, derive, hash, build Arrow."""
    nsites = np.array([len(x) for x in b.numbers], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(nsites)])
    frame_of_atom = np.repeat(np.arange(len(nsites)), nsites)
    numbers, unknown = _numbers(b.numbers)
    positions = np.concatenate(b.positions)
    cells = np.stack(b.cell)
    pbcs = np.stack(b.pbc)
    fac = {k: np.array([f[k] for f in b.factors]) for k in ("energy", "length", "forces", "stress", "stress_sign")}

    energy = np.array([np.nan if v is None else v for v in b.labels["energy"]], dtype=float)
    has_energy = np.array([v is not None for v in b.labels["energy"]])
    forces, f_off, f_null = _per_atom_label(b.labels["forces"], nsites, 3)
    mats = {}
    for name in ("stress", "virial"):
        present = np.array([v is not None for v in b.labels[name]])
        vals = np.full((len(present), 9), np.nan)
        if present.any():
            vals[present] = np.stack([v for v in b.labels[name] if v is not None])
        mats[name] = (vals, present)

    # ---- validation, vectorised; reasons are per frame
    reasons: dict[int, str] = {}

    def flag(bad: np.ndarray, why: str) -> None:
        for i in np.nonzero(bad)[0]:
            reasons.setdefault(int(i), why)

    if unknown.any():
        for i in np.unique(frame_of_atom[unknown]):
            sym = b.numbers[i][unknown[offsets[i]:offsets[i + 1]]][0]
            reasons.setdefault(int(i), f"unknown element {str(sym)!r}")
    flag(~_frame_all(np.isfinite(positions).all(axis=1), offsets), "non-finite positions (NaN or inf)")
    flag(~np.isfinite(cells).reshape(-1, 9).all(axis=1), "non-finite cell")
    flag(has_energy & ~np.isfinite(energy), "non-finite energy (NaN or inf)")
    if len(forces):
        ok = np.isfinite(forces).all(axis=1)
        per_frame = np.ones(len(nsites), bool)
        idx = np.nonzero(~f_null)[0]
        if len(idx):
            per_frame[idx] = np.logical_and.reduceat(ok, f_off[idx])
        flag(~per_frame, "non-finite forces (NaN or inf)")
    for name, (vals, present) in mats.items():
        flag(present & ~np.isfinite(vals).all(axis=1), f"non-finite {name} (NaN or inf)")
    for name in ("charges", "magmoms", "dipole"):
        bad = [v is not None and not np.isfinite(v).all() for v in b.labels[name]]
        flag(np.array(bad), f"non-finite {name} (NaN or inf)")

    cells = cells * fac["length"][:, None, None]
    det = np.linalg.det(cells)
    lengths = np.linalg.norm(cells, axis=2)
    all_periodic = pbcs.all(axis=1)
    flag(all_periodic & (np.abs(det) < 1e-6), "degenerate cell: periodic in 3D but the cell volume is zero")
    flag((pbcs & (lengths < 1e-9)).any(axis=1), "degenerate cell: a periodic direction has a zero lattice vector")

    if reasons:
        return None, reasons

    # ---- unit conversion and derived columns
    atom_len = np.repeat(fac["length"], nsites)
    positions = positions * atom_len[:, None]
    energy = energy * fac["energy"]
    if len(forces):
        forces = forces * np.repeat(fac["forces"], np.where(f_null, 0, nsites))[:, None]
    volume = np.where(all_periodic, np.abs(det), np.nan)
    stress, has_stress = mats["stress"]
    stress = stress * (fac["stress"] * fac["stress_sign"])[:, None] + 0.0  # + 0.0: no -0.0 from a sign flip
    virial, has_virial = mats["virial"]
    virial = virial * fac["energy"][:, None]
    # stress = -virial / volume (ASE sign), where only a virial is given and the volume is defined
    derive = ~has_stress & has_virial & all_periodic
    stress[derive] = -virial[derive] / volume[derive, None]
    has_stress = has_stress | derive

    epa = np.where(has_energy, energy / nsites, np.nan)
    max_force = np.full(len(nsites), np.nan)
    if len(forces):
        norms = np.linalg.norm(forces, axis=1)
        idx = np.nonzero(~f_null)[0]
        max_force[idx] = np.maximum.reduceat(norms, f_off[idx])

    counts = np.bincount(frame_of_atom * (MAX_Z + 1) + numbers, minlength=len(nsites) * (MAX_Z + 1))
    counts = counts.reshape(len(nsites), MAX_Z + 1)
    comps = compositions(counts)

    struct_hashes = hashing.structure_hashes(numbers, positions, offsets, cells, pbcs)
    other = {name: b.labels[name] for name in ("charges", "magmoms", "dipole")}
    fields = [
        hashing.label_fields("energy", energy[:, None], np.arange(len(nsites) + 1), has_energy),
        hashing.label_fields("forces", forces, f_off, ~f_null),
        hashing.label_fields("stress", stress, np.arange(len(nsites) + 1), has_stress),
        hashing.label_fields("virial", virial, np.arange(len(nsites) + 1), has_virial),
        *([hashing.label_field(k, x) for x in v] if any(x is not None for x in v)
          else [hashing.label_field(k, None)] * len(v) for k, v in other.items()),
    ]
    config_ids = [hashing.config_id(sh, fs, ctx.method_bytes) for sh, *fs in zip(struct_hashes, *fields)]

    n = len(nsites)
    comp_col = lambda key: [c[key] for c in comps]  # noqa: E731
    extra = {}
    for name in ("charges", "magmoms"):
        vals, offs, null = _per_atom_label(other[name], nsites, 1)
        extra[name] = _list_array(vals, offs, mask=null if null.any() else None)
    dip = other["dipole"]
    dip_null = np.array([v is None for v in dip])
    dip_vals = np.zeros((n, 3))
    if not dip_null.all():
        dip_vals[~dip_null] = np.stack([v for v in dip if v is not None])
    columns = {
        "config_id": pa.array(config_ids, pa.string()),
        "structure_hash": pa.array(struct_hashes, pa.string()),
        "dataset": pa.array([ctx.dataset] * n, pa.string()),
        "deposit_id": pa.array([ctx.deposit_id] * n, pa.string()),
        "source_file": pa.array([ctx.source_file] * n, pa.string()),
        "frame_index": pa.array(b.index, pa.int64()),
        "numbers": _list_array(numbers, offsets),
        "positions": _list_array(positions, offsets, 3),
        "cell": _fixed(cells, 9),
        "pbc": _fixed(pbcs, 3),
        "nsites": pa.array(nsites.astype(np.int32)),
        "nelements": pa.array(comp_col("nelements"), pa.int32()),
        "elements": pa.array(comp_col("elements"), pa.list_(pa.string())),
        "elements_ratios": pa.array(comp_col("elements_ratios"), pa.list_(pa.float64())),
        "chemical_formula_reduced": pa.array(comp_col("chemical_formula_reduced"), pa.string()),
        "chemical_formula_hill": pa.array(comp_col("chemical_formula_hill"), pa.string()),
        "chemical_formula_anonymous": pa.array(comp_col("chemical_formula_anonymous"), pa.string()),
        "nperiodic_dimensions": pa.array(pbcs.sum(axis=1).astype(np.int8)),
        "element_mask_lo": pa.array(comp_col("element_mask_lo"), pa.uint64()),
        "element_mask_hi": pa.array(comp_col("element_mask_hi"), pa.uint64()),
        "volume": pa.array(volume, mask=~all_periodic),
        "energy": pa.array(energy, mask=~has_energy),
        "energy_per_atom": pa.array(epa, mask=~has_energy),
        "forces": _list_array(forces, f_off, 3, mask=f_null if f_null.any() else None),
        "max_force": pa.array(max_force, mask=f_null),
        "stress": _fixed(stress, 9, ~has_stress),
        "virial": _fixed(virial, 9, ~has_virial),
        "charges": extra["charges"],
        "magmoms": extra["magmoms"],
        "dipole": _fixed(dip_vals, 3, dip_null),
        "has_energy": pa.array(has_energy),
        "has_forces": pa.array(~f_null),
        "has_stress": pa.array(has_stress),
        "has_virial": pa.array(has_virial),
        "info": pa.array(b.info, pa.string()),
        "arrays": pa.array(b.arrays, pa.string()),
        "method": pa.array([ctx.method_json] * n, pa.string()),
        "provenance": pa.array(b.provenance, pa.string()),
        "hash_version": pa.array(np.full(n, HASH_VERSION, dtype=np.int16)),
    }
    arrays = []
    for f in CONFIGURATIONS:
        col = columns[f.name]
        if isinstance(f.type, pa.ExtensionType):
            col = pa.ExtensionArray.from_storage(f.type, col)
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=CONFIGURATIONS), {}
