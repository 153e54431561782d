"""The filter test table: a plain-Python reference model of the sample datasets and, for each filter,
the predicate it must agree with (used by the filter tests of both search engines)."""
from __future__ import annotations

import json
import math
import operator
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property, reduce
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import pytest
import yaml

from support import SAMPLES

KEY_COLUMNS = ["dataset", "source_file", "frame_index"]


# ---------------------------------------------------------------- reference records


@dataclass
class Frame:
    """One frame as a user sees it, read without mliplake."""

    dataset: str
    source_file: str
    frame_index: int
    symbols: tuple[str, ...]
    energy: float | None
    forces: np.ndarray | None = field(repr=False)
    has_stress: bool
    pbc: tuple[bool, bool, bool]
    cell: np.ndarray = field(repr=False)
    info: dict[str, Any]
    method: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, int]:
        return self.dataset, self.source_file, self.frame_index

    @cached_property
    def counts(self) -> Counter[str]:
        return Counter(self.symbols)

    @property
    def elements(self) -> list[str]:
        return sorted(self.counts)

    @property
    def elements_ratios(self) -> list[float]:
        return [self.counts[e] / self.nsites for e in self.elements]

    @property
    def nsites(self) -> int:
        return len(self.symbols)

    @property
    def nelements(self) -> int:
        return len(self.counts)

    @property
    def nperiodic_dimensions(self) -> int:
        return sum(self.pbc)

    @property
    def dimension_types(self) -> list[int]:
        return [int(p) for p in self.pbc]

    @property
    def volume(self) -> float | None:
        return abs(float(np.linalg.det(self.cell))) if all(self.pbc) else None

    @property
    def energy_per_atom(self) -> float | None:
        return None if self.energy is None else self.energy / self.nsites

    @property
    def has_energy(self) -> bool:
        return self.energy is not None

    @property
    def has_forces(self) -> bool:
        return self.forces is not None

    @property
    def max_force(self) -> float | None:
        return None if self.forces is None else float(np.linalg.norm(self.forces, axis=1).max())

    @property
    def chemical_formula_reduced(self) -> str:
        g = reduce(math.gcd, self.counts.values())
        return _formula((e, self.counts[e] // g) for e in self.elements)

    @property
    def chemical_formula_hill(self) -> str:
        order = self.elements
        if "C" in self.counts:
            order = ["C"] + (["H"] if "H" in self.counts else []) + [e for e in order if e not in ("C", "H")]
        return _formula((e, self.counts[e]) for e in order)

    @property
    def chemical_formula_anonymous(self) -> str:
        g = reduce(math.gcd, self.counts.values())
        reduced = sorted((n // g for n in self.counts.values()), reverse=True)
        return _formula((_anonymous_name(i), n) for i, n in enumerate(reduced))


def _formula(pairs) -> str:
    return "".join(f"{e}{n if n != 1 else ''}" for e, n in pairs)


def _anonymous_name(i: int) -> str:
    """A, B, ..., Z, Aa, Ba, ..., Za, Ab, ... (OPTIMADE)."""
    return chr(ord("A") + i % 26) + ("" if i < 26 else chr(ord("a") + i // 26 - 1))


def _plain(v: Any) -> Any:
    """A value as JSON would hold it: numpy arrays as lists, numpy scalars as Python ones."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _manifest(sample: str) -> dict[str, Any]:
    return yaml.safe_load((SAMPLES[sample] / "manifest.yaml").read_text())


def _sample_paths(sample: str, suffix: str) -> list[Path]:
    return sorted(p for p in SAMPLES[sample].iterdir() if p.suffix == suffix)


def extxyz_frames(sample: str) -> list[Frame]:
    """extxyz through ASE: labels from its calculator (``energy``/``forces``) or ``REF_*`` keys."""
    manifest = _manifest(sample)
    file_info = {f["path"]: f.get("info", {}) for f in manifest.get("files", [])}
    frames = []
    for path in _sample_paths(sample, ".xyz"):
        for i, atoms in enumerate(ase.io.read(path, ":")):
            results = atoms.calc.results if atoms.calc is not None else {}
            info = {k: _plain(v) for k, v in atoms.info.items()}
            energy = results.get("energy", info.pop("REF_energy", None))
            forces = results.get("forces", atoms.arrays.get("REF_forces"))
            frames.append(Frame(
                dataset=manifest["dataset"], source_file=path.name, frame_index=i,
                symbols=tuple(atoms.get_chemical_symbols()),
                energy=None if energy is None else float(energy), forces=forces, has_stress=False,
                pbc=tuple(bool(p) for p in atoms.pbc), cell=np.asarray(atoms.cell),
                info={**info, **file_info.get(path.name, {})}, method=manifest["method"]))
    return frames


def mlearn_json_frames(sample: str) -> list[Frame]:
    """pymatgen ``Structure`` records: labels under ``outputs``, the other keys are user keys."""
    manifest = _manifest(sample)
    frames = []
    for path in _sample_paths(sample, ".json"):
        for i, rec in enumerate(json.loads(path.read_text())):
            s, out = rec["structure"], rec["outputs"]
            frames.append(Frame(
                dataset=manifest["dataset"], source_file=path.name, frame_index=i,
                symbols=tuple(site["species"][0]["element"] for site in s["sites"]),
                energy=float(out["energy"]), forces=np.asarray(out["forces"], dtype=float),
                has_stress="virial_stress" in out, pbc=(True, True, True),
                cell=np.asarray(s["lattice"]["matrix"], dtype=float),
                info={k: v for k, v in rec.items() if k not in ("structure", "outputs")},
                method=manifest["method"]))
    return frames


RECORDS: list[Frame] = extxyz_frames("3bpa") + extxyz_frames("rmd17") + mlearn_json_frames("mlearn")


def reference(predicate) -> set[tuple[str, str, int]]:
    return {r.key for r in RECORDS if predicate(r) is True}


# ---------------------------------------------------------------- three-valued semantics
# ``None`` is SQL's unknown.  Every helper is strict about types: a value of the wrong type
# is treated like a missing one.

OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
       ">": operator.gt, ">=": operator.ge}


def _same_type(v: Any, c: Any) -> bool:
    if isinstance(c, bool):
        return isinstance(v, bool)
    if isinstance(c, (int, float)):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, type(c))


def cmp(v: Any, op: str, c: Any) -> bool | None:
    return OPS[op](v, c) if v is not None and _same_type(v, c) else None


def AND(*xs: bool | None) -> bool | None:
    return False if any(x is False for x in xs) else True if all(x is True for x in xs) else None


def OR(*xs: bool | None) -> bool | None:
    return True if any(x is True for x in xs) else False if all(x is False for x in xs) else None


def NOT(x: bool | None) -> bool | None:
    return None if x is None else not x


def has(lst: Any, op: str, c: Any) -> bool | None:
    return any(cmp(v, op, c) is True for v in lst) if isinstance(lst, list) else None


def has_all(lst: Any, *vs: Any) -> bool | None:
    return all(v in lst for v in vs) if isinstance(lst, list) else None


def has_any(lst: Any, *vs: Any) -> bool | None:
    return any(v in lst for v in vs) if isinstance(lst, list) else None


def has_only(lst: Any, *vs: Any) -> bool | None:
    return set(lst) <= set(vs) if isinstance(lst, list) else None


def length(lst: Any, op: str, n: int) -> bool | None:
    return OPS[op](len(lst), n) if isinstance(lst, list) else None


def known(v: Any) -> bool:
    return v is not None


def contains(v: Any, s: str) -> bool | None:
    return s in v if isinstance(v, str) else None


def starts(v: Any, s: str) -> bool | None:
    return v.startswith(s) if isinstance(v, str) else None


def ends(v: Any, s: str) -> bool | None:
    return v.endswith(s) if isinstance(v, str) else None


def info(r: Frame, key: str) -> Any:
    return r.info.get(key)


def method(r: Frame, key: str) -> Any:
    return r.method.get(key)


# ---------------------------------------------------------------- the filter table

FILTERS = [
    # comparisons on numbers
    pytest.param("nsites = 9", lambda r: cmp(r.nsites, "=", 9), id="nsites-eq"),
    pytest.param("nsites != 64", lambda r: cmp(r.nsites, "!=", 64), id="nsites-ne"),
    pytest.param("nsites < 20", lambda r: cmp(r.nsites, "<", 20), id="nsites-lt"),
    pytest.param("nsites <= 27", lambda r: cmp(r.nsites, "<=", 27), id="nsites-le"),
    pytest.param("nsites > 27", lambda r: cmp(r.nsites, ">", 27), id="nsites-gt"),
    pytest.param("nsites >= 63", lambda r: cmp(r.nsites, ">=", 63), id="nsites-ge"),
    pytest.param("frame_index >= 995", lambda r: cmp(r.frame_index, ">=", 995), id="frame-index"),
    pytest.param("nelements = 1", lambda r: cmp(r.nelements, "=", 1), id="nelements"),
    pytest.param("nperiodic_dimensions = 3", lambda r: cmp(r.nperiodic_dimensions, "=", 3), id="nperiodic-3"),
    pytest.param("nperiodic_dimensions = 0 AND nsites > 1",
                 lambda r: AND(cmp(r.nperiodic_dimensions, "=", 0), cmp(r.nsites, ">", 1)), id="molecules"),
    pytest.param("energy < -10000", lambda r: cmp(r.energy, "<", -10000), id="energy-lt"),
    pytest.param("energy > -20 AND energy < 0", lambda r: AND(cmp(r.energy, ">", -20), cmp(r.energy, "<", 0)),
                 id="energy-window"),
    pytest.param("energy_per_atom < -600", lambda r: cmp(r.energy_per_atom, "<", -600), id="epa-lt"),
    pytest.param("energy_per_atom >= -5", lambda r: cmp(r.energy_per_atom, ">=", -5), id="epa-ge"),
    pytest.param("max_force < 1.5", lambda r: cmp(r.max_force, "<", 1.5), id="max-force-lt"),
    pytest.param("max_force = 0", lambda r: cmp(r.max_force, "=", 0), id="max-force-zero"),
    pytest.param("max_force > 5", lambda r: cmp(r.max_force, ">", 5), id="max-force-gt"),
    pytest.param("volume > 1300", lambda r: cmp(r.volume, ">", 1300), id="volume-gt"),
    pytest.param("volume <= 1000.5", lambda r: cmp(r.volume, "<=", 1000.5), id="volume-le-float"),
    pytest.param("hash_version = 1", lambda r: True, id="everything-hash-version"),
    # constant first
    pytest.param("100 > nsites", lambda r: cmp(r.nsites, "<", 100), id="const-first-everything"),
    pytest.param("20 <= nsites", lambda r: cmp(r.nsites, ">=", 20), id="const-first-le"),
    pytest.param("-5 > energy_per_atom", lambda r: cmp(r.energy_per_atom, "<", -5), id="const-first-negative"),
    pytest.param('"m" < dataset', lambda r: cmp(r.dataset, ">", "m"), id="const-first-string"),
    # comparisons on strings
    pytest.param('dataset = "rmd17-ethanol"', lambda r: cmp(r.dataset, "=", "rmd17-ethanol"), id="dataset-eq"),
    pytest.param('dataset != "3bpa"', lambda r: cmp(r.dataset, "!=", "3bpa"), id="dataset-ne"),
    pytest.param('dataset < "n"', lambda r: cmp(r.dataset, "<", "n"), id="dataset-lt"),
    pytest.param('source_file = "iso_atoms.xyz"', lambda r: cmp(r.source_file, "=", "iso_atoms.xyz"),
                 id="source-file"),
    pytest.param('chemical_formula_reduced < "C2"', lambda r: cmp(r.chemical_formula_reduced, "<", "C2"),
                 id="reduced-lt"),
    pytest.param('chemical_formula_reduced = "Si"', lambda r: cmp(r.chemical_formula_reduced, "=", "Si"),
                 id="reduced-eq"),
    pytest.param('chemical_formula_hill = "C12H12N2O"', lambda r: cmp(r.chemical_formula_hill, "=", "C12H12N2O"),
                 id="hill-eq"),
    pytest.param('chemical_formula_hill >= "Si63"', lambda r: cmp(r.chemical_formula_hill, ">=", "Si63"),
                 id="hill-ge"),
    pytest.param('chemical_formula_anonymous = "A6B2C"', lambda r: cmp(r.chemical_formula_anonymous, "=", "A6B2C"),
                 id="anonymous-eq"),
    pytest.param('chemical_formula_anonymous = "A"', lambda r: cmp(r.chemical_formula_anonymous, "=", "A"),
                 id="anonymous-single"),
    pytest.param('method.functional = "PBE"', lambda r: cmp(method(r, "functional"), "=", "PBE"), id="functional"),
    pytest.param('method.code != "ORCA"', lambda r: cmp(method(r, "code"), "!=", "ORCA"), id="code-ne"),
    # booleans
    pytest.param("has_stress = TRUE", lambda r: cmp(r.has_stress, "=", True), id="has-stress"),
    pytest.param("has_forces = FALSE", lambda r: cmp(r.has_forces, "=", False), id="has-forces-false"),
    pytest.param("has_stress != TRUE AND has_forces = TRUE",
                 lambda r: AND(cmp(r.has_stress, "!=", True), cmp(r.has_forces, "=", True)), id="booleans-and"),
    pytest.param("has_energy = TRUE", lambda r: cmp(r.has_energy, "=", True), id="has-energy-everything"),
    # elements and other lists
    pytest.param('elements HAS "N"', lambda r: has(r.elements, "=", "N"), id="has"),
    pytest.param('elements HAS "Cu"', lambda r: has(r.elements, "=", "Cu"), id="has-absent-element"),
    pytest.param('elements HAS ALL "C","H","N","O"', lambda r: has_all(r.elements, "C", "H", "N", "O"),
                 id="has-all"),
    pytest.param('elements HAS ALL "C","Cu"', lambda r: has_all(r.elements, "C", "Cu"), id="has-all-absent"),
    pytest.param('elements HAS ANY "N","Si"', lambda r: has_any(r.elements, "N", "Si"), id="has-any"),
    pytest.param('elements HAS ANY "Cu","Si"', lambda r: has_any(r.elements, "Cu", "Si"), id="has-any-absent"),
    pytest.param('elements HAS ONLY "C","H","O"', lambda r: has_only(r.elements, "C", "H", "O"), id="has-only"),
    pytest.param('elements HAS ONLY "C","H","N","O","Cu"', lambda r: has_only(r.elements, "C", "H", "N", "O", "Cu"),
                 id="has-only-absent"),
    pytest.param('elements HAS ALL "C","H" AND NOT elements HAS "N"',
                 lambda r: AND(has_all(r.elements, "C", "H"), NOT(has(r.elements, "=", "N"))), id="has-all-not-has"),
    pytest.param('elements HAS > "N"', lambda r: has(r.elements, ">", "N"), id="has-operator-string"),
    pytest.param("elements LENGTH 3", lambda r: length(r.elements, "=", 3), id="length"),
    pytest.param("elements LENGTH >= 3", lambda r: length(r.elements, ">=", 3), id="length-op"),
    pytest.param("elements_ratios HAS > 0.5", lambda r: has(r.elements_ratios, ">", 0.5), id="ratios-has-op"),
    pytest.param("dimension_types HAS 1", lambda r: has(r.dimension_types, "=", 1), id="dimension-types"),
    pytest.param("dimension_types HAS ONLY 0", lambda r: has_only(r.dimension_types, 0), id="dimension-types-only"),
    pytest.param("info.dihedrals LENGTH 3", lambda r: length(info(r, "dihedrals"), "=", 3), id="info-list-length"),
    pytest.param("NOT info.dihedrals LENGTH 2", lambda r: NOT(length(info(r, "dihedrals"), "=", 2)),
                 id="not-length-unknown"),
    pytest.param("info.dihedrals HAS > 300", lambda r: has(info(r, "dihedrals"), ">", 300), id="info-has-op"),
    pytest.param("info.dihedrals HAS 209.44", lambda r: has(info(r, "dihedrals"), "=", 209.44), id="info-has-float"),
    pytest.param("info.dihedrals HAS ANY 209.44, 1000", lambda r: has_any(info(r, "dihedrals"), 209.44, 1000),
                 id="info-has-any-float-and-int"),
    pytest.param('elements HAS != "H"', lambda r: has(r.elements, "!=", "H"), id="has-not-equal"),
    pytest.param("info.dihedrals HAS != 209.44", lambda r: has(info(r, "dihedrals"), "!=", 209.44),
                 id="info-has-not-equal"),
    pytest.param("info.group LENGTH 0", lambda r: length(info(r, "group"), "=", 0), id="length-of-a-string"),
    # IS KNOWN / IS UNKNOWN
    pytest.param("info.md17_index IS KNOWN", lambda r: known(info(r, "md17_index")), id="info-known"),
    pytest.param("info.config_type IS UNKNOWN", lambda r: not known(info(r, "config_type")), id="info-unknown"),
    pytest.param("volume IS KNOWN", lambda r: known(r.volume), id="volume-known"),
    pytest.param("volume IS UNKNOWN", lambda r: not known(r.volume), id="volume-unknown"),
    pytest.param("max_force IS UNKNOWN", lambda r: not known(r.max_force), id="max-force-unknown"),
    pytest.param("info.REF_energy IS KNOWN", lambda r: known(info(r, "REF_energy")), id="label-not-in-info"),
    pytest.param("method.temperature IS UNKNOWN", lambda r: not known(method(r, "temperature")),
                 id="method-unknown-everything"),
    # substrings
    pytest.param('chemical_formula_reduced CONTAINS "H6"', lambda r: contains(r.chemical_formula_reduced, "H6"),
                 id="contains-formula"),
    pytest.param('chemical_formula_hill STARTS WITH "Si6"', lambda r: starts(r.chemical_formula_hill, "Si6"),
                 id="starts-hill"),
    pytest.param('chemical_formula_anonymous ENDS WITH "C"', lambda r: ends(r.chemical_formula_anonymous, "C"),
                 id="ends-anonymous"),
    pytest.param('dataset STARTS WITH "rmd17"', lambda r: starts(r.dataset, "rmd17"), id="starts-dataset"),
    pytest.param('dataset STARTS "ml"', lambda r: starts(r.dataset, "ml"), id="starts-without-with"),
    pytest.param('dataset ENDS WITH "-si"', lambda r: ends(r.dataset, "-si"), id="ends-dataset"),
    pytest.param('source_file ENDS WITH "_01.xyz"', lambda r: ends(r.source_file, "_01.xyz"), id="ends-source-file"),
    pytest.param('deposit_id STARTS WITH "dep-"', lambda r: True, id="everything-deposit-prefix"),
    pytest.param('info.description CONTAINS "3374 K"', lambda r: contains(info(r, "description"), "3374 K"),
                 id="contains-description"),
    pytest.param('info.description CONTAINS "snapshot"', lambda r: contains(info(r, "description"), "snapshot"),
                 id="contains-case-sensitive"),
    pytest.param('info.description STARTS WITH "Si_"', lambda r: starts(info(r, "description"), "Si_"),
                 id="starts-underscore-literal"),
    pytest.param('info.description CONTAINS "%"', lambda r: contains(info(r, "description"), "%"),
                 id="contains-percent-literal"),
    pytest.param('info.description ENDS WITH "reconstructed"', lambda r: ends(info(r, "description"), "reconstructed"),
                 id="ends-description"),
    pytest.param('info.config_type STARTS WITH "Iso"', lambda r: starts(info(r, "config_type"), "Iso"),
                 id="starts-config-type"),
    pytest.param('method.basis CONTAINS "PAW"', lambda r: contains(method(r, "basis"), "PAW"), id="contains-method"),
    pytest.param('info.md17_index CONTAINS "26"', lambda r: contains(info(r, "md17_index"), "26"),
                 id="contains-on-int-is-unknown"),
    # user keys and type strictness
    pytest.param('info.config_type = "IsolatedAtom"', lambda r: cmp(info(r, "config_type"), "=", "IsolatedAtom"),
                 id="info-string"),
    pytest.param('info.group = "Vacancy" AND info.tag = "test"',
                 lambda r: AND(cmp(info(r, "group"), "=", "Vacancy"), cmp(info(r, "tag"), "=", "test")),
                 id="info-two-strings"),
    pytest.param("info.md17_index = 26369", lambda r: cmp(info(r, "md17_index"), "=", 26369), id="info-int"),
    pytest.param('info.md17_index = "26369"', lambda r: cmp(info(r, "md17_index"), "=", "26369"),
                 id="info-type-strict"),
    pytest.param("info.md17_index < 100000", lambda r: cmp(info(r, "md17_index"), "<", 100000), id="info-int-lt"),
    pytest.param('info.md17_index > "5"', lambda r: cmp(info(r, "md17_index"), ">", "5"),
                 id="info-int-vs-string-order"),
    pytest.param("info.num_atoms = 63.0", lambda r: cmp(info(r, "num_atoms"), "=", 63.0), id="info-int-eq-float"),
    pytest.param("info.description > 5", lambda r: cmp(info(r, "description"), ">", 5), id="info-string-vs-number"),
    pytest.param("info.config_type = TRUE", lambda r: cmp(info(r, "config_type"), "=", True), id="info-string-vs-bool"),
    pytest.param('info.element = "Si" AND info.num_atoms >= 64',
                 lambda r: AND(cmp(info(r, "element"), "=", "Si"), cmp(info(r, "num_atoms"), ">=", 64)),
                 id="info-mixed"),
    # unknown values and three-valued logic
    pytest.param('info.config_type != "rmd17"', lambda r: cmp(info(r, "config_type"), "!=", "rmd17"),
                 id="ne-skips-unknown"),
    pytest.param('NOT info.config_type = "rmd17"', lambda r: NOT(cmp(info(r, "config_type"), "=", "rmd17")),
                 id="not-skips-unknown"),
    pytest.param('info.config_type IS UNKNOWN OR info.config_type != "rmd17"',
                 lambda r: OR(not known(info(r, "config_type")), cmp(info(r, "config_type"), "!=", "rmd17")),
                 id="unknown-or-ne"),
    pytest.param("max_force > 1 OR nsites < 5", lambda r: OR(cmp(r.max_force, ">", 1), cmp(r.nsites, "<", 5)),
                 id="unknown-or-true"),
    pytest.param("max_force < 1 OR nsites > 5", lambda r: OR(cmp(r.max_force, "<", 1), cmp(r.nsites, ">", 5)),
                 id="unknown-or-false"),
    pytest.param("NOT max_force > 3", lambda r: NOT(cmp(r.max_force, ">", 3)), id="not-unknown-number"),
    pytest.param("NOT (volume > 1300)", lambda r: NOT(cmp(r.volume, ">", 1300)), id="not-parenthesised-unknown"),
    pytest.param("volume < 1000 OR nsites = 1", lambda r: OR(cmp(r.volume, "<", 1000), cmp(r.nsites, "=", 1)),
                 id="volume-or"),
    pytest.param("NOT (info.md17_index < 100000 AND nsites = 9)",
                 lambda r: NOT(AND(cmp(info(r, "md17_index"), "<", 100000), cmp(r.nsites, "=", 9))),
                 id="not-and-false-beats-unknown"),
    # precedence and nesting
    pytest.param('dataset = "3bpa" OR dataset = "mlearn-si" AND nsites < 20',
                 lambda r: OR(cmp(r.dataset, "=", "3bpa"),
                              AND(cmp(r.dataset, "=", "mlearn-si"), cmp(r.nsites, "<", 20))),
                 id="and-binds-tighter"),
    pytest.param('NOT dataset = "3bpa" AND nsites < 20',
                 lambda r: AND(NOT(cmp(r.dataset, "=", "3bpa")), cmp(r.nsites, "<", 20)), id="not-binds-tightest"),
    pytest.param('(dataset = "3bpa" OR dataset = "mlearn-si") AND nsites < 20',
                 lambda r: AND(OR(cmp(r.dataset, "=", "3bpa"), cmp(r.dataset, "=", "mlearn-si")),
                               cmp(r.nsites, "<", 20)),
                 id="parentheses"),
    pytest.param('(dataset = "3bpa" OR dataset = "rmd17-ethanol") AND NOT (nsites > 20 OR '
                 '(max_force > 3 AND (info.md17_index < 300000 OR info.config_type = "IsolatedAtom")))',
                 lambda r: AND(OR(cmp(r.dataset, "=", "3bpa"), cmp(r.dataset, "=", "rmd17-ethanol")),
                               NOT(OR(cmp(r.nsites, ">", 20),
                                      AND(cmp(r.max_force, ">", 3),
                                          OR(cmp(info(r, "md17_index"), "<", 300000),
                                             cmp(info(r, "config_type"), "=", "IsolatedAtom")))))),
                 id="nested-3-levels"),
    pytest.param('((nsites > 5 AND (elements HAS "N" OR NOT (volume > 1300))) OR '
                 '(info.config_type = "IsolatedAtom" AND NOT (elements HAS ANY "C","H")))',
                 lambda r: OR(AND(cmp(r.nsites, ">", 5),
                                  OR(has(r.elements, "=", "N"), NOT(cmp(r.volume, ">", 1300)))),
                              AND(cmp(info(r, "config_type"), "=", "IsolatedAtom"),
                                  NOT(has_any(r.elements, "C", "H")))),
                 id="nested-with-unknowns"),
    pytest.param('NOT (NOT (NOT (info.group = "Surface")))',
                 lambda r: NOT(NOT(NOT(cmp(info(r, "group"), "=", "Surface")))), id="triple-not"),
    pytest.param('elements HAS ONLY "Si","Cu" AND nsites < 100 AND has_stress = TRUE AND method.functional = "PBE" '
                 'AND NOT info.group = "AIMD-NVT"',
                 lambda r: AND(has_only(r.elements, "Si", "Cu"), cmp(r.nsites, "<", 100), cmp(r.has_stress, "=", True),
                               cmp(method(r, "functional"), "=", "PBE"), NOT(cmp(info(r, "group"), "=", "AIMD-NVT"))),
                 id="docs-example-chain"),
    # strings with escapes, nothing
    pytest.param(r'info.description = "a \"quoted\" word"',
                 lambda r: cmp(info(r, "description"), "=", 'a "quoted" word'), id="escaped-quotes"),
    pytest.param(r'info.description CONTAINS "\\"', lambda r: contains(info(r, "description"), "\\"),
                 id="escaped-backslash"),
    pytest.param("nsites > 1000", lambda r: cmp(r.nsites, ">", 1000), id="nothing"),
]
