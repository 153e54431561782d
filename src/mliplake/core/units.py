"""Unit conversion into the lake's units (eV, Å, eV/Å, eV/Å³).

Constants are CODATA 2018 (the exact SI values of 2019), through ASE's
``create_units``; ASE's own module-level constants are CODATA 2014, which differ
by about 1e-8 relative.
"""
from __future__ import annotations

import re

import numpy as np
from ase.units import create_units

u = create_units("2018")

# Spellings are normalised (lower case, no spaces, Å -> angstrom) before lookup.
ENERGY: dict[str, float] = {
    "ev": 1.0,
    "mev": 1e-3,
    "kev": 1e3,
    "hartree": u.Hartree,
    "ha": u.Hartree,
    "eh": u.Hartree,
    "au": u.Hartree,
    "ry": u.Rydberg,
    "rydberg": u.Rydberg,
    "kcal/mol": u.kcal / u.mol,
    "kj/mol": u.kJ / u.mol,
    "j": u.J,
}
LENGTH: dict[str, float] = {
    "angstrom": 1.0,
    "a": 1.0,
    "ang": 1.0,
    "bohr": u.Bohr,
    "au": u.Bohr,
    "nm": u.nm,
    "pm": 1e-2,
    "m": u.m,
}
STRESS: dict[str, float] = {
    "ev/angstrom^3": 1.0,
    "ev/a^3": 1.0,
    "gpa": u.GPa,
    "kbar": 0.1 * u.GPa,
    "bar": 1e-4 * u.GPa,
    "mpa": 1e-3 * u.GPa,
    "pa": u.Pascal,
    "atm": 101325 * u.Pascal,
    "hartree/bohr^3": u.Hartree / u.Bohr**3,
}
STRESS_CONVENTIONS = ("ase", "vasp")


class UnitError(ValueError):
    """A unit the lake cannot convert."""


def _norm(unit: str) -> str:
    if not isinstance(unit, str):  # str(1) would be looked up as the unit "1", str(True) as "true"
        raise UnitError(f"expected a unit name such as eV, got {type(unit).__name__} {unit!r}")
    s = unit.strip().lower().replace(" ", "").replace("å", "angstrom").replace("**", "^")
    s = s.replace("³", "^3").replace("ang^3", "angstrom^3")
    return re.sub(r"angstroms?", "angstrom", s)


def _lookup(table: dict[str, float], unit: str, what: str) -> float:
    key = _norm(unit)
    if key in table:
        return table[key]
    raise UnitError(
        f"unknown {what} unit {unit!r}; known: {', '.join(sorted(table))}"
    )


def energy_factor(unit: str) -> float:
    return _lookup(ENERGY, unit, "energy")


def length_factor(unit: str) -> float:
    return _lookup(LENGTH, unit, "length")


def forces_factor(unit: str | None, energy_unit: str, length_unit: str) -> float:
    """eV/Å per input force unit; defaults to energy unit / length unit."""
    if unit is None:
        return energy_factor(energy_unit) / length_factor(length_unit)
    key = _norm(unit)
    if "/" not in key:
        raise UnitError(f"unknown forces unit {unit!r}: expected ENERGY/LENGTH, e.g. eV/Angstrom")
    e, _, l = key.rpartition("/")
    return energy_factor(e) / length_factor(l)


def stress_factor(unit: str | None, energy_unit: str, length_unit: str) -> float:
    if unit is None:
        return energy_factor(energy_unit) / length_factor(length_unit) ** 3
    key = _norm(unit)
    if key in STRESS:
        return STRESS[key]
    e, sep, l = key.rpartition("/")
    if sep and l.endswith("^3"):
        return energy_factor(e) / length_factor(l[:-2]) ** 3
    raise UnitError(f"unknown stress unit {unit!r}; known: {', '.join(sorted(STRESS))}, or ENERGY/LENGTH^3")


# Voigt orders: ASE writes xx yy zz yz xz xy; VASP prints xx yy zz xy yz zx.
_VOIGT_ASE = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
_VOIGT_VASP = ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2))


def stress_to_3x3(values: np.ndarray, convention: str = "ase") -> np.ndarray:
    """A stress given as 9 or 6 (Voigt) numbers, as (n, 9) row-major 3x3, sign as given."""
    v = np.asarray(values, dtype=float)
    if v.shape[-1] == 9:
        return v.reshape(-1, 9)
    if v.shape[-1] != 6:
        raise ValueError(f"stress must have 6 (Voigt) or 9 components, got {v.shape[-1]}")
    order = _VOIGT_VASP if convention == "vasp" else _VOIGT_ASE
    out = np.empty(v.shape[:-1] + (3, 3))
    for k, (i, j) in enumerate(order):
        out[..., i, j] = v[..., k]
        out[..., j, i] = v[..., k]
    return out.reshape(-1, 9)


def stress_sign(convention: str) -> float:
    """VASP reports pressure-like stress (positive = compressive): the negative of ASE's."""
    if not isinstance(convention, str) or convention not in STRESS_CONVENTIONS:
        raise UnitError(f"unknown stress_convention {convention!r}; known: {', '.join(STRESS_CONVENTIONS)}")
    return -1.0 if convention == "vasp" else 1.0
