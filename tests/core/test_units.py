"""Units and key names: inputs in kcal/mol, Hartree/Bohr, kbar (VASP convention), GPa or virials land in eV, Å, eV/Å, eV/Å³."""
from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from support import sample_files

from mliplake import Lake
from mliplake.core import units
from mliplake.core.manifest import ManifestError, parse_manifest

# Hand-computed constants (CODATA 2018 / SI exact), independent of ase.units.
EV = 1.602176634e-19  # J
NA = 6.02214076e23
KCAL_MOL = 4184.0 / NA / EV  # eV
HARTREE = 27.211386245988  # eV
BOHR = 0.529177210903  # Å
GPA = 1e9 * 1e-30 / EV  # eV/Å³ per GPa


def rows(lake: Lake, dataset: str) -> list[dict]:
    tab = lake.configurations(dataset).sort_by([("source_file", "ascending"), ("frame_index", "ascending")])
    return tab.to_pylist()


def test_rmd17_in_kcal_per_mol_lands_in_ev(local_lake, tmp_path):
    """rMD17 as published (kcal/mol, kcal/mol/Å): the lake holds eV and eV/Å."""
    frames = ase.io.read(sample_files("rmd17")[0], ":100")
    for a in frames:
        a.info["REF_energy"] /= KCAL_MOL
        a.arrays["REF_forces"] = a.arrays["REF_forces"] / KCAL_MOL
    path = tmp_path / "ethanol_kcal.xyz"
    ase.io.write(path, frames, format="extxyz")
    manifest = {"dataset": "rmd17-kcal", "units": {"energy": "kcal/mol", "forces": "kcal/mol/Angstrom"}}
    report = local_lake.deposit([path], manifest=manifest)
    assert report.stored == 100
    src = ase.io.read(path, ":")
    for row, a in zip(rows(local_lake, "rmd17-kcal"), src):
        assert row["energy"] == pytest.approx(a.info["REF_energy"] * KCAL_MOL, rel=1e-12)
        np.testing.assert_allclose(np.array(row["forces"]), a.arrays["REF_forces"] * KCAL_MOL, rtol=1e-12)
    # and it equals the eV file it came from
    orig = ase.io.read(sample_files("rmd17")[0], ":100")
    assert rows(local_lake, "rmd17-kcal")[0]["energy"] == pytest.approx(orig[0].info["REF_energy"], rel=1e-12)


def test_mlearn_kbar_vasp_convention(local_lake):
    """mlearn's virial_stress (kbar, VASP order xx yy zz xy yz zx, positive = compressive)."""
    rec = json.loads(sample_files("mlearn")[0].read_text())[0]
    local_lake.deposit(sample_files("mlearn"), manifest=sample_files("mlearn")[0].parent / "manifest.yaml")
    row = rows(local_lake, "mlearn-si")[0]
    xx, yy, zz, xy, yz, zx = rec["outputs"]["virial_stress"]
    want = -0.1 * GPA * np.array([[xx, xy, zx], [xy, yy, yz], [zx, yz, zz]])
    np.testing.assert_allclose(np.array(row["stress"]).reshape(3, 3), want, rtol=1e-12, atol=1e-18)


def test_expanded_cell_has_tensile_stress(local_lake):
    """Sign check on physics: mlearn's strained cells, positive strain -> positive (tensile) ASE stress."""
    local_lake.deposit(sample_files("mlearn"), manifest=sample_files("mlearn")[0].parent / "manifest.yaml")
    strained = [r for r in rows(local_lake, "mlearn-si") if "mode 0, strain" in json.loads(r["info"])["description"]]
    assert len(strained) >= 8
    for r in strained:
        strain = float(json.loads(r["info"])["description"].rsplit(" ", 1)[1])
        assert np.sign(r["stress"][0]) == np.sign(strain)


def _record(**kw):
    rec = {"symbols": ["Si", "Si"], "positions": [[0, 0, 0], [1.0, 1.0, 1.0]],
           "cell": [[2.0, 0, 0], [0, 3.0, 0], [0, 0, 4.0]], "pbc": True, "energy": -1.0,
           "forces": [[0.1, 0, 0], [-0.1, 0, 0]]}
    rec.update(kw)
    return rec


def test_virial_only_gives_stress(local_lake, tmp_path):
    """stress = -virial / volume (ASE sign) when only a virial is given; the virial is kept too."""
    virial = [[24.0, 0, 0], [0, 48.0, 0], [0, 0, -24.0]]  # eV; volume 2*3*4 = 24 Å³
    p = tmp_path / "virial.json"
    p.write_text(json.dumps([_record(virial=virial)]))
    local_lake.deposit([p], dataset="vir")
    row = rows(local_lake, "vir")[0]
    np.testing.assert_allclose(np.array(row["stress"]).reshape(3, 3), np.diag([-1.0, -2.0, 1.0]))
    np.testing.assert_allclose(np.array(row["virial"]).reshape(3, 3), virial)
    assert row["volume"] == pytest.approx(24.0)


def test_virial_in_extxyz_with_hartree_bohr(local_lake, tmp_path):
    """An extxyz in Hartree and Bohr with a virial: positions, cell, energy, forces, stress all converted."""
    text = (
        "2\n"
        'Lattice="4.0 0.0 0.0 0.0 4.0 0.0 0.0 0.0 4.0" Properties=species:S:1:pos:R:3:force:R:3 '
        'energy=-1.5 virial="0.64 0 0 0 0.64 0 0 0 0.64" pbc="T T T"\n'
        "H 0.0 0.0 0.0 0.01 0.0 0.0\n"
        "H 1.4 0.0 0.0 -0.01 0.0 0.0\n"
    )
    p = tmp_path / "h2.xyz"
    p.write_text(text)
    manifest = {"dataset": "h2", "units": {"energy": "Hartree", "length": "Bohr"}, "key_map": {"force": "forces"}}
    report = local_lake.deposit([p], manifest=manifest)
    assert report.key_mapping.get("force->forces") == 1
    row = rows(local_lake, "h2")[0]
    assert row["energy"] == pytest.approx(-1.5 * HARTREE, rel=1e-9)
    np.testing.assert_allclose(np.array(row["positions"])[1], [1.4 * BOHR, 0, 0], rtol=1e-9)
    np.testing.assert_allclose(np.array(row["forces"])[0], [0.01 * HARTREE / BOHR, 0, 0], rtol=1e-9)
    volume = (4.0 * BOHR) ** 3
    assert row["volume"] == pytest.approx(volume, rel=1e-9)
    assert row["stress"][0] == pytest.approx(-0.64 * HARTREE / volume, rel=1e-9)
    prov = json.loads(row["provenance"])
    assert prov["units"]["energy"] == "Hartree" and prov["keys"]["force"] == "forces"


def test_gpa_stress_voigt(local_lake, tmp_path):
    p = tmp_path / "gpa.json"
    p.write_text(json.dumps([_record(stress=[1.0, 2.0, 3.0, 0.4, 0.5, 0.6])]))
    local_lake.deposit([p], manifest={"dataset": "gpa", "units": {"stress": "GPa"}})
    m = np.array(rows(local_lake, "gpa")[0]["stress"]).reshape(3, 3)
    # ASE Voigt order xx yy zz yz xz xy
    want = GPA * np.array([[1.0, 0.6, 0.5], [0.6, 2.0, 0.4], [0.5, 0.4, 3.0]])
    np.testing.assert_allclose(m, want, rtol=1e-12)


def test_record_units_override_manifest(local_lake, tmp_path):
    p = tmp_path / "mixed.json"
    p.write_text(json.dumps([_record(energy=-2.0), _record(energy=-2.0, units={"energy": "kJ/mol"})]))
    local_lake.deposit([p], dataset="mixed")
    e = [r["energy"] for r in rows(local_lake, "mixed")]
    assert e[0] == -2.0
    assert e[1] == pytest.approx(-2.0 * 1000.0 / NA / EV, rel=1e-9)


@pytest.mark.parametrize("units, field", [
    ({"energy": "furlongs"}, "unknown energy unit"),
    ({"length": "parsec"}, "unknown length unit"),
    ({"stress": "psi"}, "unknown stress unit"),
    ({"stress_convention": "abinit"}, "unknown stress_convention"),
    ({"energy": "eV", "temperature": "K"}, "unknown entries"),
])
def test_unknown_units_are_manifest_errors(units, field):
    with pytest.raises(ManifestError, match=field) as e:
        parse_manifest({"dataset": "x", "units": units}, source="m.yaml")
    assert "manifest m.yaml: field 'units'" in str(e.value)


@pytest.mark.parametrize("call", [lambda: units.energy_factor(1), lambda: units.length_factor(True),
                                  lambda: units.forces_factor(["eV/Angstrom"], "eV", "Angstrom"),
                                  lambda: units.stress_factor(0.1, "eV", "Angstrom"), lambda: units.stress_sign(True)])
def test_a_unit_is_a_name_not_a_number(call):
    """A unit is a name: a number, boolean or list is refused as such, not looked up as str(value)."""
    with pytest.raises(units.UnitError):
        call()


def test_aliases_recognised_without_a_map(local_lake, tmp_path):
    text = (
        "1\n"
        'Properties=species:S:1:pos:R:3:DFT_forces:R:3 DFT_energy=-3.0 config_type=x pbc="F F F"\n'
        "He 0 0 0 0.5 0 0\n"
    )
    p = tmp_path / "he.xyz"
    p.write_text(text)
    report = local_lake.deposit([p], dataset="he")
    assert report.key_mapping == {"DFT_energy->energy": 1, "DFT_forces->forces": 1}
    row = rows(local_lake, "he")[0]
    assert row["energy"] == -3.0 and row["forces"] == [[0.5, 0.0, 0.0]]
    assert json.loads(row["info"]) == {"config_type": "x"}
