"""Query benchmark: the filter language over a 1.5M-configuration lake vs. ase.db (SQLite).

Builds (once, cached under ``bench/_work/query_lake``) an MPtrj-like lake of
1.5 million configurations: log-normal sizes (2-100 atoms, mean ~15), random
element subsets of Z=1..83 (oxygen-rich, 1-5 elements) plus ~12 % common
prototypes (SiO2, TiO2, LiCoO2, Cu-Ni alloys, ...), periodic triclinic cells,
energy, forces, stress on a per-dataset fraction, ``info.config_type`` and
``info.temperature``; 10 datasets, 30 deposits of 50,000.  Frames are generated
with numpy as :class:`mliplake.readers.RawFrame` objects and go through the
steps of a deposit after parsing (``mliplake.ingest.deposit._ingest``), one deposit per
worker process at a time (``--workers``, default one per CPU up to 8):
:func:`mliplake.ingest.normalise.normalise_batch` in
4,000-frame batches; ``ingest._ShardWriter`` stages the rows as Parquet under
the deposit's folder (row groups of 16,384); ``ingest._commit`` runs the
deposit's one DuckLake transaction (staged rows copied into the
``configurations`` table less duplicates of the dataset, the deposit record,
the dataset's policy), retried on a concurrent commit; ``ingest._drop_staged``
deletes the staged files.  So the result is a normal lake (DuckLake catalog
``catalog.sqlite`` + ``data/``), opened with ``Lake(path)`` and no
``MLIPLAKE_*`` settings.  Skipped: the raw zone (there are no original files)
and the within-deposit duplicate pass (the generated frames are distinct).

Then, for a fixed set of filters (selective to broad), it times on one reused
``Lake`` object (as a service would): ``lake.count(f)`` and ``lake.search(f,
columns=[...], limit=100)`` -- median and p90 of N runs after one warm-up --
and the cold first query (a new process: ``Lake(path)`` + first count).

The anchor is ase.db (SQLite) over a *slice* of the same configurations (by
default the first 10,000 frames of one deposit per dataset = 100,000 rows),
with key-value pairs for config_type, temperature, dataset, energy_per_atom,
max_force, nsites and has_stress.  Each filter is translated into ase.db's
selection language; where that cannot express it (HAS ONLY, nelements, a
reduced formula) a Python post-filter over the rows runs and is timed as part of
the query.  ase.db counts are measured on the slice and extrapolated linearly to
the full lake size (labelled as such).  A small mliplake lake of the same slice
checks that both give the same counts.

``--no-profile`` skips "where a count's time goes": opening a lake, the
per-query session, parse + compile, DuckDB's planning and executor time
(``EXPLAIN (ANALYZE, FORMAT json)``), and fetch-100's steps as
``query._search`` runs them.

Results go to the ``## Query`` section of ``docs/performance.md``.

Usage::

    .venv/bin/python bench/query.py                 # build once (cached), measure, write the doc
    .venv/bin/python bench/query.py --rebuild       # rebuild the lakes and the ase.db
    .venv/bin/python bench/query.py --drop-caches   # cold-query time with the OS page cache dropped (root)
    .venv/bin/python bench/query.py --no-doc        # measure and print only
    .venv/bin/python bench/query.py --wait-idle 300 # first wait (up to 5 min) for a quiet machine
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import perfdoc
from perfdoc import write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # the working tree, even when the package is not installed
# bench/ (this script's folder, first on the path) goes last: a bench module must never shadow a package
# that the library imports (bench/optimade_reference.py and the optimade package)
_BENCH = ROOT / "bench"
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH] + [str(_BENCH)]

DEFAULT_WORK = ROOT / "bench" / "_work"
DOC = ROOT / "docs" / "performance.md"
SECTION = "## Query"

# ----------------------------------------------------------------------------- the synthetic data

MAX_Z = 83
BATCH = 4000  # frames per normalise_batch call (the shard writer gathers them into row groups)


def _row_group() -> int:
    from mliplake.ingest.deposit import ROW_GROUP

    return ROW_GROUP
SIZE_MEDIAN, SIZE_SIGMA, SIZE_MIN, SIZE_MAX = 11.0, 0.75, 2, 100  # log-normal sizes: mean ~15
NEL_P = np.array([0.05, 0.30, 0.35, 0.22, 0.08])  # 1..5 elements (random compositions)
CONFIG_TYPES = ("relax", "static", "md", "strain", "surface")
CONFIG_P = np.array([0.25, 0.25, 0.30, 0.10, 0.10])
# per-dataset fraction of frames with a stress tensor
STRESS_FRACTION = (1.0, 1.0, 0.8, 0.5, 0.5, 0.3, 1.0, 0.0, 0.9, 0.6)
PROTO_FRACTION = 0.12
PROTOTYPES = [  # (one formula unit, weight)
    ("Si O O", 1.0), ("Ti O O", 1.2), ("Fe Fe O O O", 1.0), ("Li Co O O", 1.0), ("Al Al O O O", 1.0),
    ("Mg O", 1.0), ("Na Cl", 0.8), ("Ga As", 0.5), ("Li Fe P O O O O", 0.8), ("Si", 0.8), ("Cu", 0.5),
    ("Fe", 0.5), ("Cu Ni", 0.05), ("Cu Cu Cu Ni", 0.05), ("Cu Ni Ni Ni", 0.05), ("Li Li O", 0.6),
    ("Zn S", 0.5), ("Ba Ti O O O", 0.6), ("Ca F F", 0.4), ("K Cl", 0.3),
]


def _element_weights() -> np.ndarray:
    from ase.data import atomic_numbers as Z

    w = np.ones(MAX_Z)
    w[[Z[s] - 1 for s in ("He", "Ne", "Ar", "Kr", "Xe", "Tc", "Pm")]] = 0.05
    for sym, weight in {"O": 40.0, "Li": 6.0, "F": 4.0, "N": 4.0, "S": 3.0, "P": 3.0, "Mn": 3.0, "Fe": 3.0,
                        "Co": 2.5, "Ni": 2.5, "Cu": 2.0, "Mg": 2.5, "Na": 2.5, "Si": 2.5, "Cl": 2.0, "H": 2.0}.items():
        w[Z[sym] - 1] = weight
    return w


def _prototype_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ase.data import atomic_numbers as Z

    units = [p.split() for p, _ in PROTOTYPES]
    apf = np.array([len(u) for u in units])
    pattern = np.zeros((len(units), apf.max()), dtype=np.uint8)
    for i, u in enumerate(units):
        pattern[i, :len(u)] = [Z[s] for s in u]
    w = np.array([w for _, w in PROTOTYPES])
    return pattern, apf, w / w.sum()


@dataclass
class Plan:
    """What the big lake is made of (its cache key)."""

    deposits: int = 30
    per_deposit: int = 50_000
    datasets: int = 10
    seed: int = 0
    version: int = 1  # of this generator

    @property
    def total(self) -> int:
        return self.deposits * self.per_deposit


def dataset_of(k: int, plan: Plan) -> str:
    return f"ds{k % plan.datasets}"


def source_of(k: int) -> str:
    return f"mptrj_like_{k:03d}.extxyz"


def sha_of(k: int, plan: Plan) -> str:
    return hashlib.sha256(f"bench/query synthetic {plan.seed} {plan.version} {k}".encode()).hexdigest()


@dataclass
class Generated:
    """One deposit's frames, and the flat arrays behind them (views, no copies)."""

    dataset: str
    frames: list[Any]
    nsites: np.ndarray
    offsets: np.ndarray
    numbers: np.ndarray
    forces: np.ndarray
    energy: np.ndarray
    has_stress: np.ndarray
    config_type: np.ndarray
    temperature: np.ndarray


def generate(k: int, plan: Plan, n: int | None = None) -> Generated:
    """Deposit ``k``'s frames, deterministic in (seed, k); ``n`` only truncates (same frames)."""
    from mliplake.readers import RawFrame

    N = plan.per_deposit
    rng = np.random.default_rng([plan.seed, plan.version, k])
    ds_index = k % plan.datasets
    nsites = np.clip(np.rint(rng.lognormal(np.log(SIZE_MEDIAN), SIZE_SIGMA, N)), SIZE_MIN, SIZE_MAX).astype(np.int64)

    # ~12 % common prototypes, stoichiometric: nsites a multiple of the formula unit
    pattern, apf_of, proto_p = _prototype_tables()
    is_proto = rng.random(N) < PROTO_FRACTION
    proto = rng.choice(len(proto_p), N, p=proto_p)
    apf = apf_of[proto]
    units = np.clip(np.rint(nsites / apf), 1, SIZE_MAX // apf)
    nsites = np.where(is_proto, units * apf, nsites).astype(np.int64)

    # random compositions: 1-5 distinct elements drawn without replacement by weight (Gumbel top-k)
    nel = np.minimum(rng.choice(5, N, p=NEL_P) + 1, nsites)
    keys = np.log(_element_weights())[None, :] - np.log(-np.log(rng.random((N, MAX_Z))))
    top = np.argsort(-keys, axis=1)[:, :5].astype(np.uint8) + 1

    offsets = np.concatenate([[0], np.cumsum(nsites)])
    total = int(offsets[-1])
    af = np.repeat(np.arange(N), nsites)  # frame of each atom
    j = np.arange(total) - offsets[af]  # index of the atom inside its frame
    ne = nel[af]
    pick = np.where(j < ne, j, (rng.random(total) * ne).astype(np.int64))  # every chosen element occurs
    numbers = top[af, pick]
    numbers = np.where(is_proto[af], pattern[proto[af], j % apf[af]], numbers).astype(np.uint8)

    # near-cubic cells at 10-25 A^3/atom with a little shear; positions inside
    a = (nsites * rng.uniform(10.0, 25.0, N)) ** (1.0 / 3.0)
    cells = a[:, None, None] * (np.eye(3)[None] + rng.normal(0.0, 0.03, (N, 3, 3)))
    positions = np.einsum("ai,aij->aj", rng.random((total, 3)), cells[af])

    ct = rng.choice(len(CONFIG_TYPES), N, p=CONFIG_P)
    temperature = np.where(ct == 2, np.round(rng.uniform(300.0, 2500.0, N), 1), 0.0)
    # relaxed frames: small forces (10^-3 .. 10^-0.5 eV/A scale); others ~0.5 eV/A
    sigma = np.where(ct == 0, 10.0 ** rng.uniform(-3.0, -0.5, N), rng.lognormal(np.log(0.5), 0.5, N))
    forces = rng.normal(0.0, 1.0, (total, 3)) * sigma[af][:, None]
    epa = rng.normal(-5.0, 1.8, N)
    energy = epa * nsites
    has_stress = rng.random(N) < STRESS_FRACTION[ds_index % len(STRESS_FRACTION)]
    s = rng.normal(0.0, 0.01, (N, 3, 3))
    stress = 0.5 * (s + s.transpose(0, 2, 1))

    n = N if n is None else min(n, N)
    pbc = np.ones(3, dtype=bool)
    frames = []
    for i in range(n):
        lo, hi = offsets[i], offsets[i + 1]
        info: dict[str, Any] = {"energy": float(energy[i]), "config_type": CONFIG_TYPES[ct[i]],
                                "temperature": float(temperature[i])}
        if has_stress[i]:
            info["stress"] = stress[i]
        frames.append(RawFrame(i, positions[lo:hi], None, numbers[lo:hi], cells[i], pbc, info,
                               {"forces": forces[lo:hi]}))
    return Generated(dataset_of(k, plan), frames, nsites[:n], offsets[:n + 1], numbers, forces, energy[:n],
                     has_stress[:n], ct[:n], temperature[:n])


# ----------------------------------------------------------------------------- lakes through the library's writer


def _manifest(dataset: str) -> Any:
    from mliplake.core.manifest import parse_manifest

    return parse_manifest({"dataset": dataset, "title": f"Synthetic MPtrj-like {dataset}", "license": "CC-BY-4.0",
                           "method": {"code": "VASP", "functional": "PBE"}})


def write_deposit(lake_dir: str, k: int, plan: Plan, n: int | None = None) -> dict[str, Any]:
    """Deposit ``k`` (or its first ``n`` frames) into the lake at ``lake_dir``, committed as a normal deposit.

    The steps of ``ingest._ingest`` after parsing: ``normalise_batch`` per batch, ``_ShardWriter`` stages
    the rows as Parquet under the deposit's shard folder, ``_commit`` runs the one DuckLake transaction
    of a deposit (previous version out, staged rows copied into ``configurations`` less duplicates of
    the dataset, empty quarantine, the deposit record, the dataset's policy), ``_drop_staged`` deletes
    the staged files.  Not done: raw originals (there is no file; the record's ``raw`` folder holds only
    ``manifest.json``) and the within-deposit duplicate pass (generated frames are distinct; the commit
    still checks against the dataset's stored rows)."""
    from mliplake import Lake
    from mliplake.ingest.deposit import (
        DepositReport,
        FileReport,
        _collect,
        _commit,
        _drop_staged,
        _quarantine_table,
        _ShardWriter,
        deposit_id_for,
    )
    from mliplake.ingest.normalise import FileContext, normalise_batch

    t0 = time.perf_counter()
    g = generate(k, plan, n)
    t_gen = time.perf_counter() - t0
    lake = Lake(lake_dir)
    m = _manifest(g.dataset)
    src, sha = source_of(k), sha_of(k, plan)
    dep = deposit_id_for(g.dataset, [(src, sha)])
    deposited_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    ctx = FileContext(g.dataset, dep, src, m, {}, deposited_at)
    report = DepositReport(dep, g.dataset)
    fr = FileReport(src, sha, 0, format="synthetic")
    report.files.append(fr)
    attempt = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
    writer = _ShardWriter(lake, lambda: lake.shard_dir("configurations", g.dataset, dep), attempt)
    elements: set[str] = set()
    labels: set[str] = set()
    for s in range(0, len(g.frames), BATCH):
        batch = g.frames[s:s + BATCH]
        table, rejected = normalise_batch(batch, ctx, report.key_mapping)
        if rejected:
            raise RuntimeError(f"deposit {k}: {len(rejected)} frames rejected, e.g. {rejected[0]}")
        fr.frames_read += len(batch)
        fr.stored += table.num_rows
        _collect(table, elements, labels)
        report.atoms += int(np.asarray(table.column("nsites")).sum())
        writer.write(table)
    writer.close()
    report.frames_read = fr.frames_read
    report.stored = fr.stored
    report.elements, report.labels = sorted(elements), sorted(labels)
    report.bytes_written = writer.bytes
    report.seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    try:
        _commit(lake, report, m, writer.paths, _quarantine_table(g.dataset, dep, []), replace=False)
    finally:
        _drop_staged(lake, writer.paths)
    t_commit = time.perf_counter() - t1
    lake.tables.close()
    return {"k": k, "dataset": g.dataset, "deposit_id": dep, "stored": report.stored, "duplicates": report.duplicates,
            "atoms": report.atoms, "bytes": writer.bytes, "seconds": time.perf_counter() - t0, "generate_s": t_gen,
            "commit_s": t_commit}


def _write_deposit_star(args: tuple) -> dict[str, Any]:
    return write_deposit(*args)


def build_lake(path: Path, plan: Plan, workers: int, ks: list[int], n: int | None,
               label: str) -> tuple[float, dict[str, float]]:
    """Deposits ``ks`` into a fresh lake at ``path``, ``workers`` processes; returns the wall seconds and
    the seconds the deposits spent generating and committing (summed over processes)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    t0 = time.perf_counter()
    jobs = [(str(path), k, plan, n) for k in ks]
    done = rows = 0
    sums = {"generate_s": 0.0, "commit_s": 0.0, "deposit_s": 0.0, "duplicates": 0}
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        for r in pool.imap_unordered(_write_deposit_star, jobs):
            done += 1
            rows += r["stored"]
            sums["generate_s"] += r["generate_s"]
            sums["commit_s"] += r["commit_s"]
            sums["deposit_s"] += r["seconds"]
            sums["duplicates"] += r["duplicates"]
            el = time.perf_counter() - t0
            print(f"  [{label}] deposit {done}/{len(ks)} ({r['dataset']}, {r['deposit_id']}): {r['stored']:,} rows, "
                  f"{r['atoms']:,} atoms, {r['bytes'] / 1e6:.1f} MB in {r['seconds']:.1f} s "
                  f"(generate {r['generate_s']:.1f} s, commit {r['commit_s']:.1f} s) | {rows:,} rows, {el:.0f} s, "
                  f"{rows / el:,.0f} rows/s", flush=True)
    return time.perf_counter() - t0, sums


def tree_bytes(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of all files under ``path``."""
    app = alloc = 0
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            app += st.st_size
            alloc += st.st_blocks * 512
    return app, alloc


# ----------------------------------------------------------------------------- ase.db slice


def build_asedb(path: Path, plan: Plan, ks: list[int], per: int | None) -> float:
    """The slice as an ase.db: one ``db.write(atoms, **kvp)`` per row inside one transaction."""
    import ase.db
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.stress import full_3x3_to_voigt_6_stress

    if path.exists():
        path.unlink()
    t0 = time.perf_counter()
    db = ase.db.connect(str(path), append=False)
    rows = 0
    with db:
        for k in ks:
            g = generate(k, plan, per)
            for i, f in enumerate(g.frames):
                n = int(g.nsites[i])
                atoms = Atoms(numbers=f.numbers, positions=f.positions, cell=f.cell, pbc=True)
                stress = f.info.get("stress")
                forces = f.arrays["forces"]
                e = f.info["energy"]
                atoms.calc = SinglePointCalculator(
                    atoms, energy=e, forces=forces,
                    stress=None if stress is None else full_3x3_to_voigt_6_stress(stress))
                db.write(atoms, config_type=f.info["config_type"], temperature=f.info["temperature"],
                         dataset=g.dataset, energy_per_atom=e / n,
                         max_force=float(np.linalg.norm(forces, axis=1).max()), nsites=n,
                         has_stress=stress is not None)
                rows += 1
            print(f"  [ase.db] {rows:,} rows, {time.perf_counter() - t0:.0f} s", flush=True)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- the filters

Z_CU, Z_NI, Z_O, Z_SI = 29, 28, 8, 14


@dataclass
class AseQuery:
    """A filter in ase.db's selection language, plus what ase.db cannot say."""

    selection: str | list[str]  # several selections: their union (ase.db has no OR)
    post: Callable[[Any], bool] | None = None  # Python post-filter on a row (needs row.numbers)
    how: str = ""
    alt: str = ""  # a pure-SQL alternative, timed for comparison

    def count(self, db: Any) -> int:
        if self.post is not None:
            # the fastest post-filter an ase.db user can write: only the columns it needs, no data
            return sum(1 for row in db.select(self.selection, columns=["id", "numbers"], include_data=False)
                       if self.post(row))
        if isinstance(self.selection, list):  # union of two: inclusion-exclusion, three counts
            a, b = self.selection
            both = ",".join(dict.fromkeys(a.split(",") + b.split(",")))
            return db.count(a) + db.count(b) - db.count(both)
        return db.count(self.selection)

    def fetch(self, db: Any, limit: int = 100) -> list[Any]:
        if self.post is not None:
            return list(itertools.islice((r for r in db.select(self.selection) if self.post(r)), limit))
        if isinstance(self.selection, list):
            rows: dict[int, Any] = {}
            for sel in self.selection:
                for r in db.select(sel, limit=limit):
                    rows[r.id] = r
            return [rows[i] for i in sorted(rows)[:limit]]
        return list(db.select(self.selection, limit=limit))


def _none_but(*symbols: str) -> str:
    """HAS ONLY in ase.db's own language: every other element of the periodic table excluded (``X=0``)."""
    from ase.data import chemical_symbols

    return ",".join([*symbols, *(f"{s}=0" for s in chemical_symbols[1:] if s not in symbols)])


def _only(*zs: int) -> Callable[[Any], bool]:
    allowed = set(zs)
    return lambda row: set(np.unique(row.numbers).tolist()) <= allowed


def _unary(row: Any) -> bool:
    return len(np.unique(row.numbers)) == 1


def _reduced_o2si(row: Any) -> bool:
    nums = np.asarray(row.numbers)
    no, nsi = int((nums == Z_O).sum()), int((nums == Z_SI).sum())
    return no + nsi == len(nums) and no == 2 * nsi


@dataclass
class Filter:
    name: str
    text: str
    ase: AseQuery


FILTERS = [
    Filter("Cu-Ni binaries", 'elements HAS ALL "Cu","Ni" AND elements HAS ONLY "Cu","Ni"',
           AseQuery("Cu,Ni", _only(Z_CU, Z_NI), "`Cu,Ni` + Python post-filter (HAS ONLY)",
                    alt=_none_but("Cu", "Ni"))),
    Filter("SiO2 (reduced formula)", 'chemical_formula_reduced = "O2Si"',
           AseQuery("O,Si", _reduced_o2si, "`O,Si` + Python post-filter (reduced formula; `formula=` is exact)")),
    Filter("Li, small cells", 'elements HAS "Li" AND nsites < 20',
           AseQuery("Li,nsites<20", how="`Li,nsites<20`")),
    Filter("relaxed, large", 'info.config_type = "relax" AND nsites >= 50',
           AseQuery("config_type=relax,nsites>=50", how="`config_type=relax,nsites>=50`")),
    Filter("no O, large", 'NOT elements HAS "O" AND nsites > 80',
           AseQuery("O=0,nsites>80", how="`O=0,nsites>80`")),
    Filter("ds3, converged forces", 'dataset = "ds3" AND max_force < 0.05',
           AseQuery("dataset=ds3,max_force<0.05", how="`dataset=ds3,max_force<0.05`")),
    Filter("unaries, low energy", "nelements = 1 AND energy_per_atom < -5",
           AseQuery("energy_per_atom<-5", _unary, "`energy_per_atom<-5` + Python post-filter (nelements)")),
    Filter("halides with stress", 'elements HAS ANY "F","Cl" AND has_stress = TRUE',
           AseQuery(["F,has_stress=True", "Cl,has_stress=True"],
                    how="no OR: `F,has_stress=True` + `Cl,...` - both (3 counts; fetch: 2 selects merged)")),
    Filter("hot MD", "info.temperature > 1500",
           AseQuery("temperature>1500", how="`temperature>1500`")),
    Filter("half the lake", "energy_per_atom < -5",
           AseQuery("energy_per_atom<-5", how="`energy_per_atom<-5`")),
]

SEARCH_COLUMNS = ["id", "dataset", "chemical_formula_reduced", "nsites", "energy_per_atom"]


# ----------------------------------------------------------------------------- timing


def timed(fn: Callable[[], Any], runs: int, warmup: int = 1) -> tuple[list[float], Any]:
    """Seconds of ``runs`` calls after ``warmup`` calls; and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def round_robin(tasks: list[Callable[[], Any]], runs: int) -> list[tuple[list[float], Any]]:
    """Like :func:`timed` for several tasks, their runs interleaved (task 1, 2, ..., 1, 2, ...).

    On a shared machine a burst of load then lands on all tasks alike rather than on one.
    """
    last = [t() for t in tasks]  # warm-up
    times: list[list[float]] = [[] for _ in tasks]
    for _ in range(runs):
        for i, t in enumerate(tasks):
            t0 = time.perf_counter()
            last[i] = t()
            times[i].append(time.perf_counter() - t0)
    return list(zip(times, last))


def med(ts: list[float]) -> float:
    return float(np.median(ts)) * 1e3


def p90(ts: list[float]) -> float:
    return float(np.percentile(ts, 90)) * 1e3


COLD_SCRIPT = r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
import mliplake, duckdb
t0 = time.perf_counter()
lake = mliplake.Lake(sys.argv[1])
n = lake.count(sys.argv[2])
t1 = time.perf_counter()
n2 = lake.count(sys.argv[2])
t2 = time.perf_counter()
print(json.dumps({"cold_s": t1 - t0, "second_s": t2 - t1, "count": n}))
"""


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def cold_query(lake_dir: Path, text: str, drop: bool) -> dict[str, Any]:
    dropped = drop_caches() if drop else False
    out = subprocess.run([sys.executable, "-c", COLD_SCRIPT, str(lake_dir), text, str(ROOT / "src")],
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["dropped"] = dropped
    return res


@dataclass
class Row:
    name: str
    text: str
    how: str
    post: bool
    matches: int = 0
    count_ms: list[float] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)
    search_rows: int = 0
    cold_ms: float = 0.0
    cold_second_ms: float = 0.0
    cold_dropped: bool = False
    slice_ml_matches: int = 0
    slice_ml_count_ms: list[float] = field(default_factory=list)
    slice_ase_matches: int = 0
    ase_count_ms: list[float] = field(default_factory=list)
    ase_fetch_ms: list[float] = field(default_factory=list)
    ase_fetch_rows: int = 0
    ase_alt_ms: list[float] = field(default_factory=list)
    ase_alt_matches: int = -1
    ase_full_fetch_ms: list[float] = field(default_factory=list)  # --ase-full: the whole lake in ase.db
    ase_full_fetch_rows: int = 0

    @property
    def equal(self) -> bool:
        return self.slice_ml_matches == self.slice_ase_matches


def measure(lake_dir: Path, slice_dir: Path, ase_path: Path, runs: int, ase_runs: int, drop: bool,
            only: list[int] | None, ase_full: Path | None = None) -> tuple[list[Row], dict[str, Any]]:
    import ase.db

    from mliplake import Lake

    chosen = [f for i, f in enumerate(FILTERS) if only is None or i in only]
    rows = [Row(f.name, f.text, f.ase.how, f.ase.post is not None) for f in chosen]

    print("\ncold first query (a new process: Lake(path) + first count)"
          + (", OS page cache dropped before each" if drop else ", OS page cache warm"), flush=True)
    for r in rows:
        c = cold_query(lake_dir, r.text, drop)
        r.cold_ms, r.cold_second_ms, r.cold_dropped = c["cold_s"] * 1e3, c["second_s"] * 1e3, c["dropped"]
        print(f"  {r.name:26s} cold {r.cold_ms:8.1f} ms, second {r.cold_second_ms:7.1f} ms", flush=True)

    lake = Lake(lake_dir)
    t0 = time.perf_counter()
    lake.connection()
    connect_ms = (time.perf_counter() - t0) * 1e3
    print(f"\nmliplake, one Lake object reused ({runs} runs after a warm-up each, interleaved across filters)",
          flush=True)
    tasks = []
    for r in rows:
        tasks += [lambda r=r: lake.count(r.text),
                  lambda r=r: lake.search(r.text, columns=SEARCH_COLUMNS, limit=100)]
    res = round_robin(tasks, runs)
    for i, r in enumerate(rows):
        (r.count_ms, r.matches), (r.search_ms, tab) = res[2 * i], res[2 * i + 1]
        r.search_rows = tab.num_rows
        print(f"  {r.name:26s} {r.matches:>9,} matches  count {med(r.count_ms):7.1f} ms (p90 {p90(r.count_ms):7.1f})"
              f"  fetch-100 {med(r.search_ms):7.1f} ms (p90 {p90(r.search_ms):7.1f})", flush=True)

    slake = Lake(slice_dir)
    db = ase.db.connect(str(ase_path))
    print(f"\nslice: mliplake vs ase.db ({ase_runs} runs after a warm-up each)", flush=True)
    for r, f in zip(rows, chosen):
        tasks = [lambda: slake.count(r.text), lambda: f.ase.count(db), lambda: f.ase.fetch(db)]
        if f.ase.alt:
            tasks.append(lambda: db.count(f.ase.alt))
        res = round_robin(tasks, ase_runs)
        (r.slice_ml_count_ms, r.slice_ml_matches), (r.ase_count_ms, r.slice_ase_matches), (r.ase_fetch_ms, got) = res[:3]
        r.ase_fetch_rows = len(got)
        if f.ase.alt:
            r.ase_alt_ms, r.ase_alt_matches = res[3]
        print(f"  {r.name:26s} mliplake {r.slice_ml_matches:>7,} in {med(r.slice_ml_count_ms):6.1f} ms | ase.db "
              f"{r.slice_ase_matches:>7,} in {med(r.ase_count_ms):7.1f} ms, fetch {med(r.ase_fetch_ms):7.1f} ms "
              f"({r.ase_fetch_rows} rows) | {'equal' if r.equal else 'DIFFERENT'}", flush=True)
    if ase_full is not None:
        full = ase.db.connect(str(ase_full))
        print(f"\nase.db over the whole lake: fetch-100 ({ase_runs} runs after a warm-up each)", flush=True)
        for r, f in zip(rows, chosen):
            ((r.ase_full_fetch_ms, got),) = round_robin([lambda: f.ase.fetch(full)], ase_runs)
            r.ase_full_fetch_rows = len(got)
            print(f"  {r.name:26s} fetch {med(r.ase_full_fetch_ms):8.1f} ms ({len(got)} rows)", flush=True)
    return rows, {"connect_ms": connect_ms}


# ----------------------------------------------------------------------------- profiling


def _explain_summary(con: Any, sql: str, params: list[Any]) -> dict[str, Any]:
    """DuckDB's own account of one run of ``sql`` (``EXPLAIN (ANALYZE, FORMAT json)``): the executor's latency
    and the slowest operators (operator times add up across threads).  Its byte and row counters are
    not used: bytes read are 0 once DuckDB's file cache holds the data, and rows scanned counted the
    whole table twice whatever the filter."""
    prof = json.loads(con.execute(f"EXPLAIN (ANALYZE, FORMAT json) {sql}", params).fetchall()[0][1])
    ops: list[tuple[str, float]] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("operator_type") not in (None, "EXPLAIN_ANALYZE"):
            ops.append((node.get("operator_name") or node["operator_type"], 1e3 * node.get("operator_timing", 0.0)))
        for child in node.get("children", []):
            walk(child)

    walk(prof)
    ops.sort(key=lambda x: -x[1])
    return {"latency_ms": 1e3 * prof.get("latency", float("nan")), "ops": ops}


class CpuMeter:
    """How many CPUs other processes kept busy since it started (this machine may be shared)."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.monotonic(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def others(self) -> float:
        wall = time.monotonic() - self.t0
        return max(0.0, (self._busy() - self.busy0) - (self._own() - self.own0)) / max(wall, 1e-9)


def wait_idle(max_s: float, threshold: float = 0.25, sample_s: float = 5.0) -> None:
    """Wait (up to ``max_s``) until other processes use under ``threshold`` CPUs over a ``sample_s`` sample."""
    t0 = time.monotonic()
    while True:
        m = CpuMeter()
        time.sleep(sample_s)
        busy = m.others()
        waited = time.monotonic() - t0
        if busy < threshold or waited >= max_s:
            print(f"other processes use {busy:.2f} CPUs; measuring (waited {waited:.0f} s)", flush=True)
            return
        print(f"  other processes use {busy:.2f} CPUs; waiting for a quieter machine ({waited:.0f} s)", flush=True)


def profile(lake_dir: Path, rows: list[Row], runs: int) -> dict[str, Any]:
    """Where a count's time goes: opening a lake, the per-query session, parse + compile, DuckDB
    (planning over the DuckLake catalog, then the scan); and fetch-100's steps as ``query._search``
    runs them."""
    from mliplake import Lake
    from mliplake.filters import parse
    from mliplake.filters.sql import where
    from mliplake.query.engine import LAKE_ORDER

    out: dict[str, Any] = {"filters": []}
    # a new Lake has a DuckDB instance of its own: its first connection() loads the extensions,
    # attaches the DuckLake catalog, checks the tables and builds the principal's views
    lake_ms, first_ms = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        fresh = Lake(lake_dir)
        t1 = time.perf_counter()
        fresh.connection().close()
        t2 = time.perf_counter()
        fresh.tables.close()
        lake_ms.append(t1 - t0)
        first_ms.append(t2 - t1)
    out["lake_ms"], out["first_connection_ms"] = med(lake_ms), med(first_ms)

    lake = Lake(lake_dir)
    lake.connection().close()
    ts, _ = timed(lambda: lake.connection().close(), runs)
    out["session_ms"] = med(ts)  # per query: scope, the views' schema (made once), a new cursor

    con = lake.connection()  # the library's session cursor, as count() gets it
    out["metadata_cache_in_session"] = bool(con.execute("SELECT current_setting('parquet_metadata_cache')").fetchone()[0])
    cached = lake.connection()
    cached.execute("SET parquet_metadata_cache = true")
    cons = {"session": con, "session + metadata cache": cached}
    out["variants"] = list(cons)
    res = round_robin([lambda c=c: c.execute("SELECT count(*) FROM configurations").fetchall() for c in cons.values()],
                      runs)
    out["count_all_ms"] = {name: med(ts) for name, (ts, _) in zip(cons, res)}
    cols = ", ".join(SEARCH_COLUMNS)
    for r in rows:
        ts, node = timed(lambda: parse(r.text), runs)
        parse_ms = med(ts)
        ts, (sql, params) = timed(lambda: where(node), runs)
        compile_ms = med(ts)
        q = "SELECT count(*) FROM configurations WHERE " + sql
        kq = (f"SELECT deposit_id, frame_index, config_id FROM configurations WHERE {sql} "
              f"ORDER BY {LAKE_ORDER} LIMIT 100")
        keys = con.execute(kq, params).fetchall()
        deps = sorted({k[0] for k in keys})
        frames = [k[1] for k in keys]
        if keys:
            rq = (f"SELECT {cols} FROM configurations WHERE deposit_id IN ({', '.join('?' * len(deps))}) "
                  f"AND frame_index BETWEEN {min(frames)} AND {max(frames)} "
                  f"AND config_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY {LAKE_ORDER}")
            rparams: list[Any] = [*deps, [k[2] for k in keys]]
        else:  # no match: the library asks for the empty table
            rq, rparams = f"SELECT {cols} FROM configurations LIMIT 0", []
        tasks = [lambda c=c: c.execute(q, params).fetchall() for c in cons.values()]
        tasks += [lambda: con.sql("SELECT * FROM configurations LIMIT 0").columns,
                  lambda: con.execute(kq, params).fetchall(), lambda: con.execute(rq, rparams).fetchall()]
        res = [med(ts) for ts, _ in round_robin(tasks, runs)]
        variants = dict(zip(cons, res))
        fetch = dict(zip(["columns", "keys", "rows"], res[len(cons):]))
        ex = _explain_summary(con, q, params)
        kex = _explain_summary(con, kq, params)
        ops = [f"{name} {ms:.0f} ms" for name, ms in ex["ops"][:3] if ms >= 0.5]
        entry = {"name": r.name, "sql": sql, "parse_ms": parse_ms, "compile_ms": compile_ms, "duckdb_ms": variants,
                 "exec_ms": ex["latency_ms"], "ops": ops, "fetch_ms": fetch, "keys_exec_ms": kex["latency_ms"],
                 "keys_ops": [f"{n} {ms:.0f} ms" for n, ms in kex["ops"][:2] if ms >= 0.5]}
        out["filters"].append(entry)
        print(f"  {r.name:26s} parse+compile {parse_ms + compile_ms:5.2f} ms | count: "
              + ", ".join(f"{k} {v:.1f}" for k, v in variants.items())
              + f" ms (executor {ex['latency_ms']:.1f} ms; {'; '.join(ops)}) | fetch: "
              + ", ".join(f"{k} {v:.1f}" for k, v in fetch.items()) + " ms", flush=True)
    for c in (con, cached):
        c.close()
    lake.tables.close()
    return out


# ----------------------------------------------------------------------------- reporting


def machine() -> dict[str, str]:
    return perfdoc.machine(("mliplake", "duckdb", "pyarrow", "ase", "numpy"))


def lake_stats(lake_dir: Path) -> dict[str, Any]:
    """Sizes of a lake: deposits from their records, data files of ``configurations`` from DuckLake."""
    from mliplake import Lake

    lake = Lake(lake_dir)
    recs = lake.records()
    files = lake.data_files()
    cur = lake.tables.cursor()
    rg = cur.execute("SELECT count(*), min(n), max(n) FROM (SELECT DISTINCT file_name, row_group_id, "
                     "row_group_num_rows AS n FROM parquet_metadata(?))", [files]).fetchone()
    catalog = lake.tables.catalog.partition(":")[2]
    app, alloc = tree_bytes(lake_dir)
    out = {"configurations": sum(r.get("stored", 0) for r in recs), "atoms": sum(r.get("atoms", 0) for r in recs),
           "deposits": len(recs), "datasets": len({r["dataset"] for r in recs}), "files": len(files),
           "file_bytes": sum(os.path.getsize(p) for p in files), "row_groups": rg[0], "rg_min": rg[1],
           "rg_max": rg[2], "catalog_bytes": os.path.getsize(catalog) if os.path.exists(catalog) else 0,
           "bytes": app, "allocated": alloc}
    lake.tables.close()
    return out


def _ms(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def render(rows: list[Row], stats: dict[str, Any], sstats: dict[str, Any], meta: dict[str, Any],
           mach: dict[str, str], args: Any, prof: dict[str, Any] | None, extra: dict[str, Any]) -> str:
    total = stats["configurations"]
    n_slice = sstats["configurations"]
    scale = total / n_slice
    selective = lambda r: r.matches < 0.01 * total  # noqa: E731
    today = dt.date.today().isoformat()
    sums = meta.get("build_sums", {})
    out = [
        SECTION,
        "",
        f"_Generated by `bench/query.py` on {today}; do not edit by hand._",
        "",
        f"- Machine: {mach['cpu']}, nproc {mach['nproc']}, {mach['ram']} RAM; Python {mach['python']}",
        f"- Software: {mach['versions']}; git {mach['git']}",
        f"- Lake: {total:,} configurations, {stats['atoms']:,} atoms "
        f"(mean {stats['atoms'] / total:.1f}/configuration), {stats['datasets']} datasets, {stats['deposits']} deposits; "
        f"the DuckLake table `configurations` in {stats['files']} data files of {stats['file_bytes'] / 1e9:.2f} GB "
        f"({stats['row_groups']} row groups of {stats['rg_min']:,}-{stats['rg_max']:,} rows), SQLite catalog "
        f"{stats['catalog_bytes'] / 1e6:.1f} MB; {stats['bytes'] / 1e9:.2f} GB on disk in all "
        f"({stats['allocated'] / 1e9:.2f} GB allocated)",
        "- Data: synthetic, MPtrj-like (seeded): log-normal sizes 2-100 atoms (median 11), 88 % random 1-5 element "
        "subsets of Z=1..83 (O-rich), 12 % common prototypes (SiO2, TiO2, LiCoO2, Cu-Ni, ...), periodic triclinic "
        "cells, energy, forces, stress on 0-100 % of a dataset, `info.config_type` (5 values), `info.temperature`",
        f"- Build: {meta['build_s']:.0f} s for the lake ({total / meta['build_s']:,.0f} configurations/s, "
        f"{meta['workers']} processes, one deposit each at a time). Per deposit: numpy generation, `normalise_batch` "
        f"in {BATCH:,}-frame batches, `ingest._ShardWriter` stages the rows as Parquet ({_row_group():,}-row groups), "
        f"`ingest._commit` runs the deposit's one DuckLake transaction (the staged rows copied into `configurations` "
        f"less duplicates of the dataset, the deposit record, the dataset's policy), then the staged files are "
        f"deleted; no raw originals are stored (there are no files). Summed over deposits: "
        f"{sums.get('generate_s', 0):.0f} s generating, {sums.get('commit_s', 0):.0f} s committing, "
        f"{sums.get('deposit_s', 0):.0f} s in all; {sums.get('duplicates', 0)} duplicates"
        + (f"; other processes kept {sums['others_cpus']:.2f} CPUs busy meanwhile. " if "others_cpus" in sums
           else " (load from other processes during the build not recorded). ")
        + f"{meta.get('slice_build_s', 0):.0f} s for the slice lake, {meta.get('ase_build_s', 0):.0f} s for the "
        f"ase.db slice ({n_slice / max(meta.get('ase_build_s', 1), 1e-9):,.0f} rows/s)",
        f"- Load: other processes kept {extra.get('others_cpus', 0):.2f} of {mach['nproc']} CPUs busy on average "
        f"during the measurements (a shared machine: expect noise)",
        f"- Anchor: ase.db (SQLite) over a **slice of {n_slice:,} rows** of the same configurations (the first "
        f"{n_slice // max(sstats['deposits'], 1):,} frames of one deposit of each dataset; "
        f"{meta.get('ase_bytes', 0) / 1e6:.0f} MB). ase.db counts are measured on the slice and **extrapolated "
        f"linearly** to {total:,} rows (x{scale:.0f}); ase.db fetch-100 times are as measured on the slice, "
        f"not scaled (a select that stops at its 100th hit need not slow down with size; one that intersects "
        f"index ranges or post-filters a rare match does), so the fetch comparison is indicative only"
        + (f"; with `--ase-full`, ase.db fetch-100 is also measured on an ase.db of the **whole lake** "
           f"({total:,} rows), and that comparison, at the same size, decides the fetch target"
           if all(r.ase_full_fetch_ms for r in rows) else ""),
        "",
        f"Timings: median and p90 of {args.runs} runs after one warm-up (runs interleaved across filters, so a "
        f"burst of load from elsewhere lands on all alike), one `Lake` object reused across all "
        f"queries (as a service holds it); `count` is `lake.count(f)`, fetch-100 is `lake.search(f, "
        f"columns=[{', '.join(SEARCH_COLUMNS)}], limit=100)` (sorted by dataset, file, frame). Cold: a new "
        f"process, `Lake(path)` + its first `count(f)` (imports excluded; OS page cache "
        + ("dropped before each" if any(r.cold_dropped for r in rows) else "warm") + "). ase.db: `db.count(q)` / "
        f"`list(db.select(q, limit=100))`, median of {args.ase_runs} runs after one warm-up.",
        "",
        "### Count",
        "",
        "The 100 ms target is for selective filters (< 1 % of the lake); the others are marked (broad).",
        "",
        "| filter | matches | mliplake count median ms | p90 ms | cold first ms | ase.db count ms "
        f"(measured, {n_slice // 1000}k rows) | ase.db count ms (extrapolated, {total / 1e6:.1f}M) | ratio "
        "(ase.db extrap. / mliplake) | < 100 ms | faster than ase.db |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        ase_ext = med(r.ase_count_ms) * scale
        ratio = ase_ext / med(r.count_ms)
        target = ("met" if med(r.count_ms) < 100 else "**NOT met**") + ("" if selective(r) else " (broad)")
        faster = "met" if ratio > 1 else "**NOT met**"
        out.append(f"| `{r.text}` | {r.matches:,} ({100 * r.matches / total:.2g} %) | {_ms(med(r.count_ms))} | "
                   f"{_ms(p90(r.count_ms))} | {_ms(r.cold_ms)} | {_ms(med(r.ase_count_ms))} "
                   f"{'(post-filter)' if r.post else ''} | {_ms(ase_ext)} | {ratio:.2f}x | {target} | {faster} |")
    full = all(r.ase_full_fetch_ms for r in rows)
    out += [
        "",
        "### Fetch the first 100",
        "",
        f"| filter | rows | mliplake fetch-100 median ms | p90 ms | ase.db fetch-100 ms (measured, "
        f"{n_slice // 1000}k rows) | ratio (ase.db slice / mliplake full) |"
        + (" ase.db fetch-100 ms (measured, whole lake) | ratio (ase.db / mliplake, same size) |" if full else "")
        + " faster than ase.db |",
        "| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if full else "") + " --- |",
    ]
    for r in rows:
        ratio = med(r.ase_fetch_ms) / med(r.search_ms)
        same = med(r.ase_full_fetch_ms) / med(r.search_ms) if full else ratio  # judged at the same size when measured
        out.append(f"| `{r.text}` | {r.search_rows} | {_ms(med(r.search_ms))} | {_ms(p90(r.search_ms))} | "
                   f"{_ms(med(r.ase_fetch_ms))} | {ratio:.2f}x |"
                   + (f" {_ms(med(r.ase_full_fetch_ms))} | {same:.2f}x |" if full else "")
                   + f" {'met' if same > 1 else '**NOT met**'} |")
    n_eq = sum(r.equal for r in rows)
    out += [
        "",
        f"### Same slice, both engines ({n_slice:,} rows)",
        "",
        "A small mliplake lake of exactly the ase.db slice (the same generated frames, through `normalise_batch`): "
        f"counts equal on **{n_eq} of {len(rows)}** filters.",
        "",
        "| filter | ase.db query | matches (mliplake) | matches (ase.db) | equal | mliplake count ms | ase.db count ms |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        out.append(f"| `{r.text}` | {r.how} | {r.slice_ml_matches:,} | {r.slice_ase_matches:,} | "
                   f"{'yes' if r.equal else '**NO**'} | {_ms(med(r.slice_ml_count_ms))} | {_ms(med(r.ase_count_ms))} |")
    sel = [r for r in rows if selective(r)]
    sel_met = [r for r in sel if med(r.count_ms) < 100]
    fast = [r for r in rows if med(r.ase_count_ms) * scale > med(r.count_ms)]
    out += [
        "",
        "### Targets",
        "",
        f"- Selective filter (< 1 % of the lake) count over {total / 1e6:.1f}M configurations under 100 ms median: "
        f"**{'met' if sel and len(sel_met) == len(sel) else 'NOT met'}** ({len(sel_met)} of {len(sel)} selective "
        f"filters; all filters: {sum(med(r.count_ms) < 100 for r in rows)} of {len(rows)})",
        f"- Faster than ase.db (count, extrapolated) on every filter: "
        f"**{'met' if len(fast) == len(rows) else 'NOT met'}** ({len(fast)} of {len(rows)})",
        *([f"- Faster than ase.db (fetch-100, both over the whole lake) on every filter: "
           f"**{'met' if len(ffast) == len(rows) else 'NOT met'}** ({len(ffast)} of {len(rows)})"]
          if (ffast := [r for r in rows if r.ase_full_fetch_ms and med(r.ase_full_fetch_ms) > med(r.search_ms)])
          or all(r.ase_full_fetch_ms for r in rows) else []),
        f"- Post-filtering in Python was needed for: {', '.join(r.name for r in rows if r.post) or 'none'} "
        f"(timed as part of the ase.db query: `db.select(q, columns=['id', 'numbers'], include_data=False)`, the "
        f"leanest rows ase.db gives); `HAS ANY` needed three ase.db counts combined (no OR).",
    ]
    for r in rows:
        if r.ase_alt_ms:
            out.append(f"- {r.name} in pure ase.db SQL instead (`Cu,Ni` plus `X=0` for every other element of the "
                       f"periodic table): {_ms(med(r.ase_alt_ms))} ms for {r.ase_alt_matches:,} matches on the slice, vs. "
                       f"{_ms(med(r.ase_count_ms))} ms with the post-filter that the tables use"
                       + (" (the pure-SQL form is faster; the ratio would be "
                          f"{med(r.ase_alt_ms) * scale / med(r.count_ms):.2f}x)" if med(r.ase_alt_ms) < med(r.ase_count_ms)
                          else " (faster).") )
    if prof:
        v = prof["variants"]
        cache = "on" if prof["metadata_cache_in_session"] else "off"
        out += [
            "",
            "### Where a count's time goes",
            "",
            f"Opening: `Lake(path)` {_ms(prof['lake_ms'])} ms, then its first `lake.connection()` "
            f"{_ms(prof['first_connection_ms'])} ms (a DuckDB instance of its own: the DuckLake and SQLite extensions "
            f"loaded, the catalog attached, the tables checked, the principal's views made), once per `Lake`. "
            f"Per query, `lake.connection()` (scope, the views' schema, a new cursor) takes "
            f"{_ms(prof['session_ms'])} ms. The session cursor has `parquet_metadata_cache` **{cache}** "
            + ("(set by the library on its base connection, inherited by its cursors)"
               if prof["metadata_cache_in_session"] else "(the library sets it on its base connection, but DuckDB "
               "keeps this setting per connection and the cursors that queries run on do not inherit it)")
            + "; the second column sets it on the cursor. `SELECT count(*) FROM configurations` with no filter at "
            "all takes " + ", ".join(f"{_ms(x)} ms ({k})" for k, x in prof["count_all_ms"].items())
            + ": the floor under every count (planning over the DuckLake catalog included).",
            "",
            "DuckDB time of `SELECT count(*) FROM configurations WHERE <compiled filter>` alone (no `Lake` layer) "
            f"on the session cursor: median of {args.runs} runs after a warm-up, interleaved with the fetch steps "
            "below; it includes planning and binding (the DuckLake catalog read for the snapshot's files, the "
            "views). The executor's latency and the slowest operators come from one `EXPLAIN (ANALYZE, FORMAT "
            "json)` run (a single run, with profiling on; operator times add up across threads):",
            "",
            "| filter | parse + compile ms | " + " | ".join(f"DuckDB ms ({k})" for k in v)
            + " | executor ms | slowest operators |",
            "| --- | ---: | " + " | ".join("---:" for _ in v) + " | ---: | --- |",
        ]
        for e in prof["filters"]:
            d = e["duckdb_ms"]
            out.append(f"| {e['name']} | {e['parse_ms'] + e['compile_ms']:.2f} | "
                       + " | ".join(_ms(d[k]) for k in v)
                       + f" | {_ms(e['exec_ms'])} | {'; '.join(e['ops'])} |")
        out += [
            "",
            "Fetch-100 in DuckDB, step by step as `query._search` runs it on the session cursor: the column check "
            "(`SELECT * ... LIMIT 0`), the first 100 by the sort keys (`deposit_id, frame_index, config_id ... "
            "ORDER BY dataset, source_file, frame_index, config_id LIMIT 100`), then the asked-for columns of just "
            "those rows (their deposits and frame range, so the scan skips the rest by statistics):",
            "",
            "| filter | columns ms | keys ms | keys: slowest operators | rows ms |",
            "| --- | ---: | ---: | --- | ---: |",
        ]
        for e in prof["filters"]:
            f = e["fetch_ms"]
            out.append(f"| {e['name']} | {_ms(f['columns'])} | {_ms(f['keys'])} | {'; '.join(e['keys_ops'])} | "
                       f"{_ms(f['rows'])} |")
    out += ["", "Reproduce: `.venv/bin/python bench/query.py` (cached lake; `--rebuild` to rebuild it, "
                "`--drop-caches` for a cold page cache)."]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- main


def ensure_ase_full(args: Any, plan: Plan) -> Path:
    """An ase.db of every row of the lake (cached beside it; keyed by the plan)."""
    work = Path(args.work)
    path, meta_path = work / "query_ase_full.db", work / "query_ase_full.json"
    key = {"plan": asdict(plan)}
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta.get("key") == key and path.exists():
        return path
    meta_path.unlink(missing_ok=True)
    print(f"building an ase.db of the whole lake ({plan.total:,} rows, one transaction): slow", flush=True)
    seconds = build_asedb(path, plan, list(range(plan.deposits)), None)
    meta_path.write_text(json.dumps({"key": key, "build_s": seconds, "bytes": path.stat().st_size}, indent=1))
    return path


def ensure_built(args: Any, plan: Plan) -> dict[str, Any]:
    from mliplake import Lake

    work = Path(args.work)
    lake_dir, slice_dir, ase_path = work / "query_lake", work / "query_lake_slice", work / "query_ase_slice.db"
    meta_path = work / "query_lake.json"
    # "store": the lake layout the cache was built for (v2: DuckLake tables, rows copied in by the commit)
    key = {"plan": asdict(plan), "slice_per": args.ase_rows // plan.datasets, "batch": BATCH, "store": "ducklake-v2"}
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    cached = (not args.rebuild and meta.get("key") == key and lake_dir.exists() and slice_dir.exists()
              and ase_path.exists())
    if cached:
        print(f"using the cached lakes under {work} (built {meta.get('built_at')}; --rebuild to rebuild)")
        return meta | {"lake": lake_dir, "slice": slice_dir, "ase": ase_path}
    work.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)
    print(f"building {plan.total:,} configurations: {plan.deposits} deposits of {plan.per_deposit:,} "
          f"into {plan.datasets} datasets, {args.workers} processes -> {lake_dir}", flush=True)
    meter = CpuMeter()
    build_s, sums = build_lake(lake_dir, plan, args.workers, list(range(plan.deposits)), None, "lake")
    sums["others_cpus"] = meter.others()
    n = Lake(lake_dir).count()
    print(f"lake built in {build_s:.0f} s: Lake(path).count() = {n:,}", flush=True)
    if n < plan.total:
        raise SystemExit(f"expected {plan.total:,} configurations, the lake has {n:,}")
    ks = list(range(min(plan.datasets, plan.deposits)))  # one deposit of each dataset
    per = key["slice_per"]
    print(f"building the slice lake: first {per:,} frames of deposits {ks[0]}..{ks[-1]}", flush=True)
    slice_s, _ = build_lake(slice_dir, plan, args.workers, ks, per, "slice")
    print(f"building the ase.db slice ({per * len(ks):,} rows, one transaction)", flush=True)
    ase_s = build_asedb(ase_path, plan, ks, per)
    meta = {"key": key, "built_at": dt.datetime.now().isoformat(timespec="seconds"), "build_s": build_s,
            "build_sums": sums, "slice_build_s": slice_s, "ase_build_s": ase_s, "workers": args.workers,
            "ase_bytes": ase_path.stat().st_size}
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta | {"lake": lake_dir, "slice": slice_dir, "ase": ase_path}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(DEFAULT_WORK), help="where the lakes are built (default bench/_work)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the lakes and the ase.db")
    ap.add_argument("--deposits", type=int, default=30)
    ap.add_argument("--per-deposit", type=int, default=50_000)
    ap.add_argument("--datasets", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ase-rows", type=int, default=100_000, help="rows of the ase.db slice")
    ap.add_argument("--ase-full", action="store_true",
                    help="also build (once, cached) an ase.db of the whole lake and measure its fetch-100 (slow build)")
    ap.add_argument("--workers", type=int, default=min(len(os.sched_getaffinity(0)), 8))
    ap.add_argument("--runs", type=int, default=7, help="timed runs per mliplake query (after one warm-up)")
    ap.add_argument("--ase-runs", type=int, default=5, help="timed runs per ase.db query (after one warm-up)")
    ap.add_argument("--only", type=str, default="", help="comma-separated filter indices (0-based) to run")
    ap.add_argument("--drop-caches", action="store_true", help="drop the OS page cache before each cold query (root)")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                    help="before measuring, wait up to this long for other processes to leave the CPUs idle")
    ap.add_argument("--no-profile", action="store_true", help="skip the DuckDB profile")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    ap.add_argument("--json", default="", help="also write the raw results here")
    args = ap.parse_args()

    plan = Plan(args.deposits, args.per_deposit, args.datasets, args.seed)
    built = ensure_built(args, plan)
    only = [int(x) for x in args.only.split(",")] if args.only else None
    if args.wait_idle > 0:
        wait_idle(args.wait_idle)
    meter = CpuMeter()
    rows, extra = measure(built["lake"], built["slice"], built["ase"], args.runs, args.ase_runs, args.drop_caches, only,
                          ensure_ase_full(args, plan) if args.ase_full else None)
    extra["others_cpus"] = meter.others()
    print(f"other processes kept {extra['others_cpus']:.2f} CPUs busy on average during the measurements")
    prof = None
    if not args.no_profile:
        print("\nprofile: where a count's time goes", flush=True)
        prof = profile(built["lake"], rows, args.runs)
    stats, sstats = lake_stats(built["lake"]), lake_stats(built["slice"])
    mach = machine()
    section = render(rows, stats, sstats, built, mach, args, prof, extra)
    print("\n" + section)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [asdict(r) for r in rows], "stats": stats, "slice": sstats,
                                               "build": {k: v for k, v in built.items() if not isinstance(v, Path)},
                                               "profile": prof, "machine": mach}, indent=1, default=str))
    if not args.no_doc:
        if only is not None or plan.total < 1_500_000:
            print("(not writing docs/performance.md: a partial or small run)")
        else:
            write_section(DOC, SECTION, section)
            print(f"wrote the {SECTION} section of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
