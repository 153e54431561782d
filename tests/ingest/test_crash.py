"""Crash safety, for real: the ingest process is killed (SIGKILL) at random points, several times."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from mliplake import Lake

FRAMES = 30000


def write_xyz(path, frames=FRAMES, seed=0):
    rng = np.random.default_rng(seed)
    symbols = np.array(["H", "C", "N", "O", "Si", "Cu"])
    with open(path, "w") as f:
        for i in range(frames):
            n = 8
            pos = rng.random((n, 3)) * 5
            frc = rng.normal(size=(n, 3))
            sp = symbols[rng.integers(0, len(symbols), n)]
            f.write(f"{n}\nLattice=\"6 0 0 0 6 0 0 0 6\" Properties=species:S:1:pos:R:3:forces:R:3 "
                    f"energy={rng.normal():.10f} frame={i} pbc=\"T T T\"\n")
            f.writelines(f"{s} {p[0]:.8f} {p[1]:.8f} {p[2]:.8f} {g[0]:.8f} {g[1]:.8f} {g[2]:.8f}\n"
                         for s, p, g in zip(sp, pos, frc))


def ingest_cmd(lake_dir, path):
    return [sys.executable, "-m", "mliplake.cli", "--lake", str(lake_dir), "deposit", str(path), "--dataset", "crash"]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def assert_consistent(lake: Lake, expect_rows: set[int]):
    """Readers see a whole deposit or none; every Parquet file under a final name is complete."""
    n = lake.configurations(columns=["config_id"]).num_rows if lake.records() else 0
    assert n in expect_rows
    for p in lake.fs.find(lake.path("data")):
        if p.endswith(".parquet"):
            _ = pq.ParquetFile(p).metadata  # raises on a half-written file


@pytest.mark.slow
def test_killed_ingest_never_leaves_partial_state(tmp_path):
    path = tmp_path / "big.xyz"
    write_xyz(path)
    lake_dir = tmp_path / "lake"
    env = dict(os.environ, MLIPLAKE_SHARD_ROWS="4000")  # several shards, so a kill can land between them
    # a full run, timed, to know where to aim
    t0 = time.time()
    subprocess.run(ingest_cmd(tmp_path / "probe", path), env=env, check=True, capture_output=True)
    full = time.time() - t0
    rng = random.Random(7)

    def run_and_kill() -> bool:
        """One ingest, SIGKILLed at a random moment of a full run's length; True if it was killed."""
        proc = subprocess.Popen(ingest_cmd(lake_dir, path), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, full * 0.95))
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_consistent(Lake(lake_dir), {0, FRAMES})
        return killed

    kills = 0
    for _ in range(6):
        kills += run_and_kill()
        if Lake(lake_dir).records():
            break  # committed: the next kills land on re-runs of a deposit that must stay whole
    assert kills >= 1
    for _ in range(3):
        run_and_kill()
    # no worker outlives its killed parent (they would block forever on a pipe nobody reads)
    time.sleep(1.0)
    assert _processes_mentioning(str(lake_dir)) == []
    out = subprocess.run(ingest_cmd(lake_dir, path), env=env, check=True, capture_output=True, text=True)
    assert "stored 30000" in out.stdout, out.stdout
    lake = Lake(lake_dir)
    ids = lake.configurations(columns=["config_id"]).column("config_id").to_pylist()
    assert len(ids) == len(set(ids)) == FRAMES
    # files of killed attempts were never registered: maintenance past the retention removes them
    lake.maintain(retention="0 seconds")
    parquet = [p for p in lake.fs.find(lake.path("data")) if p.endswith(".parquet")]
    assert sorted(parquet) == sorted(lake.data_files())
    assert lake.count() == FRAMES
