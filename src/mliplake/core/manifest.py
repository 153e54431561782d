"""Deposit manifests: who made the data, how, in which units and under which key names.

A manifest is checked field by field, by type: YAML reads ``license: no`` as a
boolean and ``doi: 10.10`` as the number 10.1, and a value of the wrong type is
an error that names the field rather than a silent change.  Hostile manifests
(alias bombs, deep nesting, huge files) are refused before they are expanded.
"""
from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mliplake.core import units
from mliplake.core.schema import LABELS

DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
VISIBILITY = ("public", "private", "embargoed")

#: Limits on a manifest (docs/manifest.md): the file is refused before it is parsed, a YAML
#: alias bomb before it is expanded (300 bytes of aliases can expand to gigabytes, copied into
#: every row), and anything that parses to more than MAX_MANIFEST_SIZE bytes of JSON.
MAX_MANIFEST_BYTES = 1 << 20
MAX_MANIFEST_SIZE = 1 << 20
MAX_YAML_ALIASES = 16
MAX_MANIFEST_DEPTH = 32
MAX_INT_DIGITS = 38  # DuckDB's widest integer (HUGEINT) holds no more

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
_ALIAS_LABEL = {k: label for label, keys in ALIASES.items() for k in keys}

#: Names of a frame's structure, which the key map cannot produce.
STRUCTURE_KEYS = ("positions", "cell", "pbc", "numbers", "symbols", "elements", "species", "Lattice", "pos", "Z")

KNOWN_FIELDS = {
    "dataset", "name", "title", "description", "authors", "license", "licence", "links", "doi",
    "method", "sampling", "units", "key_map", "labels", "visibility", "files", "submitter",
    "groups", "embargo_until", "owner",
}


def _access(raw: dict[str, Any], source: str, visibility: str) -> tuple[list[str], str]:
    """``groups`` (a list of names) and ``embargo_until`` (a date; required when embargoed)."""
    import datetime as _dt

    groups = raw.get("groups") or []
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise _err(source, "groups", "expected a list of group names")
    until = raw.get("embargo_until")
    if isinstance(until, (_dt.date, _dt.datetime)):
        until = until.isoformat()[:10]
    if until in (None, ""):
        if visibility == "embargoed":
            raise _err(source, "embargo_until", "an embargoed dataset needs the date it turns public (YYYY-MM-DD)")
        return groups, ""
    try:
        _dt.date.fromisoformat(str(until))
    except ValueError:
        raise _err(source, "embargo_until", f"{until!r} is not a date (YYYY-MM-DD)") from None
    return groups, str(until)


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
    groups: list[str] = field(default_factory=list)  # who besides the owner sees a private dataset
    embargo_until: str = ""  # YYYY-MM-DD: an embargoed dataset turns public on that date
    files: list[FileEntry] = field(default_factory=list)
    submitter: str = ""
    owner: str = ""  # the account that owns a new dataset (set by the API from the token, never by hand)
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


def _what(value: Any) -> str:
    """What a value is, for a message, with what YAML made of it."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, (_dt.date, _dt.datetime)):
        return f"a date ({value.isoformat()})"
    if isinstance(value, str):
        return f"text ({value[:40]!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, bytes):
        return "binary data"
    return "null" if value is None else type(value).__name__


def _hint(value: Any) -> str:
    if isinstance(value, (bool, int, float, _dt.date)):
        return "; YAML reads it so when unquoted: put it in quotes"
    return ""


def _text(raw: Any, source: str, key: str) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise _err(source, key, f"expected text, got {_what(raw)}{_hint(raw)}")
    return raw


def _str_list(raw: Any, source: str, key: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list):
        raise _err(source, key, f"expected text or a list of text, got {_what(raw)}")
    odd = next((x for x in raw if not isinstance(x, str)), None)
    if odd is not None or None in raw:
        raise _err(source, key, f"expected a list of text, but one entry is {_what(odd)}{_hint(odd)}")
    return list(raw)


def _json_value(raw: Any, source: str, key: str) -> Any:
    """``raw`` if it is plain JSON (text keys, finite numbers, integers within MAX_INT_DIGITS)."""
    stack = [(raw, key)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise _err(source, where, f"key {k!r} is {_what(k)}; keys must be text{_hint(k)}")
                stack.append((v, f"{where}.{k}"))
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        elif isinstance(value, int):
            if abs(value) >= 10 ** MAX_INT_DIGITS:
                raise _err(source, where, f"an integer of more than {MAX_INT_DIGITS} digits (MAX_INT_DIGITS)")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _err(source, where, f"{value} is not a finite number")
        else:
            raise _err(source, where, f"{_what(value)} cannot be stored as JSON{_hint(value)}")
    return raw


def _units(raw: Any, source: str) -> Units:
    if raw is None:
        return Units()
    if not isinstance(raw, dict):
        raise _err(source, "units", f"expected a mapping such as {{energy: eV, length: Angstrom}}, got {_what(raw)}")
    unknown = set(raw) - {"energy", "length", "forces", "stress", "stress_convention"}
    if unknown:
        raise _err(source, "units", f"unknown entries {sorted(map(str, unknown))}")
    odd = next((k for k, v in raw.items() if not isinstance(v, str)), None)
    if odd is not None:
        raise _err(source, "units", f"{odd}: expected a unit name such as eV, got {_what(raw[odd])}")
    u = Units(**raw, declared=True)
    try:
        u.factors()
    except units.UnitError as e:
        raise _err(source, "units", str(e)) from None
    return u


def _addressable(name: str) -> str | None:
    if not name:
        return "an empty key"
    if "\x00" in name:
        return f"the key {name!r}, which holds a NUL byte"
    return None


def _close_label(target: str) -> str | None:
    """The label a key-map target was probably meant to be: a case slip, an alias, a typo."""
    low = target.lower()
    for name, label in [(x, x) for x in LABELS] + list(_ALIAS_LABEL.items()):
        if name.lower() == low:
            return label
    guess = difflib.get_close_matches(low, list(LABELS), n=1, cutoff=0.8)  # not free_energy -> energy
    return guess[0] if guess else None


def _key_map(raw: Any, source: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _err(source, "key_map", f"expected a mapping of input key -> lake key, e.g. {{force: forces}}, "
                                      f"got {_what(raw)}")
    labels = ", ".join(LABELS)
    for src, dst in raw.items():
        if not isinstance(src, str) or not isinstance(dst, str):
            raise _err(source, "key_map", f"entry {src!r}: {dst!r}: expected input key -> lake key, both text")
        bad = _addressable(src) or _addressable(dst)
        if bad is not None:
            raise _err(source, "key_map", f"entry {src!r}: {dst!r} names {bad}")
        if dst in LABELS or dst in _ALIAS_LABEL:
            continue
        if dst in STRUCTURE_KEYS:
            raise _err(source, "key_map", f"key_map target {dst!r} is a structure field; the key map renames "
                                          f"labels ({labels}) and user keys")
        guess = _close_label(dst)
        if guess is not None:
            raise _err(source, "key_map", f"key_map target {dst!r} is not a canonical key; did you mean {guess!r}? "
                                          f"Valid targets: the labels {labels}, or a new name for a user key "
                                          "that is not a label's")
    return dict(raw)


def _files(raw: Any, source: str) -> list[FileEntry]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _err(source, "files", f"expected a list of paths or {{path: ..., format: ..., info: {{...}}}}, "
                                    f"got {_what(raw)}")
    out = []
    for i, item in enumerate(raw):
        key = f"files[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict) or "path" not in item:
            raise _err(source, key, "expected a path or {path: ..., format: ..., info: {...}}")
        unknown = set(item) - {"path", "format", "info"}
        if unknown:
            raise _err(source, key, f"unknown entries {sorted(map(str, unknown))}")
        path = _text(item["path"], source, f"{key}.path")
        fmt = _text(item.get("format"), source, f"{key}.format") or None
        info = {} if item.get("info") is None else item["info"]
        if not isinstance(info, dict):
            raise _err(source, f"{key}.info", f"expected a mapping, got {_what(info)}")
        _json_value(info, source, f"{key}.info")
        bad = next((b for b in map(_addressable, info) if b), None)
        if bad is not None:
            raise _err(source, f"{key}.info", f"{bad} could not be addressed in a query")
        out.append(FileEntry(path, fmt, dict(info)))
    return out


def _sampling(raw: Any, source: str) -> Any:
    """Text, a list of text, or a mapping (how exports and generated deposits describe their origin)."""
    if raw is None or isinstance(raw, str):
        return raw or ""
    if isinstance(raw, dict):
        _json_value(raw, source, "sampling")
        return raw
    return _str_list(raw, source, "sampling")


def _json_size(raw: Any, source: str) -> None:
    """Refuse a manifest past MAX_MANIFEST_SIZE bytes of JSON or MAX_MANIFEST_DEPTH levels.

    Walked without recursion and stopped at the limit, so a YAML alias graph that would expand
    to gigabytes (or a dict that contains itself) costs no more than the limit to refuse.
    """
    size, stack = 0, [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            size += 2 + sum(len(k) + 4 if isinstance(k, str) else 8 for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            size += 2 + len(value)
            stack.extend((v, depth + 1) for v in value)
        else:
            size += len(value) + 2 if isinstance(value, (str, bytes)) else 8
        if depth > MAX_MANIFEST_DEPTH:
            raise ManifestError(f"manifest {source}: nested more than {MAX_MANIFEST_DEPTH} levels deep "
                                "(MAX_MANIFEST_DEPTH)")
        if size > MAX_MANIFEST_SIZE:
            raise ManifestError(f"manifest {source}: more than {MAX_MANIFEST_SIZE:,} bytes once parsed "
                                "(MAX_MANIFEST_SIZE); YAML aliases (*name) expand to copies")


def parse_manifest(raw: dict[str, Any], source: str = "<arguments>", dataset: str | None = None) -> Manifest:
    """Validate a manifest mapping; ``dataset`` (e.g. from the command line) overrides it."""
    if not isinstance(raw, dict):
        raise ManifestError(f"manifest {source}: expected a mapping at the top level, got {_what(raw)}")
    _json_size(raw, source)
    odd = next((k for k in raw if not isinstance(k, str)), None)
    if odd is not None:
        raise ManifestError(f"manifest {source}: field {odd!r} is {_what(odd)}; field names are text")
    name = dataset or raw.get("dataset") or raw.get("name")
    if not name:
        raise _err(source, "dataset", "missing: give the dataset name in the manifest or with --dataset")
    if dataset and raw.get("dataset") and raw["dataset"] != dataset:
        raise _err(source, "dataset", f"says {raw['dataset']!r} but the deposit was made to {dataset!r}")
    if not isinstance(name, str) or not DATASET_NAME.match(name):
        raise _err(source, "dataset", f"{name!r} is not a valid name (letters, digits, '_', '.', '-'; up to 128)")
    labels = _str_list(raw.get("labels"), source, "labels")
    bad = [x for x in labels if x not in LABELS]
    if bad:
        raise _err(source, "labels", f"unknown labels {bad}; known: {sorted(LABELS)}")
    visibility = raw.get("visibility", "public")
    if visibility not in VISIBILITY:
        raise _err(source, "visibility", f"{visibility!r} is not one of {VISIBILITY}")
    groups, embargo_until = _access(raw, source, visibility)
    method = {} if raw.get("method") is None else raw["method"]
    if not isinstance(method, dict):
        raise _err(source, "method", f"expected a mapping: {{code, functional, basis, settings}}, got {_what(method)}")
    _json_value(method, source, "method")
    extra = {k: _json_value(v, source, k) for k, v in raw.items() if k not in KNOWN_FIELDS}
    return Manifest(
        dataset=name,
        title=_text(raw.get("title"), source, "title"),
        description=_text(raw.get("description"), source, "description"),
        authors=_str_list(raw.get("authors"), source, "authors"),
        license=_text(raw["license"] if "license" in raw else raw.get("licence"), source, "license"),
        links=_str_list(raw.get("links"), source, "links"),
        doi=_text(raw.get("doi"), source, "doi"),
        method=method,
        sampling=_sampling(raw.get("sampling"), source),
        units=_units(raw.get("units"), source),
        key_map=_key_map(raw.get("key_map"), source),
        labels=labels,
        visibility=visibility,
        groups=groups,
        embargo_until=embargo_until,
        files=_files(raw.get("files"), source),
        submitter=_text(raw.get("submitter"), source, "submitter"),
        owner=_text(raw.get("owner"), source, "owner"),
        source=source,
        extra=extra,
    )


def unused_key_map(manifest: Manifest, usage: dict[str, int]) -> list[str]:
    """Warnings, one per ``key_map`` entry that no frame of a deposit used.

    ``usage`` counts ``"source->target"`` per frame, as normalisation fills it (the deposit
    report's ``key_mapping``): every label picked up and every key renamed.
    """
    used = {k.split("->", 1)[0] for k, n in usage.items() if n}
    out = []
    for src, dst in manifest.key_map.items():
        if src in used:
            continue
        first = f", or another key for {dst!r} came first" if dst in LABELS else ""
        out.append(f"key_map entry {src!r}: {dst!r} was used by no frame (none had a key {src!r}{first})")
    return out


class _Refused(Exception):
    """A YAML document refused while it is composed, before anything is expanded."""


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, counting aliases and nesting as it composes and refusing duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise _Refused(f"more than {MAX_YAML_ALIASES} YAML aliases (*name; MAX_YAML_ALIASES): "
                               f"each expands to a copy; write the values out")
        self.depth += 1
        try:
            if self.depth > MAX_MANIFEST_DEPTH:
                raise _Refused(f"nested more than {MAX_MANIFEST_DEPTH} levels deep (MAX_MANIFEST_DEPTH)")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        keys = Counter(k.value for k, _ in node.value
                       if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge")
        twice = [k for k, n in keys.items() if n > 1]
        if twice:
            raise _Refused(f"key {twice[0]!r} appears twice in the mapping at line {node.start_mark.line + 1}; "
                           "YAML would keep the last silently")
        return super().construct_mapping(node, deep)


def load_manifest(path: str | Path, dataset: str | None = None) -> Manifest:
    """Read a YAML or JSON manifest file (YAML is a superset of JSON), at most MAX_MANIFEST_BYTES."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)  # no more than the limit is ever read
    except FileNotFoundError:
        raise ManifestError(f"manifest {p}: file not found") from None
    except IsADirectoryError:
        raise ManifestError(f"manifest {p}: a directory, not a file") from None
    return manifest_from_bytes(data, str(p), dataset)


def manifest_from_bytes(data: bytes, source: str, dataset: str | None = None) -> Manifest:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest {source}: larger than {MAX_MANIFEST_BYTES:,} bytes (MAX_MANIFEST_BYTES)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"manifest {source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        raw = yaml.load(text, Loader=_Loader) if text.strip() else None  # noqa: S506 (a SafeLoader)
    except _Refused as e:
        raise ManifestError(f"manifest {source}: {e}") from None
    except yaml.YAMLError as e:
        raise ManifestError(f"manifest {source}: not valid YAML/JSON: {e}") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of over 4300 digits
        raise ManifestError(f"manifest {source}: not valid YAML/JSON: {e.__class__.__name__}: {e}") from None
    if raw is None:
        raise ManifestError(f"manifest {source}: empty")
    return parse_manifest(raw, source=source, dataset=dataset)
