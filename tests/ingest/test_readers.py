"""Readers: extxyz quirks through the C parser, formats through ase.io, JSON records."""
from __future__ import annotations

import json

import ase.db
import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

from mliplake.query.atoms import table_to_atoms
from mliplake.readers import detect_format, read_frames


def labelled(atoms, energy=-1.25, seed=0):
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=0.01, size=atoms.positions.shape)  # distinct frames, not duplicates
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=rng.normal(size=(len(atoms), 3)),
                                       stress=rng.normal(size=6) * 0.01 if atoms.pbc.all() else None)
    return atoms


def triclinic():
    a = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    a.set_cell([[3.6, 0.1, 0.2], [0.3, 3.5, 0.1], [0.2, 0.4, 3.7]], scale_atoms=True)
    a.rattle(0.05, seed=1)
    return a


def back(lake, dataset):
    tab = lake.configurations(dataset).sort_by([("source_file", "ascending"), ("frame_index", "ascending")])
    return list(table_to_atoms(tab))


def test_extxyz_triclinic_custom_arrays_and_info(local_lake, tmp_path):
    a = labelled(triclinic())
    a.info.update(config_type="bulk", temperature=300.5, tags_list=[1, 2, 3], flag=True)
    a.new_array("tags_pa", np.arange(len(a)))
    a.new_array("vec", np.ones((len(a), 3)) * 0.5)
    b = labelled(molecule("H2O"), energy=-14.0, seed=2)
    b.info["name"] = "water molecule"
    p = tmp_path / "mixed.extxyz"
    ase.io.write(p, [a, b], format="extxyz")
    report = local_lake.deposit([p], dataset="mixed")
    assert report.stored == 2 and report.quarantined == 0
    got = back(local_lake, "mixed")
    src = ase.io.read(p, ":")
    for g, s in zip(got, src):
        np.testing.assert_allclose(g.cell.array, s.cell.array, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(g.pbc, s.pbc)
        np.testing.assert_allclose(g.positions, s.positions, atol=1e-12)
        assert g.get_potential_energy() == s.get_potential_energy()
        np.testing.assert_allclose(g.get_forces(), s.get_forces())
        for k, v in s.info.items():
            assert np.all(np.asarray(g.info[k]) == np.asarray(v)), k
        for k in s.arrays:
            np.testing.assert_array_equal(g.arrays[k], s.arrays[k])
    np.testing.assert_allclose(got[0].get_stress(), src[0].get_stress(), rtol=1e-12)
    assert not got[1].pbc.any()


def test_plain_xyz_without_lattice_is_not_periodic(local_lake, tmp_path):
    p = tmp_path / "plain.xyz"
    p.write_text("3\nwater, no key=value pairs at all\nO 0 0 0\nH 0.76 0.59 0\nH -0.76 0.59 0\n")
    report = local_lake.deposit([p], dataset="plain")
    assert report.stored == 1
    row = local_lake.configurations().to_pylist()[0]
    assert row["pbc"] == [False, False, False] and row["energy"] is None
    assert row["chemical_formula_hill"] == "H2O"
    assert json.loads(row["info"]) == {"comment": "water, no key=value pairs at all"}


@pytest.mark.parametrize("fmt, suffix", [("vasp", "POSCAR"), ("cif", "x.cif"), ("traj", "x.traj"),
                                          ("db", "x.db"), ("json", "x.json")])
def test_formats_through_ase(local_lake, tmp_path, fmt, suffix):
    frames = [labelled(triclinic(), energy=-3.0 - i, seed=i) for i in range(3)]
    path = tmp_path / suffix
    if fmt == "db" or fmt == "json":
        with ase.db.connect(path, type="json" if fmt == "json" else "db") as db:
            for f in frames:
                db.write(f, config_type="md")
    elif fmt == "vasp":
        frames = frames[:1]
        ase.io.write(path, frames[0], format="vasp", direct=True)
    else:
        ase.io.write(path, frames, format=fmt)
    manifest = {"dataset": "fmt", "files": [{"path": path.name, "format": "vasp"}]} if fmt == "vasp" else {"dataset": "fmt"}
    report = local_lake.deposit([path], manifest=manifest)
    assert report.quarantined == 0, report.summary()
    want = ase.io.read(path, ":", format="vasp" if fmt == "vasp" else None)  # what ASE itself reads
    assert report.stored == len(want) == len(frames)
    got = back(local_lake, "fmt")
    for g, s in zip(got, want):
        np.testing.assert_allclose(g.positions, s.positions, atol=1e-6)
        np.testing.assert_allclose(g.cell.array, s.cell.array, atol=1e-6)
        assert list(g.numbers) == list(s.numbers)
        if fmt in ("traj", "db", "json"):
            assert g.get_potential_energy() == s.get_potential_energy()
            np.testing.assert_allclose(g.get_forces(), s.get_forces())
            np.testing.assert_allclose(g.get_stress(), s.get_stress())
    if fmt in ("db", "json"):
        assert detect_format(path) == "ase"


def test_json_records_plain_and_jsonl(local_lake, tmp_path):
    recs = [
        {"numbers": [8, 1, 1], "positions": [[0, 0, 0], [0.76, 0.59, 0], [-0.76, 0.59, 0]], "energy": -14.2,
         "forces": [[0, 0, 0.1], [0, 0, -0.05], [0, 0, -0.05]], "temperature": 300,
         "arrays": {"tag": [0, 1, 1]}, "provenance": {"code": "my_script.py", "run": 7}},
        {"elements": ["H", "H"], "positions": [[0, 0, 0], [0.74, 0, 0]], "energy": -31.0},
    ]
    p = tmp_path / "recs.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    assert [type(x).__name__ for x in read_frames(p)] == ["RawFrame", "RawFrame"]
    report = local_lake.deposit([p], dataset="recs")
    assert report.stored == 2
    rows = local_lake.configurations().sort_by("frame_index").to_pylist()
    assert json.loads(rows[0]["info"]) == {"temperature": 300}
    assert json.loads(rows[0]["arrays"]) == {"tag": [0, 1, 1]}
    assert json.loads(rows[0]["provenance"])["record"] == {"code": "my_script.py", "run": 7}
    assert rows[1]["forces"] is None and rows[1]["chemical_formula_reduced"] == "H"


def test_directory_with_manifest(local_lake, tmp_path):
    d = tmp_path / "deposit"
    d.mkdir()
    ase.io.write(d / "a.xyz", [labelled(molecule("CH4"))], format="extxyz")
    (d / "manifest.yaml").write_text("dataset: methane\nlicense: CC-BY-4.0\nunits: {energy: eV}\n")
    report = local_lake.deposit([d])
    assert report.dataset == "methane" and report.stored == 1
    assert [p.rsplit("/", 1)[1] for p in local_lake.raw_files(report.deposit_id)] == ["a.xyz"]
    assert local_lake.fs.exists(local_lake.raw_dir(report.deposit_id) + "/manifest.yaml")
