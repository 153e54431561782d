"""Many writers and readers at once, for real: separate processes, SIGKILL, local and S3 (moto).

- two processes depositing overlapping frames into one dataset store each config_id once, and
  both reports count correctly;
- the same deposit run twice at once (a retry while the first still runs) leaves one whole deposit;
- a writer killed with SIGKILL inside its commit leaves the lake as it was, and the next run works;
- a stress run: writer processes (overlapping frames, re-runs, a retraction) and reader threads:
  no reader error, no duplicate, every committed frame present, every answer some snapshot's.
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from support import make_bucket
from support.writers import finish, ids_of, pool, start_writers, write_frames

import mliplake


def lake_at(kind: str, tmp_path: Path, request) -> mliplake.Lake:
    if kind == "local":
        return mliplake.Lake(tmp_path / "lake")
    endpoint = request.getfixturevalue("s3_endpoint")
    return mliplake.Lake(f"s3://{make_bucket(endpoint)}/lake")


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_writers_overlapping_frames_store_each_frame_once(kind, tmp_path, request):
    lake = lake_at(kind, tmp_path, request)
    a, b, c = pool(tmp_path, 3)  # a and b share 20 frames, b and c 20 more
    reports = finish(start_writers(lake.url, "overlap", [[a, b], [b, c]]))
    ids = ids_of(lake, "overlap")
    assert len(ids) == len(set(ids)) == 80  # frames 0..79, each once
    assert sum(r["stored"] for r in reports) == 80
    for r in reports:  # each report adds up: what it read is what it stored plus what was there
        assert r["stored"] + r["duplicates"] == r["frames_read"] == 80
    assert sorted(r["duplicates"] for r in reports) == [40 - 0, 40] or sum(r["duplicates"] for r in reports) == 80
    assert lake.datasets()[0]["configurations"] == 80


def test_the_same_deposit_twice_at_once_is_one_deposit(tmp_path):
    lake = mliplake.Lake(tmp_path / "lake")
    files = pool(tmp_path, 2)
    reports = finish(start_writers(lake.url, "twice", [files, files]))
    assert reports[0]["deposit_id"] == reports[1]["deposit_id"]
    assert len(lake.records()) == 1
    ids = ids_of(lake, "twice")
    assert len(ids) == len(set(ids)) == 60


def test_writer_killed_inside_its_commit_leaves_the_lake_as_it_was(tmp_path):
    lake = mliplake.Lake(tmp_path / "lake")
    first, second = pool(tmp_path, 2, per_file=40, step=40)
    lake.deposit([first], dataset="kill")
    before = (lake.snapshot(), sorted(ids_of(lake, "kill")))
    env = dict(os.environ, MLIPLAKE_COMMIT_PAUSE="30")  # the writer waits inside its open transaction
    (proc,) = start_writers(lake.url, "kill", [[second]], delay=0, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:  # its data files are written: it is in its commit now
        if list((tmp_path / "lake" / "data").rglob("*.parquet")).__len__() >= 2:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after = mliplake.Lake(tmp_path / "lake")
    assert (after.snapshot(), sorted(ids_of(after, "kill"))) == before
    assert [r["deposit_id"] for r in after.records()] == [r["deposit_id"] for r in lake.records()]
    r = after.deposit([second], dataset="kill")  # and the lake takes the same deposit afterwards
    assert r.stored == 40 and len(ids_of(after, "kill")) == 80


STRESS_SECONDS = float(os.environ.get("MLIPLAKE_STRESS_SECONDS", 60))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_stress_writers_and_readers(kind, tmp_path, request):
    lake = lake_at(kind, tmp_path, request)
    files = pool(tmp_path, 6)
    retract_me = tmp_path / "retract.xyz"
    write_frames(retract_me, range(10_000, 10_030))
    procs = start_writers(lake.url, "stress", [files[:3], files[2:5], files[3:], files[:2]],
                          seconds=STRESS_SECONDS, delay=2.0)
    errors: list[str] = []
    seen: list[tuple[int, int, int]] = []  # (snapshot, rows, distinct ids) as each reader saw them
    stop = threading.Event()

    def reader() -> None:
        r = lake  # one Lake shared by every reader thread and by the main thread's deposit and retraction
        while not stop.is_set():
            try:
                cur = r.connection()
                cur.execute("BEGIN TRANSACTION")
                snap = cur.execute("SELECT id FROM lake.current_snapshot()").fetchone()[0]
                n, d = cur.execute("SELECT count(*), count(DISTINCT config_id) FROM configurations "
                                   "WHERE dataset = 'stress'").fetchone()
                cur.execute("COMMIT")
                r.search('dataset = "stress" AND nsites = 3', columns=["id", "energy"], limit=20)
                seen.append((snap, n, d))
            except Exception as e:  # noqa: BLE001 - every error counts
                errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(STRESS_SECONDS / 2)
    extra = lake.deposit([retract_me], dataset="stress-retract")  # a retraction while all that goes on
    lake.retract(extra.deposit_id, reason="stress test: retraction under load")
    reports = finish(procs)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert len(seen) > 8 and len(reports) >= 4
    ids = ids_of(lake, "stress")
    assert len(ids) == len(set(ids))  # no duplicate config_id
    # every frame of every committed deposit (pool file k holds frames 20k .. 20k+39), once each
    committed = {int(Path(f).stem[4:]) for r in reports for f in r["files"]}
    assert len(ids) == len({i for k in committed for i in range(20 * k, 20 * k + 40)})
    assert lake.count('dataset = "stress-retract"') == 0
    # every answer a reader got is the answer of the snapshot it read
    for snap, n, d in random.Random(0).sample(seen, min(40, len(seen))):
        assert n == d
        (at,) = lake.sql(f"SELECT count(*) FROM lake.configurations AT (VERSION => {snap}) "
                         "WHERE dataset = 'stress'").fetchone()
        assert at == n
