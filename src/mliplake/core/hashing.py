"""Content hashes: ``structure_hash`` and ``config_id`` over documented canonical byte streams.

Version 1 (``hash_version = 1``), all integers little-endian; see docs/schema.md:

structure stream::

    b"mliplake/structure/v1\\n"
    b"numbers=" uint32(n) uint8[n]            atomic numbers, in file order
    b"positions=" int64[n*3]                  round(x / 1e-6 Å), row-major
    b"cell=" int64[9]                         round(x / 1e-6 Å), rows; rows along
                                              non-periodic directions are zeroed
    b"pbc=" uint8[3]

config stream::

    b"mliplake/config/v1\\n"
    b"structure=" structure_hash (hex, 32 chars)
    for each label in (energy, forces, stress, virial, charges, magmoms, dipole):
        b"<label>=" b"-" if absent, else b"+" uint32(count) int64[count]  round(x / q)
    b"method=" canonical JSON of the manifest's method (sorted keys, no spaces)

Quanta ``q``: energy and virial 1e-6 eV, forces 1e-6 eV/Å, stress 1e-9 eV/Å³,
charges 1e-6 e, magmoms 1e-6 μB, dipole 1e-6 e·Å.  Each field is written as
``key=value`` with an explicit absent marker, so a missing label never collides
with an empty one.  Values are in the lake's units, after conversion.
Ids are the first 32 hex digits (128 bits) of the SHA-256 digests.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from mliplake.core.schema import HASH_VERSION

ID_HEX = 32
LENGTH_Q = 1e-6
LABEL_Q: dict[str, float] = {
    "energy": 1e-6,
    "forces": 1e-6,
    "stress": 1e-9,
    "virial": 1e-6,
    "charges": 1e-6,
    "magmoms": 1e-6,
    "dipole": 1e-6,
}
_S_HEAD = b"mliplake/structure/v%d\n" % HASH_VERSION
_C_HEAD = b"mliplake/config/v%d\n" % HASH_VERSION


def quantise(x: np.ndarray, q: float) -> np.ndarray:
    # rint of x/q is exact IEEE arithmetic: identical on every machine; +0 folds -0.
    return np.rint(np.asarray(x, dtype=np.float64) / q).astype("<i8")


def method_bytes(method: dict[str, Any]) -> bytes:
    return json.dumps(method, sort_keys=True, separators=(",", ":"), default=str).encode()


def structure_hashes(
    numbers: np.ndarray, positions: np.ndarray, offsets: np.ndarray, cells: np.ndarray, pbcs: np.ndarray
) -> list[str]:
    """Hashes of a batch: flat ``numbers`` (uint8), flat (N, 3) ``positions``, per-frame offsets."""
    qpos = quantise(positions, LENGTH_Q)
    cells = np.where(pbcs[:, :, None], cells.reshape(-1, 3, 3), 0.0)
    qcell = quantise(cells, LENGTH_Q).reshape(-1, 9)
    nums = numbers.astype("<u1")
    pbc_bytes = pbcs.astype("<u1")
    sha = hashlib.sha256
    out = []
    for i in range(len(offsets) - 1):
        a, b = offsets[i], offsets[i + 1]
        stream = b"".join((_S_HEAD, b"numbers=", int(b - a).to_bytes(4, "little"), nums[a:b].tobytes(),
                           b"positions=", qpos[a:b].tobytes(), b"cell=", qcell[i].tobytes(),
                           b"pbc=", pbc_bytes[i].tobytes()))
        out.append(sha(stream).hexdigest()[:ID_HEX])
    return out


def label_field(name: str, value: np.ndarray | float | None) -> bytes:
    if value is None:
        return name.encode() + b"=-"
    q = quantise(np.ravel(value), LABEL_Q[name])
    return name.encode() + b"=+" + len(q).to_bytes(4, "little") + q.tobytes()


def label_fields(name: str, values: np.ndarray, offsets: np.ndarray, present: np.ndarray) -> list[bytes]:
    """``label_field`` for a whole batch: rows ``offsets[i]:offsets[i+1]`` of ``values`` are frame i."""
    absent = name.encode() + b"=-"
    if not present.any():
        return [absent] * len(present)
    head = name.encode() + b"=+"
    values = np.where(np.isfinite(values), values, 0.0)  # rows of absent frames hold NaN; never hashed
    q = quantise(values, LABEL_Q[name]).reshape(len(values), -1) if len(values) else np.zeros((0, 1), "<i8")
    width = q.shape[1]
    out = []
    for i, p in enumerate(present):
        if p:
            rows = q[offsets[i]:offsets[i + 1]]
            out.append(head + (len(rows) * width).to_bytes(4, "little") + rows.tobytes())
        else:
            out.append(absent)
    return out


def config_id(structure_hash: str, label_fields: list[bytes], method: bytes) -> str:
    stream = b"".join((_C_HEAD, b"structure=", structure_hash.encode(), *label_fields, b"method=", method))
    return hashlib.sha256(stream).hexdigest()[:ID_HEX]
