"""Composition-derived columns (OPTIMADE conventions), computed once per distinct composition."""
from __future__ import annotations

import string
from math import gcd

import numpy as np
from ase.data import chemical_symbols

MAX_Z = 118
SYMBOLS = np.array(chemical_symbols)  # index = Z; 0 is 'X'
Z_OF = {s: z for z, s in enumerate(chemical_symbols) if z > 0}


def element_mask(z: int) -> tuple[int, int]:
    """The (lo, hi) uint64 bit pair for one element: bit Z of a 128-bit mask."""
    return (1 << z, 0) if z < 64 else (0, 1 << (z - 64))


def _anonymous_names() -> list[str]:
    # OPTIMADE: A, B, ..., Z, Aa, Ba, ..., Za, Ab, ...
    up, low = string.ascii_uppercase, string.ascii_lowercase
    return list(up) + [u + l for l in low for u in up]


ANON = _anonymous_names()


def _fmt(sym: str, n: int) -> str:
    return sym if n == 1 else f"{sym}{n}"


# Z in alphabetical order of their symbols (OPTIMADE orders elements alphabetically)
_ALPHA = np.array(sorted(range(1, MAX_Z + 1), key=lambda z: chemical_symbols[z]))
_ALPHA_SYMBOLS = [chemical_symbols[z] for z in _ALPHA]
_POW2 = np.array([1 << z for z in range(64)], dtype=np.uint64)

_CACHE: dict[bytes, dict[str, object]] = {}
_CACHE_MAX = 200_000


def compositions(counts: np.ndarray) -> list[dict[str, object]]:
    """Composition columns for each row of a (frames, MAX_Z + 1) count matrix; repeated rows are
    computed once (datasets repeat compositions: MD runs, relaxations, strain series)."""
    counts = np.ascontiguousarray(counts, dtype=np.uint32)
    alpha = counts[:, _ALPHA]
    out: list[dict[str, object]] = []
    for i in range(len(counts)):
        key = counts[i].tobytes()
        hit = _CACHE.get(key)
        if hit is None:
            nz = np.flatnonzero(alpha[i])
            hit = _columns([_ALPHA_SYMBOLS[j] for j in nz], alpha[i, nz].tolist(), _ALPHA[nz].tolist())
            if len(_CACHE) >= _CACHE_MAX:
                _CACHE.clear()
            _CACHE[key] = hit
        out.append(hit)
    return out


def _columns(elements: list[str], ns: list[int], zs: list[int]) -> dict[str, object]:
    total = sum(ns)
    g = gcd(*ns) if ns else 1
    reduced = "".join(e if n == g else f"{e}{n // g}" for e, n in zip(elements, ns))
    by_sym = dict(zip(elements, ns))
    if "C" in by_sym:
        hill_order = ["C"] + (["H"] if "H" in by_sym else []) + [e for e in elements if e not in ("C", "H")]
    else:
        hill_order = elements
    hill = "".join(_fmt(e, by_sym[e]) for e in hill_order)
    anonymous = "".join(_fmt(ANON[i], n // g) for i, n in enumerate(sorted(ns, reverse=True)))
    lo = hi = 0
    for z in zs:
        if z < 64:
            lo |= 1 << z
        else:
            hi |= 1 << (z - 64)
    return {
        "elements": elements,
        "nelements": len(elements),
        "elements_ratios": [n / total for n in ns],
        "chemical_formula_reduced": reduced,
        "chemical_formula_hill": hill,
        "chemical_formula_anonymous": anonymous,
        "element_mask_lo": lo,
        "element_mask_hi": hi,
    }
