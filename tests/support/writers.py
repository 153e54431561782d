"""Writer processes for the concurrency and growth tests: each deposits its files into one dataset,
starting with the others at one moment, and prints its reports as JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import mliplake

WRITER = r"""
import json, os, random, sys, time
import mliplake
lake_url, dataset, start, seconds, files = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5:]
lake = mliplake.Lake(lake_url)
while time.time() < start:
    time.sleep(0.005)
reports, rng, end = [], random.Random(os.getpid()), time.time() + seconds
while True:
    picked = files if seconds == 0 else rng.sample(files, rng.randint(1, min(2, len(files))))
    r = lake.deposit(picked, dataset=dataset)
    reports.append({"deposit_id": r.deposit_id, "stored": r.stored, "duplicates": r.duplicates,
                    "frames_read": r.frames_read, "files": picked})
    if time.time() >= end:
        break
print(json.dumps(reports))
"""


def write_frames(path: Path, indices: range) -> None:
    """extxyz frames whose content depends on the index alone (the same index: the same config_id)."""
    with open(path, "w") as f:
        for i in indices:
            rng = np.random.default_rng(i)
            pos = rng.random((3, 3)) * 4
            f.write(f'3\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3 energy={-1 - i * 1e-3:.6f} '
                    f'pbc="T T T"\n')
            f.writelines(f"Si {p[0]:.8f} {p[1]:.8f} {p[2]:.8f}\n" for p in pos)


def pool(tmp_path: Path, n_files: int, per_file: int = 40, step: int = 20) -> list[Path]:
    """Files whose frames overlap their neighbours' by half."""
    out = []
    for k in range(n_files):
        p = tmp_path / f"pool{k:02d}.xyz"
        write_frames(p, range(k * step, k * step + per_file))
        out.append(p)
    return out


def start_writers(lake_url: str, dataset: str, file_sets: list[list[Path]], seconds: float = 0,
                  delay: float = 1.5, env: dict | None = None) -> list[subprocess.Popen]:
    start = time.time() + delay  # every writer starts at the same moment, after its imports
    return [subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", WRITER, lake_url, dataset, str(start), str(seconds),
                              *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env or os.environ.copy()) for files in file_sets]


def finish(procs: list[subprocess.Popen]) -> list[dict]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
        out += json.loads(stdout.strip().splitlines()[-1])
    return out


def ids_of(lake: mliplake.Lake, dataset: str) -> list[str]:
    return lake.search(f'dataset = "{dataset}"', columns=["id"]).column("id").to_pylist()
