"""Deposit manifests: who made the data, how, in which units and under which key names."""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import units
from .schema import LABELS

DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
VISIBILITY = ("public", "private", "embargoed")

#: Key names recognised without a key map, per canonical label.  The first
#: one present in a frame wins (REF_* first: MACE's convention for reference data).
ALIASES: dict[str, tuple[str, ...]] = {
    "energy": ("REF_energy", "DFT_energy", "dft_energy", "ref_energy", "energy", "Energy",
               "total_energy", "TotEnergy", "potential_energy"),
    "forces": ("REF_forces", "DFT_forces", "dft_forces", "ref_forces", "forces", "force",
               "Forces"),
    "stress": ("REF_stress", "DFT_stress", "dft_stress", "ref_stress", "stress"),
    "virial": ("REF_virial", "DFT_virial", "dft_virial", "ref_virial", "virial", "virials"),
    "charges": ("REF_charges", "DFT_charges", "charges"),
    "magmoms": ("REF_magmoms", "DFT_magmoms", "magmoms", "magnetic_moments"),
    "dipole": ("REF_dipole", "DFT_dipole", "dipole"),
}

KNOWN_FIELDS = {
    "dataset", "name", "title", "description", "authors", "license", "licence", "links", "doi",
    "method", "sampling", "units", "key_map", "labels", "visibility", "files", "submitter",
}


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the manifest and the field."""


@dataclass
class Units:
    energy: str = "eV"
    length: str = "Angstrom"
    forces: str | None = None  # default: energy/length
    stress: str | None = None  # default: energy/length^3
    stress_convention: str = "ase"
    declared: bool = False

    def factors(self) -> dict[str, float]:
        return {
            "energy": units.energy_factor(self.energy),
            "length": units.length_factor(self.length),
            "forces": units.forces_factor(self.forces, self.energy, self.length),
            "stress": units.stress_factor(self.stress, self.energy, self.length),
            "stress_sign": units.stress_sign(self.stress_convention),
        }


@dataclass
class FileEntry:
    path: str
    format: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # added to every frame of the file


@dataclass
class Manifest:
    dataset: str
    title: str = ""
    description: str = ""
    authors: list[str] = field(default_factory=list)
    license: str = ""
    links: list[str] = field(default_factory=list)
    doi: str = ""
    method: dict[str, Any] = field(default_factory=dict)
    sampling: Any = ""
    units: Units = field(default_factory=Units)
    key_map: dict[str, str] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)  # required in every frame
    visibility: str = "public"
    files: list[FileEntry] = field(default_factory=list)
    submitter: str = ""
    source: str = "<arguments>"  # where the manifest came from, for error messages
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    def file_entry(self, name: str) -> FileEntry | None:
        for f in self.files:
            if Path(f.path).name == Path(name).name:
                return f
        return None


def _err(source: str, key: str, why: str) -> ManifestError:
    return ManifestError(f"manifest {source}: field '{key}': {why}")


def _str_list(raw: Any, source: str, key: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(x, (str, int, float)) for x in raw):
        return [str(x) for x in raw]
    raise _err(source, key, f"expected a string or a list of strings, got {type(raw).__name__}")


def _units(raw: Any, source: str) -> Units:
    if raw is None:
        return Units()
    if not isinstance(raw, dict):
        raise _err(source, "units", "expected a mapping such as {energy: eV, length: Angstrom}")
    unknown = set(raw) - {"energy", "length", "forces", "stress", "stress_convention"}
    if unknown:
        raise _err(source, "units", f"unknown entries {sorted(unknown)}")
    u = Units(**{k: str(v) for k, v in raw.items()}, declared=True)
    try:
        u.factors()
    except units.UnitError as e:
        raise _err(source, "units", str(e)) from None
    return u


def _files(raw: Any, source: str) -> list[FileEntry]:
    out = []
    for i, item in enumerate(raw or []):
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict) or "path" not in item:
            raise _err(source, f"files[{i}]", "expected a path or {path: ..., format: ..., info: {...}}")
        unknown = set(item) - {"path", "format", "info"}
        if unknown:
            raise _err(source, f"files[{i}]", f"unknown entries {sorted(unknown)}")
        if not isinstance(item.get("info", {}), dict):
            raise _err(source, f"files[{i}].info", "expected a mapping")
        out.append(FileEntry(str(item["path"]), item.get("format"), dict(item.get("info") or {})))
    return out


def parse_manifest(raw: dict[str, Any], source: str = "<arguments>", dataset: str | None = None) -> Manifest:
    """Validate a manifest mapping; ``dataset`` (e.g. from the command line) overrides it."""
    if not isinstance(raw, dict):
        raise ManifestError(f"manifest {source}: expected a mapping at the top level, got {type(raw).__name__}")
    name = dataset or raw.get("dataset") or raw.get("name")
    if not name:
        raise _err(source, "dataset", "missing: give the dataset name in the manifest or with --dataset")
    if dataset and raw.get("dataset") and raw["dataset"] != dataset:
        raise _err(source, "dataset", f"says {raw['dataset']!r} but the deposit was made to {dataset!r}")
    if not isinstance(name, str) or not DATASET_NAME.match(name):
        raise _err(source, "dataset", f"{name!r} is not a valid name (letters, digits, '_', '.', '-'; up to 128)")
    key_map = raw.get("key_map") or {}
    if not isinstance(key_map, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in key_map.items()):
        raise _err(source, "key_map", "expected a mapping of input key -> lake key, e.g. {force: forces}")
    labels = _str_list(raw.get("labels"), source, "labels")
    bad = [x for x in labels if x not in LABELS]
    if bad:
        raise _err(source, "labels", f"unknown labels {bad}; known: {sorted(LABELS)}")
    visibility = raw.get("visibility", "public")
    if visibility not in VISIBILITY:
        raise _err(source, "visibility", f"{visibility!r} is not one of {VISIBILITY}")
    method = raw.get("method") or {}
    if not isinstance(method, dict):
        raise _err(source, "method", "expected a mapping: {code, functional, basis, settings}")
    extra = {k: v for k, v in raw.items() if k not in KNOWN_FIELDS}
    return Manifest(
        dataset=name,
        title=str(raw.get("title") or ""),
        description=str(raw.get("description") or ""),
        authors=_str_list(raw.get("authors"), source, "authors"),
        license=str(raw.get("license") or raw.get("licence") or ""),
        links=_str_list(raw.get("links"), source, "links"),
        doi=str(raw.get("doi") or ""),
        method=method,
        sampling=raw.get("sampling") or "",
        units=_units(raw.get("units"), source),
        key_map=dict(key_map),
        labels=labels,
        visibility=visibility,
        files=_files(raw.get("files"), source),
        submitter=str(raw.get("submitter") or ""),
        source=source,
        extra=extra,
    )


def load_manifest(path: str | Path, dataset: str | None = None) -> Manifest:
    """Read a YAML or JSON manifest file (YAML is a superset of JSON)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"manifest {p}: file not found") from None
    return manifest_from_bytes(data, str(p), dataset)


def manifest_from_bytes(data: bytes, source: str, dataset: str | None = None) -> Manifest:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"manifest {source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        raw = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise ManifestError(f"manifest {source}: not valid YAML/JSON: {e}") from None
    if raw is None:
        raise ManifestError(f"manifest {source}: empty")
    return parse_manifest(raw, source=source, dataset=dataset)
