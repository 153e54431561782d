"""Hashing and duplicates: documented canonical streams, deterministic ids, duplicates counted not stored."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
from support import SAMPLES, deposit_sample, sample_files


def _q(x, q):
    return np.rint(np.asarray(x, dtype=float) / q).astype("<i8").tobytes()


def _independent_ids(numbers, positions, cell, pbc, energy, forces, method):
    """The stream of docs/schema.md, rebuilt here from the documentation, not from the library."""
    s = hashlib.sha256(b"mliplake/structure/v1\n")
    s.update(b"numbers=" + len(numbers).to_bytes(4, "little") + bytes(numbers))
    s.update(b"positions=" + _q(positions, 1e-6))
    s.update(b"cell=" + _q(np.where(np.array(pbc)[:, None], cell, 0.0), 1e-6))
    s.update(b"pbc=" + bytes(int(p) for p in pbc))
    structure_hash = s.hexdigest()[:32]
    c = hashlib.sha256(b"mliplake/config/v1\n")
    c.update(b"structure=" + structure_hash.encode())
    e = _q([energy], 1e-6)
    c.update(b"energy=+" + (1).to_bytes(4, "little") + e)
    f = _q(np.ravel(forces), 1e-6)
    c.update(b"forces=+" + (len(np.ravel(forces))).to_bytes(4, "little") + f)
    for name in ("stress", "virial", "charges", "magmoms", "dipole"):
        c.update(name.encode() + b"=-")
    c.update(b"method=" + json.dumps(method, sort_keys=True, separators=(",", ":")).encode())
    return structure_hash, c.hexdigest()[:32]


def _write(tmp_path, name, frames):
    p = tmp_path / name
    p.write_text(json.dumps(frames))
    return p


def _frame(energy=-1.0, x=0.74, cell=None, pbc=False):
    return {"symbols": ["H", "H"], "positions": [[0, 0, 0], [x, 0, 0]], "energy": energy,
            "forces": [[0.1, 0, 0], [-0.1, 0, 0]], "cell": cell or [[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]],
            "pbc": pbc}


def test_ids_follow_the_documented_stream(local_lake, tmp_path):
    method = {"code": "VASP", "functional": "PBE"}
    p = _write(tmp_path, "h2.json", [_frame(pbc=True)])
    local_lake.deposit([p], manifest={"dataset": "h2", "method": method})
    row = local_lake.configurations().to_pylist()[0]
    sh, cid = _independent_ids([1, 1], [[0, 0, 0], [0.74, 0, 0]], np.eye(3) * 10, [True] * 3, -1.0,
                               [[0.1, 0, 0], [-0.1, 0, 0]], method)
    assert row["structure_hash"] == sh
    assert row["config_id"] == cid
    assert row["hash_version"] == 1


def test_ids_are_the_same_in_another_process_and_on_s3(lake, tmp_path):
    deposit_sample(lake, "mlearn")
    here = sorted(lake.configurations(columns=["config_id"]).column("config_id").to_pylist())
    other = tmp_path / "other"
    code = (
        "import sys, mliplake, json; sys.path.insert(0, 'tests');"
        "from support import deposit_sample; lake = mliplake.Lake(sys.argv[1]); deposit_sample(lake, 'mlearn');"
        "print(json.dumps(sorted(lake.configurations(columns=['config_id']).column('config_id').to_pylist())))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(other)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == here
    assert len(set(here)) == 239


def test_duplicates_within_and_across_deposits(local_lake, tmp_path):
    a = _write(tmp_path, "a.json", [_frame(), _frame(), _frame(x=0.80)])
    b = _write(tmp_path, "b.json", [_frame(), _frame(x=0.90)])
    r1 = local_lake.deposit([a], dataset="h2")
    assert (r1.stored, r1.duplicates) == (2, 1)
    r2 = local_lake.deposit([b], dataset="h2")
    assert (r2.stored, r2.duplicates) == (1, 1)
    ids = local_lake.configurations(columns=["config_id"]).column("config_id")
    assert len(ids) == 3 == len(pc.unique(ids))
    # another dataset is its own namespace: the same frame is stored there too
    r3 = local_lake.deposit([b], dataset="other")
    assert (r3.stored, r3.duplicates) == (2, 0)


def test_same_structure_different_labels_kept_and_linked(local_lake, tmp_path):
    p = _write(tmp_path, "relabel.json", [_frame(energy=-1.0), _frame(energy=-1.1)])
    report = local_lake.deposit([p], dataset="h2")
    assert report.stored == 2 and report.relabelled == 1
    rows = local_lake.configurations().to_pylist()
    assert rows[0]["structure_hash"] == rows[1]["structure_hash"]
    assert rows[0]["config_id"] != rows[1]["config_id"]


def test_cell_of_a_molecule_does_not_change_its_structure_hash(local_lake, tmp_path):
    p = _write(tmp_path, "boxes.json", [_frame(), _frame(cell=[[20.0, 0, 0], [0, 20.0, 0], [0, 0, 20.0]])])
    report = local_lake.deposit([p], dataset="h2")
    assert report.duplicates == 1  # same molecule, same labels: the box of a non-periodic frame is not content


def test_redeposit_is_idempotent(lake):
    r1 = deposit_sample(lake, "rmd17")
    v1 = lake.snapshot()
    r2 = deposit_sample(lake, "rmd17")
    assert r1.deposit_id == r2.deposit_id
    assert (r2.stored, r2.duplicates) == (2000, 0)
    assert lake.configurations().num_rows == 2000
    assert len(lake.records()) == 1
    assert len(lake.data_files()) == 1
    # a re-run is a new version: the previous one stays readable by its version number
    old = lake.sql(f"SELECT count(*), min(deposit_id) FROM lake.configurations AT (VERSION => {v1})").fetchone()
    assert old == (2000, r1.deposit_id)
    lake.maintain(retention="0 seconds")  # past the retention, the old version's files go
    listed = lake.fs.find(lake.path("data"))
    assert [lake.uri(p) for p in listed if p.endswith(".parquet")] == lake.data_files()


def test_manifest_change_replaces_the_deposit(local_lake):
    r1 = deposit_sample(local_lake, "3bpa")
    manifest = dict(json.loads(json.dumps(__import__("yaml").safe_load((SAMPLES["3bpa"] / "manifest.yaml").read_text()))))
    manifest["units"] = {"energy": "meV"}
    r2 = local_lake.deposit(sample_files("3bpa"), manifest=manifest)
    assert r2.deposit_id == r1.deposit_id
    energies = local_lake.configurations(columns=["energy"]).column("energy").to_pylist()
    assert len(energies) == 504 and max(energies) > -20  # now read as meV: -17660 meV = -17.66 eV
