"""Round trip: the lake read back as ASE Atoms equals the source files, on a local folder and on S3."""
from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from support import deposit_sample, sample_files

from mliplake.query.atoms import table_to_atoms

KBAR = 0.1 * 1e9 * 1e-30 / 1.602176634e-19  # eV/Å³ per kbar, by hand from the exact SI e


def lake_atoms(lake, dataset, **kw):
    tab = lake.configurations(dataset).sort_by([("source_file", "ascending"), ("frame_index", "ascending")])
    return tab, list(table_to_atoms(tab, **kw))


def assert_same_value(a, b, key):
    if isinstance(a, (np.ndarray, list)) or isinstance(b, (np.ndarray, list)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=key)
    else:
        assert a == b, key


def assert_same_atoms(got, want, extra_info=()):
    np.testing.assert_array_equal(got.numbers, want.numbers)
    np.testing.assert_array_equal(got.positions, want.positions)
    np.testing.assert_array_equal(got.cell.array, want.cell.array)
    np.testing.assert_array_equal(got.pbc, want.pbc)
    assert set(got.info) == set(want.info) | {"config_id", *extra_info}
    for k, v in want.info.items():
        assert_same_value(got.info[k], v, k)
    assert set(got.arrays) == set(want.arrays)
    for k, v in want.arrays.items():
        np.testing.assert_array_equal(got.arrays[k], v, err_msg=k)


@pytest.mark.parametrize("name", ["3bpa", "rmd17"])
def test_extxyz_samples_round_trip(lake, name):
    report = deposit_sample(lake, name)
    files = sample_files(name)
    source = {p.name: ase.io.read(p, ":") for p in files}
    assert report.stored == sum(len(v) for v in source.values()) == report.frames_read
    dataset = report.dataset
    tab, atoms = lake_atoms(lake, dataset)
    wanted = [a for name_ in sorted(source) for a in source[name_]]
    assert len(atoms) == len(wanted)
    names = tab.column("source_file").to_pylist()
    for got, want, fname in zip(atoms, wanted, names):
        extra = ("config_type",) if fname == "iso_atoms.xyz" else ()
        if want.calc is not None:
            # plain `energy`/`forces` keys: ASE puts them on the calculator, as the lake does
            assert got.get_potential_energy() == want.get_potential_energy()
            if "forces" in want.calc.results:
                np.testing.assert_array_equal(got.get_forces(), want.get_forces())
        else:
            # REF_* keys: ASE keeps them in info/arrays; the lake stores them as energy/forces
            assert got.get_potential_energy() == want.info["REF_energy"]
            np.testing.assert_array_equal(got.get_forces(), want.arrays["REF_forces"])
            want = want.copy()
            want.info.pop("REF_energy")
            want.arrays.pop("REF_forces")
        want = want.copy()
        assert_same_atoms(got, want, extra)
    if name == "3bpa":
        iso = [a for a, f in zip(atoms, names) if f == "iso_atoms.xyz"]
        assert {a.info["config_type"] for a in iso} == {"IsolatedAtom"}


def test_original_key_names_come_back(local_lake):
    deposit_sample(local_lake, "rmd17")
    _, atoms = lake_atoms(local_lake, "rmd17-ethanol", original_keys=True)
    want = ase.io.read(sample_files("rmd17")[0], ":")
    for got, w in zip(atoms[:50], want[:50]):
        assert got.info["REF_energy"] == w.info["REF_energy"]
        np.testing.assert_array_equal(got.arrays["REF_forces"], w.arrays["REF_forces"])
        assert got.info["md17_index"] == w.info["md17_index"]


def test_mlearn_round_trip(lake):
    report = deposit_sample(lake, "mlearn")
    records = [r for p in sample_files("mlearn") for r in json.loads(p.read_text())]
    assert report.stored == len(records) == 239
    _, atoms = lake_atoms(lake, "mlearn-si")
    for got, rec in zip(atoms, records):
        s = rec["structure"]
        np.testing.assert_array_equal(got.positions, [site["xyz"] for site in s["sites"]])
        np.testing.assert_array_equal(got.cell.array, s["lattice"]["matrix"])
        assert got.pbc.all()
        assert list(got.get_chemical_symbols()) == [site["species"][0]["element"] for site in s["sites"]]
        assert got.get_potential_energy() == rec["outputs"]["energy"]
        np.testing.assert_array_equal(got.get_forces(), rec["outputs"]["forces"])
        xx, yy, zz, xy, yz, xz = rec["outputs"]["virial_stress"]
        # VASP prints the pressure-like stress in kbar: ASE's stress is its negative, in eV/Å³
        want = -np.array([xx, yy, zz, yz, xz, xy]) * KBAR
        np.testing.assert_allclose(got.get_stress(), want, rtol=1e-12, atol=1e-15)
        for k in ("group", "tag", "description", "num_atoms", "element"):
            assert got.info[k] == rec[k]


def test_derived_columns(local_lake):
    deposit_sample(local_lake, "3bpa")
    deposit_sample(local_lake, "mlearn")
    tab = local_lake.configurations().to_pylist()
    for row in tab:
        nums = np.array(row["numbers"])
        assert row["nsites"] == len(nums)
        if row["dataset"] == "3bpa" and row["nsites"] == 27:
            assert row["elements"] == ["C", "H", "N", "O"]
            assert row["chemical_formula_reduced"] == "C12H12N2O"
            assert row["chemical_formula_hill"] == "C12H12N2O"
            assert row["chemical_formula_anonymous"] == "A12B12C2D"
            assert row["volume"] is None  # not periodic
            assert row["nperiodic_dimensions"] == 0
            mask = (1 << 6) | (1 << 1) | (1 << 7) | (1 << 8)
            assert row["element_mask_lo"] == mask and row["element_mask_hi"] == 0
        if row["dataset"] == "mlearn-si":
            cell = np.array(row["cell"]).reshape(3, 3)
            assert row["volume"] == pytest.approx(abs(np.linalg.det(cell)), rel=1e-12)
            assert row["chemical_formula_reduced"] == "Si"
            assert row["elements_ratios"] == [1.0]
        if row["forces"] is None:  # isolated atoms carry no forces
            assert row["max_force"] is None
            continue
        forces = np.array(row["forces"]).reshape(-1, 3)
        assert row["max_force"] == pytest.approx(np.linalg.norm(forces, axis=1).max(), rel=1e-12)
        assert row["energy_per_atom"] == pytest.approx(row["energy"] / len(nums), rel=1e-15)


def test_a_report_counts_the_bytes_its_deposit_added_to_the_lake(local_lake):
    """"MB written" is what the deposit's rows take in the table, not their staged copy."""
    before = {p: p.stat().st_size for p in (Path(local_lake.root) / "data").rglob("*.parquet")}
    report = deposit_sample(local_lake, "3bpa")
    added = sum(p.stat().st_size for p in (Path(local_lake.root) / "data").rglob("*.parquet") if p not in before)
    assert report.stored > 0 and added > 0
    assert report.bytes_written == added
    assert f"{added / 1e6:.2f} MB written" in report.summary()
