"""Large extxyz files go through worker processes; the lake must not be able to tell."""
from __future__ import annotations

import pytest
from test_crash import write_xyz

from mliplake import Lake
from mliplake.ingest import parallel

COLUMNS = ["config_id", "structure_hash", "deposit_id", "source_file", "frame_index", "energy", "info", "provenance"]


def ingest(tmp_path, name, path, monkeypatch, workers):
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setenv("MLIPLAKE_WORKERS", str(workers))
    monkeypatch.setattr(parallel, "CHUNK_FRAMES", 700)
    lake = Lake(tmp_path / name)
    report = lake.deposit([path], dataset="big")
    rows = lake.configurations(columns=COLUMNS).to_pylist()
    for r in rows:  # deposit time differs between the two runs
        r["provenance"] = r["provenance"].split('"deposited_at"')[0]
    return report, rows, lake


@pytest.mark.parametrize("damage", ["none", "truncated", "nan"])
def test_parallel_equals_sequential(tmp_path, monkeypatch, damage):
    path = tmp_path / "big.xyz"
    write_xyz(path, frames=3000, seed=3)
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[: len(text) - 40])  # cut inside the last frame
    if damage == "nan":
        head, tail = text.split(" frame=1500 ", 1)
        path.write_text(head.rsplit("energy=", 1)[0] + "energy=nan frame=1500 " + tail)
    seq_report, seq, _ = ingest(tmp_path, "seq", path, monkeypatch, 1)
    par_report, par, _ = ingest(tmp_path, "par", path, monkeypatch, 2)
    assert par == seq
    # rows are parsed while the deposit's SHA-256 (its id) is still being computed; each gets the id on arrival
    assert {r["deposit_id"] for r in par} == {par_report.deposit_id}
    assert (par_report.stored, par_report.quarantined, par_report.duplicates) == (
        seq_report.stored, seq_report.quarantined, seq_report.duplicates)
    assert par_report.key_mapping == seq_report.key_mapping
    if damage != "none":
        assert seq_report.quarantined == 1 and seq_report.stored == 2999
