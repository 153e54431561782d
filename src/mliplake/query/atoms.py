"""Canonical rows back to ASE ``Atoms``: structure, labels on a SinglePointCalculator, every key."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa


def _restore(value: Any) -> Any:
    # ASE gives list-valued info (extxyz `_JSON`, arrays) back as numpy arrays; so do we.
    if isinstance(value, list) and value and all(isinstance(x, (int, float, bool, list)) for x in value):
        try:
            arr = np.array(value)
        except ValueError:
            return value
        return arr if arr.dtype != object else value
    return value


def _voigt(s: np.ndarray) -> np.ndarray:
    m = s.reshape(3, 3)
    return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])


def table_to_atoms(table: pa.Table, original_keys: bool = False) -> Iterator[Any]:
    """One ``Atoms`` per row.  ``original_keys``: labels go back under the deposit's own key names."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    cols = table.to_pydict()
    for i in range(table.num_rows):
        numbers = cols["numbers"][i]
        atoms = Atoms(
            numbers=numbers,
            positions=np.array(cols["positions"][i], dtype=float).reshape(-1, 3),
            cell=np.array(cols["cell"][i], dtype=float).reshape(3, 3),
            pbc=cols["pbc"][i],
        )
        info = json.loads(cols["info"][i] or "{}")
        atoms.info.update({k: _restore(v) for k, v in info.items()})
        for k, v in json.loads(cols["arrays"][i] or "{}").items():
            atoms.new_array(k, np.array(v))
        atoms.info["config_id"] = cols["config_id"][i]
        results: dict[str, Any] = {}
        if cols["energy"][i] is not None:
            results["energy"] = cols["energy"][i]
        if cols["forces"][i] is not None:
            results["forces"] = np.array(cols["forces"][i], dtype=float).reshape(-1, 3)
        if cols["stress"][i] is not None:
            results["stress"] = _voigt(np.array(cols["stress"][i]))
        for name in ("charges", "magmoms"):
            if cols[name][i] is not None:
                results[name] = np.array(cols[name][i], dtype=float)
        if cols["dipole"][i] is not None:
            results["dipole"] = np.array(cols["dipole"][i], dtype=float)
        if cols["virial"][i] is not None:
            atoms.info["virial"] = np.array(cols["virial"][i]).reshape(3, 3)
        if original_keys:
            keys = json.loads(cols["provenance"][i] or "{}").get("keys", {})
            back = {canon: orig for orig, canon in keys.items()}
            for name in list(results):
                if name in back and back[name] != name:
                    value = results.pop(name)
                    if name in ("forces", "charges", "magmoms"):
                        atoms.new_array(back[name], value)
                    else:
                        atoms.info[back[name]] = value
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        yield atoms


#: structure formats a configuration can be downloaded in: name -> (ASE format, media type, extension)
STRUCTURE_FORMATS = {
    "extxyz": ("extxyz", "text/plain", "xyz"),
    "cif": ("cif", "chemical/x-cif", "cif"),
    "poscar": ("vasp", "text/plain", "POSCAR"),
}


def structure_text(atoms: Any, fmt: str) -> str:
    """One structure as extxyz (labels kept), CIF or POSCAR text, written by ASE."""
    import io

    from ase.io import write

    if fmt not in STRUCTURE_FORMATS:
        raise ValueError(f"unknown structure format {fmt!r}: {', '.join(STRUCTURE_FORMATS)} or json")
    if fmt == "cif":
        if not atoms.pbc.all():
            atoms = atoms.copy()  # CIF describes crystals; a molecule is written in its box
            atoms.pbc = True
        raw = io.BytesIO()  # ASE's CIF writer wants a binary file
        write(raw, atoms, format="cif")
        return raw.getvalue().decode()
    buf = io.StringIO()
    write(buf, atoms, format=STRUCTURE_FORMATS[fmt][0])
    return buf.getvalue()


def read_structure(text: str, fmt: str | None = None, name: str = "structure") -> list[Any]:
    """Structures from POSCAR, extxyz or CIF text (``fmt`` None: guessed from the content)."""
    import io

    from ase.io import read

    fmts = [fmt] if fmt else _guess_formats(text)
    errors = []
    for f in fmts:
        try:
            got = read(io.StringIO(text), index=":", format={"poscar": "vasp"}.get(f, f))
            if got:
                return list(got)
        except Exception as e:  # noqa: BLE001 - ASE raises many kinds; the message lists each format's reason
            errors.append(f"{f}: {e}")
    raise ValueError(f"{name}: not a structure in {' or '.join(fmts)} ({'; '.join(errors)})")


def _guess_formats(text: str) -> list[str]:
    head = text.lstrip()[:2000].lower()
    if "_cell_length_a" in head or head.startswith("data_"):
        return ["cif"]
    first = head.split("\n", 1)[0].strip()
    if first.isdigit():
        return ["extxyz"]
    return ["poscar", "extxyz", "cif"]
