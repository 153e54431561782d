"""Composition-derived columns (OPTIMADE conventions), computed once per distinct composition."""
from __future__ import annotations

import string
from functools import reduce
from math import gcd

import numpy as np
from ase.data import chemical_symbols

MAX_Z = 118
SYMBOLS = np.array(chemical_symbols)  # index = Z; 0 is 'X'
Z_OF = {s: z for z, s in enumerate(chemical_symbols) if z > 0}


def element_mask(z: int) -> tuple[int, int]:
    """The (lo, hi) uint64 bit pair for one element: bit Z of a 128-bit mask."""
    return (1 << z, 0) if z < 64 else (0, 1 << (z - 64))


def mask_of(elements: list[str]) -> tuple[int, int]:
    lo = hi = 0
    for e in elements:
        a, b = element_mask(Z_OF[e])
        lo |= a
        hi |= b
    return lo, hi


def _anonymous_names() -> list[str]:
    # OPTIMADE: A, B, ..., Z, Aa, Ba, ..., Za, Ab, ...
    up, low = string.ascii_uppercase, string.ascii_lowercase
    return list(up) + [u + l for l in low for u in up]


ANON = _anonymous_names()


def _fmt(sym: str, n: int) -> str:
    return sym if n == 1 else f"{sym}{n}"


_CACHE: dict[bytes, dict[str, object]] = {}
_CACHE_MAX = 200_000


def composition_of(counts: np.ndarray) -> dict[str, object]:
    """``composition_columns``, remembered: datasets repeat compositions (MD runs, relaxations)."""
    key = counts.tobytes()
    hit = _CACHE.get(key)
    if hit is None:
        hit = composition_columns(counts)
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[key] = hit
    return hit


def composition_columns(counts: np.ndarray) -> dict[str, object]:
    """Derived columns for one composition given as counts per Z (length MAX_Z + 1)."""
    zs = np.flatnonzero(counts)
    pairs = sorted((chemical_symbols[z], int(counts[z])) for z in zs)  # alphabetical, as OPTIMADE
    elements = [e for e, _ in pairs]
    n_sorted = [n for _, n in pairs]
    total = sum(n_sorted)
    g = reduce(gcd, n_sorted) if n_sorted else 1
    reduced = "".join(_fmt(e, n // g) for e, n in zip(elements, n_sorted))
    if "C" in elements:
        hill_order = ["C"] + (["H"] if "H" in elements else []) + [e for e in elements if e not in ("C", "H")]
    else:
        hill_order = elements
    by_sym = dict(zip(elements, n_sorted))
    hill = "".join(_fmt(e, by_sym[e]) for e in hill_order)
    anon_counts = sorted((n // g for n in n_sorted), reverse=True)
    anonymous = "".join(_fmt(ANON[i], n) for i, n in enumerate(anon_counts))
    lo = sum(1 << int(z) for z in zs if z < 64)
    hi = sum(1 << (int(z) - 64) for z in zs if z >= 64)
    return {
        "elements": elements,
        "nelements": len(elements),
        "elements_ratios": [n / total for n in n_sorted],
        "chemical_formula_reduced": reduced,
        "chemical_formula_hill": hill,
        "chemical_formula_anonymous": anonymous,
        "element_mask_lo": lo,
        "element_mask_hi": hi,
    }
