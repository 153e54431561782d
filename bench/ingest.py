"""Ingest benchmark: mliplake deposit vs. the extxyz C parser vs. ase.io + ase.db.

Generates a deterministic, MPtrj-like extended-XYZ file (mixed cell sizes,
random element subsets of Z=1..83, periodic cells, energy / forces / stress,
``config_type``, a custom ``temperature`` key and a few ``_JSON`` values), then
times three ingest paths, each in its own fresh subprocess so that the peak
memory reported (main-process RSS, and PSS summed over any worker processes it
forks) belongs to that measurement alone:

* ``extxyz``  -- ``for f in extxyz.iread_dicts(path): pass`` (the parser alone,
  the floor any extxyz-based ingest sits on);
* ``ase.db``  -- ``ase.io.iread`` + ``ase.db`` (SQLite) inserts inside one
  transaction (the usual do-it-yourself baseline);
* ``mliplake`` -- ``mliplake.Lake(dir).deposit([path], dataset="bench")``.

Times exclude interpreter start-up and imports.  Results are printed and
written to the ``## Ingest`` section of ``docs/performance.md``.

Usage::

    .venv/bin/python bench/ingest.py --frames 30000            # full benchmark
    .venv/bin/python bench/ingest.py --frames 30000 --scale    # + memory-bound check
    .venv/bin/python bench/ingest.py --profile                 # cProfile of deposit
    .venv/bin/python bench/ingest.py --input some.extxyz       # bench your own file
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import perfdoc
from perfdoc import write_section

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
DEFAULT_WORK = ROOT / "bench" / "_work"
DOC = ROOT / "docs" / "performance.md"
SECTION = "## Ingest"
RESULT_TAG = "BENCH_RESULT "
MIB = 1024 * 1024

# MPtrj has ~31 atoms/frame on average with a long tail; a log-normal with
# median 20 clipped to [2, 200] gives a similar skew (mean ~27).
SIZE_MEDIAN, SIZE_SIGMA, SIZE_MIN, SIZE_MAX = 20.0, 0.8, 2, 200
MAX_Z = 83
JSON_EVERY = 1000
CONFIG_TYPES = ("relax", "static", "md", "strain", "surface")
ROW_FMT = "%-2s %15.8f %15.8f %15.8f %13.8f %13.8f %13.8f\n"
PROPERTIES = "species:S:1:pos:R:3:forces:R:3"


# --------------------------------------------------------------------------- generation


@dataclass
class FrameRecord:
    """Enough of a generated frame to check that ASE reads it back identically."""

    natoms: int
    energy: float
    positions: np.ndarray
    forces: np.ndarray
    has_json: bool


TRAJECTORY = 11  # MPtrj: 1.58 M frames of 146 k materials


def _symbols() -> list[str]:
    from ase.data import chemical_symbols

    return list(chemical_symbols)


def _fmt_floats(values: np.ndarray) -> str:
    return " ".join(f"{v:.10g}" for v in values.ravel())


@dataclass
class Structure:
    """What the frames of one relaxation trajectory share: atoms, species and cell."""

    natoms: int
    species: np.ndarray
    cell: np.ndarray
    base: np.ndarray  # fractional positions


def _structure(rng: np.random.Generator, natoms: int) -> Structure:
    nel = int(min(rng.integers(1, 6), natoms))
    zs = rng.choice(MAX_Z, size=nel, replace=False) + 1
    species = zs[rng.integers(nel, size=natoms)]
    species[:nel] = zs  # every chosen element really occurs
    # Near-cubic cell at 10-25 Å^3/atom with a little shear: realistic volumes,
    # non-orthogonal lattices exercise the full 3x3 path.
    a = (natoms * rng.uniform(10.0, 25.0)) ** (1.0 / 3.0)
    cell = a * (np.eye(3) + rng.normal(0.0, 0.03, (3, 3)))
    return Structure(natoms, species, cell, rng.random((natoms, 3)))


def _frame_text(rng: np.random.Generator, index: int, st: Structure, symbols: list[str]) -> tuple[str, FrameRecord]:
    natoms = st.natoms
    species = st.species
    # each step of a relaxation moves the atoms a little and strains the cell a little
    cell = st.cell @ (np.eye(3) + rng.normal(0.0, 0.002, (3, 3)))
    positions = (st.base + rng.normal(0.0, 0.01, (natoms, 3))) @ cell
    forces = rng.normal(0.0, 0.5, (natoms, 3))
    energy = float(-4.0 * natoms + rng.normal(0.0, np.sqrt(natoms)))
    s = rng.normal(0.0, 0.01, (3, 3))
    stress = 0.5 * (s + s.T)
    temperature = float(rng.uniform(0.0, 2000.0))
    config_type = CONFIG_TYPES[int(rng.integers(len(CONFIG_TYPES)))]

    extra = ""
    has_json = index % JSON_EVERY == 0
    if has_json:
        # extxyz escapes inner quotes with backslashes inside a quoted value.
        payload = json.dumps({"mp_id": f"mp-{index}", "step": int(rng.integers(100)), "tags": [1, 2]})
        extra = ' meta="_JSON ' + payload.replace('"', '\\"') + '"'
    header = (
        f'Lattice="{_fmt_floats(cell)}" Properties={PROPERTIES} energy={energy!r} '
        f'stress="{_fmt_floats(stress)}" config_type={config_type} temperature={temperature:.3f}'
        f'{extra} pbc="T T T"'
    )

    # One %-format over the whole block is ~10x faster than per-row formatting.
    rows = np.empty((natoms, 7), dtype=object)
    rows[:, 0] = [symbols[z] for z in species]
    rows[:, 1:4] = positions
    rows[:, 4:7] = forces
    body = (ROW_FMT * natoms) % tuple(rows.ravel().tolist())
    record = FrameRecord(natoms, energy, positions, forces, has_json)
    return f"{natoms}\n{header}\n{body}", record


def generate(path: Path, frames: int, seed: int, trajectory: int = 1) -> tuple[int, list[FrameRecord]]:
    """Write ``frames`` frames to ``path``; return total atoms and the first two frames.

    ``trajectory``: frames per structure. MPtrj is relaxation trajectories, about 11 frames per
    material (1.58 M frames of 146 k materials), so compositions repeat; 1 makes every frame a new
    random composition (the worst case for anything that caches per composition)."""
    rng = np.random.default_rng(seed)
    n_structures = -(-frames // trajectory)
    sizes = np.clip(np.rint(rng.lognormal(np.log(SIZE_MEDIAN), SIZE_SIGMA, n_structures)), SIZE_MIN, SIZE_MAX)
    symbols = _symbols()
    head: list[FrameRecord] = []
    total = 0
    tmp = path.with_suffix(".partial")
    with tmp.open("w", buffering=8 * MIB) as fh:
        i = 0
        for n in sizes.astype(int):
            st = _structure(rng, int(n))
            for _ in range(min(trajectory, frames - i)):
                text, record = _frame_text(rng, i, st, symbols)
                fh.write(text)
                total += int(n)
                if i < 2:
                    head.append(record)
                i += 1
    tmp.replace(path)  # a half-written file must never be mistaken for a cached one
    return total, head


def validate_with_ase(path: Path, head: list[FrameRecord]) -> None:
    """Read the first frames back with ASE and compare with what was generated."""
    import ase.io

    atoms_list = ase.io.read(path, index=f":{len(head)}", format="extxyz")
    for rec, atoms in zip(head, atoms_list, strict=True):
        assert len(atoms) == rec.natoms, "natoms mismatch"
        assert np.allclose(atoms.positions, rec.positions, atol=1e-6), "positions mismatch"
        assert np.allclose(atoms.get_forces(), rec.forces, atol=1e-6), "forces mismatch"
        assert np.isclose(atoms.get_potential_energy(), rec.energy), "energy mismatch"
        assert atoms.get_stress().shape == (6,), "stress not parsed"
        assert all(atoms.pbc), "pbc not parsed"
        assert {"config_type", "temperature"} <= set(atoms.info), "custom info keys missing"
        if rec.has_json:
            assert isinstance(atoms.info.get("meta"), dict), "_JSON value not decoded"


def iter_frames(path: Path) -> Iterator[list[str]]:
    """Yield the raw lines of each extxyz frame (count line, comment, atoms)."""
    with path.open() as fh:
        for count_line in fh:
            if not count_line.strip():
                continue
            n = int(count_line)
            yield [count_line, next(fh), *(next(fh) for _ in range(n))]


def slice_file(src: Path, dst: Path, frames: int) -> tuple[int, int]:
    """Copy the first ``frames`` frames of ``src`` to ``dst``; return frames and atoms."""
    nframes = natoms = 0
    with dst.open("w") as out:
        for lines in iter_frames(src):
            if nframes == frames:
                break
            out.writelines(lines)
            nframes += 1
            natoms += len(lines) - 2
    return nframes, natoms


def count_file(path: Path) -> tuple[int, int]:
    nframes = natoms = 0
    for lines in iter_frames(path):
        nframes += 1
        natoms += len(lines) - 2
    return nframes, natoms


@dataclass
class Dataset:
    path: Path
    frames: int
    atoms: int

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def prepare(work: Path, frames: int, seed: int, regen: bool = False, trajectory: int = TRAJECTORY) -> Dataset:
    """Generate (or reuse, when the cached file is complete) the synthetic file."""
    path = work / f"mptrj_like_{frames}_s{seed}_t{trajectory}.extxyz"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists() and not regen:
        info = json.loads(meta.read_text())
        return Dataset(path, info["frames"], info["atoms"])
    t0 = time.perf_counter()
    atoms, head = generate(path, frames, seed, trajectory)
    print(f"generated {path.name}: {frames} frames, {atoms} atoms, "
          f"{path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s", flush=True)
    validate_with_ase(path, head)
    meta.write_text(json.dumps({"frames": frames, "atoms": atoms, "seed": seed, "trajectory": trajectory}))
    return Dataset(path, frames, atoms)


# --------------------------------------------------------------------------- workers
# Each runs inside a fresh interpreter (see `measure`); it returns a dict that
# is printed as one JSON line behind RESULT_TAG.


def work_extxyz(path: str, _out: str) -> dict[str, Any]:
    import extxyz

    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    frames = 0
    for _frame in extxyz.iread_dicts(path):
        frames += 1
    return {"seconds": time.perf_counter() - t0, "frames": frames, "timed_cpu_seconds": _cpu_seconds() - cpu0}


def work_asedb(path: str, out: str) -> dict[str, Any]:
    import ase.db
    import ase.io

    db_path = Path(out)
    db_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    db = ase.db.connect(str(db_path))
    frames = 0
    with db:  # one transaction: the fast path a careful user would take
        for atoms in ase.io.iread(path, index=":"):
            db.write(atoms)
            frames += 1
    return {"seconds": time.perf_counter() - t0, "frames": frames, "out_bytes": db_path.stat().st_size}


def _import_mliplake() -> Any:
    # Bench the working tree, whether or not the package is pip-installed.
    sys.path.insert(0, str(SRC))
    import mliplake
    import mliplake.ingest.deposit  # noqa: F401  (imports excluded from the timing, as for the other paths)

    return mliplake


def _timed(module: Any, name: str, into: dict[str, float]) -> None:
    """Wrap ``module.name`` so that its wall time adds up in ``into[name]`` (the phases of a deposit)."""
    inner = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            into[name] = into.get(name, 0.0) + time.perf_counter() - t

    setattr(module, name, timed)


def _cpu_seconds() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def work_mliplake(path: str, out: str) -> dict[str, Any]:
    mliplake = _import_mliplake()
    from mliplake.ingest import deposit as dep
    from mliplake.ingest import parallel

    phases: dict[str, float] = {}
    _timed(dep, "_commit", phases)  # the DuckLake transaction
    _timed(dep, "_store_rows", phases)  # inside it: DuckDB copies the staged rows into the table
    lake_dir = Path(out)
    shutil.rmtree(lake_dir, ignore_errors=True)
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    report = mliplake.Lake(str(lake_dir)).deposit([path], dataset="bench")
    seconds = time.perf_counter() - t0
    return {
        "deposit_cpu_seconds": _cpu_seconds() - cpu0,  # workers included once the pool has shut down
        "workers": parallel.workers() if parallel.wanted(Path(path), "extxyz") else 1,
        "commit_seconds": phases.get("_commit", 0.0),
        "copy_seconds": phases.get("_store_rows", 0.0),
        "seconds": seconds,
        "frames": int(report.stored) + int(report.duplicates) + int(report.quarantined),
        "stored": int(report.stored),
        "duplicates": int(report.duplicates),
        "quarantined": int(report.quarantined),
        "out_bytes": _tree_size(lake_dir),
    }


def work_profile(path: str, out: str) -> dict[str, Any]:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    result = work_mliplake(path, out)
    prof.disable()
    prof_path = Path(out).with_suffix(".prof")
    prof.dump_stats(str(prof_path))
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text).strip_dirs()
    stats.sort_stats("cumulative").print_stats(35)
    stats.sort_stats("tottime").print_stats(25)
    txt_path = Path(out).with_suffix(".prof.txt")
    txt_path.write_text(text.getvalue())
    result["profile"] = str(txt_path)
    return result


WORKERS: dict[str, Callable[[str, str], dict[str, Any]]] = {
    "extxyz": work_extxyz,
    "asedb": work_asedb,
    "mliplake": work_mliplake,
    "profile": work_profile,
}


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _vm_hwm_kib() -> int:
    # VmHWM is the high-water mark of this process's own address space.  ru_maxrss
    # is not usable here: Linux carries the parent's high-water mark into a child
    # across fork + exec, so a child of a big parent would report the parent's peak.
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:"))


def _preimport(kind: str) -> None:
    # Imports happen before the baseline so that "RSS after imports" means that.
    if kind in ("mliplake", "profile"):
        _import_mliplake()
    elif kind == "extxyz":
        import extxyz  # noqa: F401
    elif kind == "asedb":
        import ase.db  # noqa: F401
        import ase.io  # noqa: F401


def run_worker(kind: str, path: str, out: str) -> None:
    _preimport(kind)
    base_kib = _vm_hwm_kib()
    result = WORKERS[kind](path, out)
    result["base_rss_kib"] = base_kib
    result["main_peak_kib"] = _vm_hwm_kib()
    print(RESULT_TAG + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- measuring


@dataclass
class TreePeak:
    pss_kib: int = 0  # at the sample where the tree's total PSS peaked
    anon_kib: int = 0
    processes: int = 1  # alive at that sample

    @property
    def pss_mib(self) -> float:
        return self.pss_kib / 1024

    @property
    def anon_mib(self) -> float:
        return self.anon_kib / 1024


@dataclass
class Measurement:
    name: str
    frames: int
    seconds: float
    size: int
    main_peak_kib: int  # VmHWM of the measured process: exact, but blind to its workers
    tree: TreePeak  # sampled over the process and all its descendants
    cpu_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def mbps(self) -> float:
        return self.size / 1e6 / self.seconds

    @property
    def main_mib(self) -> float:
        return self.main_peak_kib / 1024

    @property
    def cpu_pct(self) -> float:
        # Whole process (imports included) over its wall time: > 100 % means threads or workers.
        return 100.0 * self.cpu_seconds / self.extra["process_seconds"]


def _pss(pid: int) -> tuple[int, int]:
    """(Pss, Pss_Anon) in KiB: PSS splits pages shared with forked workers instead of counting them twice."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Pss_Anon"):
                fields[key] = int(rest.split()[0])
    return fields.get("Pss", 0), fields.get("Pss_Anon", 0)


class TreeSampler:
    """Samples the PSS of a process and all its descendants; ingest may fork workers."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil  # the `bench` extra; only needed here

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = TreePeak()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._done.is_set():
            self._sample()
            self._done.wait(self.interval)

    def _sample(self) -> None:
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return  # exited between two samples
        pss = anon = 0
        for p in procs:
            try:
                a, b = _pss(p.pid)
            except OSError:
                continue
            pss, anon = pss + a, anon + b
        if pss > self.peak.pss_kib:
            self.peak = TreePeak(pss, anon, len(procs))


def measure(name: str, kind: str, data: Dataset, out: Path, timeout: float = 3600.0,
            env: dict[str, str] | None = None) -> Measurement:
    """Run one worker in a fresh interpreter; CPU time comes from wait4 on it."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(data.path), str(out)]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        meter = CpuMeter()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, text=True, env={**os.environ, **(env or {})})
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            status, usage = _wait4(proc.pid, t0 + timeout)
        finally:
            sampler.stop()
        process_seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
        stdout.seek(0)
        stderr.seek(0)
        out_text, err_text = stdout.read(), stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: worker exited {proc.returncode}\n{err_text[-4000:]}")
    line = next(l for l in reversed(out_text.splitlines()) if l.startswith(RESULT_TAG))
    result = json.loads(line[len(RESULT_TAG):])
    result["process_seconds"] = process_seconds
    result["others_cpus"] = meter.others_cpus()
    return Measurement(
        name=name,
        frames=result.pop("frames"),
        seconds=result.pop("seconds"),
        size=data.size,
        main_peak_kib=result.pop("main_peak_kib"),
        tree=sampler.peak,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        extra=result,
    )


def best_of(runs: list[Measurement]) -> Measurement:
    """The fastest run (a small shared VM is noisy); peak RSS is the worst seen."""
    best = min(runs, key=lambda m: m.seconds)
    best.main_peak_kib = max(m.main_peak_kib for m in runs)
    best.tree = max((m.tree for m in runs), key=lambda t: t.pss_kib)
    best.extra["runs_seconds"] = [round(m.seconds, 3) for m in runs]
    return best


def _wait4(pid: int, deadline: float) -> tuple[int, Any]:
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        if time.perf_counter() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.wait4(pid, 0)
            raise TimeoutError(f"worker {pid} ran past its deadline")
        time.sleep(0.05)


def mliplake_status() -> str | None:
    """None if ``mliplake.Lake`` is importable from this checkout, else the reason."""
    probe = f"import sys; sys.path.insert(0, {str(SRC)!r}); import mliplake; mliplake.Lake"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


class CpuMeter:
    """CPU time the whole machine spent, minus ours, since construction (from /proc/stat)."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.ours0 = time.perf_counter(), self._busy(), self._ours()

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as fh:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fh.readline().split()[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours() -> float:
        import resource

        return sum(
            u.ru_utime + u.ru_stime
            for u in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
        )

    def others_cpus(self) -> float:
        others = (self._busy() - self.busy0) - (self._ours() - self.ours0)
        return max(0.0, others / (time.perf_counter() - self.t0))


SETTLE = {"max_wait": 30.0}  # set from --settle


def settle(threshold: float = 0.2, window: float = 2.0) -> None:
    """Wait, up to SETTLE seconds, until other processes leave the CPUs alone."""
    deadline = time.perf_counter() + SETTLE["max_wait"]
    while time.perf_counter() < deadline:
        meter = CpuMeter()
        time.sleep(window)
        if meter.others_cpus() < threshold:
            return


# --------------------------------------------------------------------------- benchmark


@dataclass
class Results:
    data: Dataset
    rows: list[Measurement]
    ase_scaled_from: int | None = None
    # CPUs kept busy by other processes during the run: the noise level on a shared box.
    others_cpus: float = 0.0
    mliplake_missing: str | None = None
    scale: list[tuple[Dataset, Measurement]] = field(default_factory=list)

    def get(self, name: str) -> Measurement | None:
        return next((m for m in self.rows if m.name == name), None)


def bench_extxyz(data: Dataset, work: Path) -> Measurement:
    settle()
    return measure("extxyz parser", "extxyz", data, work / "unused")


def bench_asedb(data: Dataset, work: Path, limit: int | None) -> tuple[Measurement, int | None]:
    """ase.io + ase.db on the whole file, or on its first ``limit`` frames."""
    settle()
    if limit is None or limit >= data.frames:
        return measure("ase.io + ase.db", "asedb", data, work / "ase.db"), None
    part = work / f"{data.path.stem}_first{limit}.extxyz"
    frames, atoms = slice_file(data.path, part, limit)
    return measure("ase.io + ase.db", "asedb", Dataset(part, frames, atoms), work / "ase.db"), frames


def bench_mliplake(data: Dataset, work: Path) -> Measurement:
    settle()
    return measure("mliplake deposit", "mliplake", data, work / f"lake_{data.frames}")


def check_report(m: Measurement, data: Dataset) -> Measurement:
    expected = (data.frames, 0, 0)
    got = (m.extra["stored"], m.extra["duplicates"], m.extra["quarantined"])
    if got != expected:
        # Every generated frame is valid and unique; for --input files this may be legitimate.
        m.note = f"reported stored/duplicates/quarantined = {got} for {data.frames} frames"
    return m


def run_interleaved(data: Dataset, work: Path, repeat: int, skip: set[str]) -> list[Measurement]:
    """Best of ``repeat`` runs of the extxyz and mliplake paths, alternating.

    Alternating makes both sides of the key ratio see the same machine weather.
    """
    benches = {"extxyz": bench_extxyz, "mliplake": bench_mliplake}
    runs: dict[str, list[Measurement]] = {k: [] for k in benches if k not in skip}
    for _ in range(max(1, repeat) if runs else 0):
        for kind, bench in benches.items():
            if kind in runs:
                runs[kind].append(bench(data, work))
        print("  " + ", ".join(f"{k} {v[-1].seconds:.2f} s" for k, v in runs.items()), flush=True)
    best = {k: best_of(v) for k, v in runs.items()}
    if "mliplake" in best:
        check_report(best["mliplake"], data)
    return list(best.values())


def run_scale(work: Path, sizes: list[int], seed: int) -> list[tuple[Dataset, Measurement]]:
    out = []
    for n in sizes:
        data = prepare(work, n, seed)
        out.append((data, check_report(bench_mliplake(data, work), data)))
        m = out[-1][1]
        print(f"  scale {n:>6} frames: main RSS {m.main_mib:.0f} MiB, all processes PSS {m.tree.pss_mib:.0f} MiB",
              flush=True)
    return out


def run_profile(data: Dataset, work: Path) -> str:
    # cProfile sees only the process it runs in; with one worker the per-frame work
    # happens where it can be seen instead of behind a wait on a process pool.
    env = {"MLIPLAKE_WORKERS": "1"}
    m = measure("mliplake deposit (cProfile)", "profile", data, work / "lake_profile", env=env)
    head = f"cProfile of mliplake deposit with {env} (sequential path), {m.seconds:.2f} s under the profiler\n"
    return head + Path(m.extra["profile"]).read_text()


# --------------------------------------------------------------------------- reporting


def machine() -> dict[str, str]:
    return perfdoc.machine(("mliplake", "extxyz", "ase", "pyarrow", "numpy"))


def ratio(a: Measurement | None, b: Measurement | None) -> float | None:
    return a.fps / b.fps if a and b else None


def _fmt_ratio(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return f"**{value:.2f}x** (target >= {target:g}x: {'met' if value >= target else 'NOT met'})"


def results_table(res: Results) -> list[str]:
    lines = [
        "| path | frames measured | seconds (whole file) | frames/s | MB/s "
        "| peak RSS MiB (main process) | peak PSS MiB (all processes) | processes at peak | CPU % "
        "| CPUs busy with other work |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in res.rows:
        scaled = m.name.startswith("ase") and res.ase_scaled_from is not None
        seconds = res.data.frames / m.fps
        star = "\\*" if scaled else ""
        lines.append(
            f"| {m.name} | {m.frames:,} | {seconds:,.1f}{star} | {m.fps:,.0f} | {m.mbps:,.1f} "
            f"| {m.main_mib:,.0f} | {m.tree.pss_mib:,.0f} | {m.tree.processes} | {m.cpu_pct:.0f} "
            f"| {m.extra['others_cpus']:.2f} |"
        )
    if res.mliplake_missing:
        lines.append("| mliplake deposit |" + " – |" * 9)
    return lines


def scale_table(res: Results) -> list[str]:
    lines = [
        "| frames | atoms | file MB | seconds | frames/s | peak RSS MiB (main process) "
        "| main RSS after imports MiB | peak PSS MiB (all processes) | of which anonymous MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for data, m in res.scale:
        lines.append(
            f"| {data.frames:,} | {data.atoms:,} | {data.size / 1e6:,.1f} | {m.seconds:,.1f} | {m.fps:,.0f} "
            f"| {m.main_mib:,.0f} | {m.extra['base_rss_kib'] / 1024:,.0f} | {m.tree.pss_mib:,.0f} "
            f"| {m.tree.anon_mib:,.0f} |"
        )
    (d0, m0), (d1, m1) = res.scale[0], res.scale[-1]
    # Judged on anonymous memory: file-backed pages (an mmap of the input) are page
    # cache the kernel can drop, though they do show in RSS.
    grow = m1.tree.anon_kib / m0.tree.anon_kib
    per_10k = (m1.tree.anon_kib - m0.tree.anon_kib) / 1024 / ((d1.frames - d0.frames) / 10_000)
    verdict = "flat: streaming" if grow < 1.2 else f"grows by ~{per_10k:,.0f} MiB per 10k frames: not fully streaming"
    lines += [
        "",
        f"{d1.frames / d0.frames:.0f}x the frames -> main-process RSS x{m1.main_peak_kib / m0.main_peak_kib:.2f}, "
        f"all-process PSS x{m1.tree.pss_kib / m0.tree.pss_kib:.2f}, anonymous x{grow:.2f} ({verdict}).",
    ]
    return lines


def _trajectory(path: Path) -> str:
    meta = path.with_suffix(".json")
    return str(json.loads(meta.read_text()).get("trajectory", 1)) if meta.exists() else "?"


def render_section(res: Results, mach: dict[str, str], synthetic: bool, repeat: int) -> str:
    d = res.data
    source = (
        f"synthetic MPtrj-like extxyz `{d.path.name}` (seeded): {SIZE_MIN}-{SIZE_MAX} atoms/frame "
        f"(log-normal, median {SIZE_MEDIAN:g}), random element subsets of Z=1..{MAX_Z}, periodic "
        f"triclinic cells, energy / forces / 3x3 stress, `config_type`, `temperature`, "
        f"a `_JSON` info value every {JSON_EVERY}th frame; relaxation-like trajectories of "
        f"{_trajectory(d.path)} frames per structure (same atoms and composition, perturbed positions and cell), "
        f"as in MPtrj (`--trajectory 1`: every frame a new composition)"
        if synthetic
        else f"`{d.path}`"
    )
    mlip, ase_m, ext = res.get("mliplake deposit"), res.get("ase.io + ase.db"), res.get("extxyz parser")
    out = [
        SECTION,
        "",
        f"_Generated by `bench/ingest.py` on {dt.date.today().isoformat()}; do not edit by hand._",
        "",
        f"- Machine: {mach['cpu']}, nproc {mach['nproc']}, {mach['ram']} RAM; Python {mach['python']}",
        f"- Software: {mach['versions']}; git {mach['git']}",
        f"- Input: {source}",
        f"- Size: {d.frames:,} frames, {d.atoms:,} atoms, {d.size / 1e6:,.1f} MB",
        f"- Other processes kept {res.others_cpus:.2f} of {mach['nproc']} CPUs busy on average during the run"
        + (" (a shared machine: expect noise)" if res.others_cpus > 0.2 else ""),
        "",
        *results_table(res),
        "",
    ]
    if res.ase_scaled_from is not None:
        out += [f"\\* ase.io + ase.db ran on the first {res.ase_scaled_from:,} frames; "
                f"its seconds are scaled to the whole file from its frames/s.", ""]
    if res.mliplake_missing:
        out += [f"mliplake was not measured: `{res.mliplake_missing}`.", ""]
    if mlip and mlip.note:
        out += [f"Warning: mliplake {mlip.note}.", ""]
    out += [
        "Throughput ratios (frames/s):",
        "",
        f"- mliplake / (ase.io + ase.db): {_fmt_ratio(ratio(mlip, ase_m), 10)}",
        f"- mliplake / extxyz parser alone: {_fmt_ratio(ratio(mlip, ext), 0.8)}",
        "",
    ]
    if mlip and "deposit_cpu_seconds" in mlip.extra and ext and "timed_cpu_seconds" in ext.extra:
        e = mlip.extra
        out += [
            f"Where the deposit's time goes (its best run): {mlip.seconds - e['commit_seconds']:.2f} s hashing, "
            f"copying, parsing, normalising and staging the rows ({e['workers']} parser processes), "
            f"{e['commit_seconds']:.2f} s in the commit, {e['copy_seconds']:.2f} s of which DuckDB copies the "
            f"staged rows into the table (re-encoding them as the table's Parquet). CPU time of all its "
            f"processes: {e['deposit_cpu_seconds']:.2f} s, against {ext.extra['timed_cpu_seconds']:.2f} s for the parser "
            "alone, so on this machine's "
            f"{mach['nproc']} cores the deposit cannot take less than about "
            f"{e['deposit_cpu_seconds'] / int(mach['nproc']):.2f} s.",
            "",
        ]
    if res.scale:
        out += ["Peak memory of `mliplake deposit` against input size (`--scale`):", "", *scale_table(res), ""]
    out += [
        "Each path runs in its own fresh Python process (extxyz and mliplake: best of "
        f"{repeat} interleaved runs, ase.db and `--scale`: one run); seconds exclude interpreter start-up and "
        "imports (the modules each timed call uses: `extxyz`; `ase.io`, `ase.db`; `mliplake`, "
        "`mliplake.ingest.deposit`), so a first call's lazy imports are not timed for one path only. Peak RSS (main process) is its exact high-water mark (`VmHWM`, imports included; "
        "`ru_maxrss` would inherit the parent's peak across fork + exec) but does not see worker "
        "processes; peak PSS (all processes) sums `smaps_rollup` PSS over the process and all its "
        "descendants, sampled every 50 ms (PSS shares pages a fork leaves in common instead of "
        "counting them once per process). CPU % is the CPU time of the process and its reaped "
        "children over its wall time (> 100 %: more than one core). Before each run the script waits "
        "(up to `--settle` seconds) for other processes to go idle; the last column is how many CPUs "
        "other work kept busy during that run (from /proc/stat), so a noisy row shows as one.",
        "",
        "Reproduce: `.venv/bin/python bench/ingest.py --frames 30000` "
        "(add `--scale` for the memory check, `--profile` for a cProfile of the deposit).",
        "",
    ]
    return "\n".join(out)


def print_summary(res: Results) -> None:
    print(f"\nother processes kept {res.others_cpus:.2f} CPUs busy on average during the run")
    print("\n".join(results_table(res)))
    mlip, ase_m, ext = res.get("mliplake deposit"), res.get("ase.io + ase.db"), res.get("extxyz parser")
    print(f"\nmliplake / (ase.io + ase.db): {_fmt_ratio(ratio(mlip, ase_m), 10)}")
    print(f"mliplake / extxyz parser:     {_fmt_ratio(ratio(mlip, ext), 0.8)}")
    if mlip:
        print(f"mliplake report: {json.dumps({k: v for k, v in mlip.extra.items() if k != 'process_seconds'})}")
        if mlip.note:
            print(f"WARNING: {mlip.note}")
    if res.mliplake_missing:
        print(f"mliplake NOT measured: {res.mliplake_missing}")
    if res.scale:
        print()
        print("\n".join(scale_table(res)))


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=30000, help="frames to generate (default 30000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trajectory", type=int, default=TRAJECTORY,
                   help=f"frames per structure, as in MPtrj's relaxation trajectories (default {TRAJECTORY}; "
                        "1: a new random composition every frame, the worst case)")
    p.add_argument("--input", type=Path, help="bench this extxyz file instead of a generated one")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch dir (default bench/_work)")
    p.add_argument("--ase-frames", type=int, default=None,
                   help="run ase.io + ase.db on only the first N frames and scale (default: whole file)")
    p.add_argument("--repeat", type=int, default=5,
                   help="interleaved runs of the extxyz and mliplake paths; the fastest counts (default 5)")
    p.add_argument("--settle", type=float, default=30.0,
                   help="before each run, wait up to this many seconds for other processes to go idle")
    p.add_argument("--scale", action="store_true", help="also check mliplake peak RSS on 10k and 40k frames")
    p.add_argument("--scale-frames", default="10000,40000", help="frame counts for --scale")
    p.add_argument("--profile", action="store_true", help="cProfile mliplake's deposit and print the top")
    p.add_argument("--skip", default="", help="comma-separated paths to skip: extxyz,asedb,mliplake")
    p.add_argument("--regen", action="store_true", help="regenerate the input even if cached")
    p.add_argument("--no-docs", action="store_true", help=f"do not update {DOC.relative_to(ROOT)}")
    p.add_argument("--worker", nargs=3, metavar=("KIND", "PATH", "OUT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(*args.worker)
        return 0

    SETTLE["max_wait"] = args.settle
    args.work.mkdir(parents=True, exist_ok=True)
    if args.input:
        data = Dataset(args.input.resolve(), *count_file(args.input))
    else:
        data = prepare(args.work, args.frames, args.seed, args.regen, args.trajectory)
    print(f"input: {data.path} ({data.frames:,} frames, {data.atoms:,} atoms, {data.size / 1e6:.1f} MB)", flush=True)

    skip = set(filter(None, args.skip.split(",")))
    res = Results(data, [])
    meter = CpuMeter()
    res.mliplake_missing = mliplake_status()
    if res.mliplake_missing:
        print(f"  mliplake: cannot import mliplake.Lake ({res.mliplake_missing}); skipped", flush=True)
        skip.add("mliplake")
    if "asedb" not in skip:
        m, res.ase_scaled_from = bench_asedb(data, args.work, args.ase_frames)
        res.rows.append(m)
        print(f"  ase.io + ase.db: {m.seconds:.1f} s for {m.frames:,} frames", flush=True)

    fast = run_interleaved(data, args.work, args.repeat, skip)
    order = ["extxyz parser", "ase.io + ase.db", "mliplake deposit"]
    res.rows = sorted(res.rows + fast, key=lambda m: order.index(m.name))
    if args.scale and not res.mliplake_missing:
        res.scale = run_scale(args.work, [int(n) for n in args.scale_frames.split(",")], args.seed)

    res.others_cpus = meter.others_cpus()
    print_summary(res)
    (args.work / "ingest_results.json").write_text(json.dumps(
        {"frames": data.frames, "atoms": data.atoms, "bytes": data.size,
         "rows": [{"name": m.name, "frames": m.frames, "seconds": m.seconds, "main_peak_kib": m.main_peak_kib,
                   "tree": dataclasses.asdict(m.tree),
                   "cpu_seconds": m.cpu_seconds, **m.extra} for m in res.rows]}, indent=2))

    if args.profile and not res.mliplake_missing:
        print("\n" + run_profile(data, args.work))
    if not args.no_docs:
        write_section(DOC, SECTION, render_section(res, machine(), synthetic=args.input is None, repeat=args.repeat))
        print(f"\nwrote section '{SECTION}' of {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
