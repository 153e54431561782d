"""Error metrics for MLIP benchmarks: regression, per-element forces, per-pair energies and
Matbench-Discovery stability classification.

Everything here is plain numpy on purpose: the module is imported by the library and the CLI,
so it must not pull pandas or scikit-learn at import time. Every function returns plain Python
``int``/``float`` values (never numpy scalars), so results serialise straight to JSON/YAML.

Conventions
-----------
* NaN marks a missing value (a frame the model failed on, a DFT label that does not exist).
  ``regression`` drops pairs where either side is NaN and reports how many as ``missing``;
  ±inf is *not* dropped, so a diverged prediction shows up as an infinite error instead of
  vanishing from the score.
* A metric whose denominator is empty (MAE of zero pairs, precision with no predicted
  positives, ...) is ``nan``. Nothing raises and nothing warns for degenerate inputs: benchmark
  loops over many small subsets and one empty subset must not kill the report.
* R² follows scikit-learn's ``r2_score`` (``force_finite=True``), because that is what
  Matbench Discovery (and most papers) report: ``nan`` for fewer than two samples, and for a
  constant reference 1.0 if the prediction is exact, else 0.0.
* Forces are scored per Cartesian component, as MACE reports them (``rmse_f`` in its logs):
  RMSE = sqrt(mean over atoms and x/y/z of (F_pred - F_ref)²). That is the vector-norm RMSE
  divided by sqrt(3), so numbers are comparable with the MACE papers and training logs.

``stability`` and Matbench Discovery
------------------------------------
``stability`` re-implements ``matbench_discovery.metrics.stable_metrics`` (MIT licence, by
Janosh Riebesell) without importing it; it returns the same 16 keys in the same order. It is
tested key by key against **matbench-discovery 1.3.1** (the latest release on PyPI).

* A material is stable when its energy above hull is ``<= stability_threshold`` (ties on the
  threshold count as stable), for both the DFT label and the prediction.
* ``fillna=True``: a NaN *prediction* counts as "predicted unstable" (so it lands in FN or TN),
  which punishes a model for the structures it failed on. ``fillna=False``: that row is left
  out of TP/FP/TN/FN. A NaN *label* is left out of the classification either way.
* Prevalence is ``(TP + FN) / (TP + FN + FP + TN)`` and ``DAF = Precision / prevalence``
  (the discovery acceleration factor: how much better than picking materials at random).
* MAE, RMSE and R² are over the rows where both label and prediction are present, whatever
  ``fillna`` says.

Where the versions differ, mliplake follows the behaviour of Matbench Discovery's main branch
(``matbench_discovery/metrics/discovery.py``, after 1.3.1), which fixes two things in 1.3.1:

* ``Accuracy`` here is ``(TP + TN) / (TP + FN + FP + TN)``. 1.3.1 divides by the number of rows
  where both values are present, which differs as soon as ``fillna=True`` meets a NaN
  prediction (it can then exceed 1). The tests check ``ours == ref * n_pairs / n_classified``.
* When a class is absent (no stable labels, no unstable labels, a single material) the
  undefined ratios are ``nan``; 1.3.1 raises (``ValueError`` from its TPR + FNR == 1 sanity
  check, or ``ZeroDivisionError`` for pandas input).

Older releases differ further: up to 1.0.0 there was no ``fillna`` (NaN predictions were always
left out) and prevalence was divided by all rows including NaN ones. The PyPI
``matbench-discovery`` 1.3.1 wheel only counts as a test reference; its package ``__init__``
imports plotly/pymatviz/wandb, so the tests load its ``metrics.py`` on its own.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations

import numpy as np
from ase.data import atomic_numbers, chemical_symbols
from numpy.typing import ArrayLike

__all__ = ["per_element_force_errors", "per_pair_energy_errors", "regression", "stability"]

NAN = float("nan")


def _as_float(x: ArrayLike) -> np.ndarray:
    # float64 always: float32 model outputs would otherwise lose digits in the sums below.
    return np.asarray(x, dtype=np.float64)


def _ratio(num: float, den: float) -> float:
    # An empty denominator means "undefined", not an error (see the module docstring).
    return float(num / den) if den else NAN


def _mae_rmse(err: np.ndarray) -> tuple[float, float]:
    if err.size == 0:
        return NAN, NAN
    return float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err * err)))


def _r2(pred: np.ndarray, ref: np.ndarray) -> float:
    """R² with scikit-learn's ``r2_score`` conventions (``force_finite=True``)."""
    if ref.size < 2:
        return NAN
    ss_res = float(np.sum((ref - pred) ** 2))
    ss_tot = float(np.sum((ref - np.mean(ref)) ** 2))
    if ss_tot == 0.0:
        # A constant reference has no variance to explain: sklearn calls an exact prediction
        # perfect (1) and anything else no better than the mean (0), rather than -inf or nan.
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def regression(pred: ArrayLike, ref: ArrayLike) -> dict[str, float | int]:
    """Regression errors of ``pred`` against ``ref`` (any shape, the same for both; flattened).

    Returns ``n`` (pairs scored), ``missing`` (pairs dropped because either side is NaN),
    ``mae``, ``rmse``, ``r2``, ``max_abs_error`` and ``mean_error`` (the bias, mean of
    ``pred - ref``: positive means the model over-predicts). Errors are ``nan`` when ``n == 0``.
    """
    p, r = _as_float(pred), _as_float(ref)
    if p.shape != r.shape:
        raise ValueError(f"pred has shape {p.shape} but ref has {r.shape}")
    p, r = p.ravel(), r.ravel()
    keep = ~(np.isnan(p) | np.isnan(r))
    p, r = p[keep], r[keep]
    err = p - r
    mae, rmse = _mae_rmse(err)
    n = int(err.size)
    return {
        "n": n,
        "missing": int(keep.size - n),
        "mae": mae,
        "rmse": rmse,
        "r2": _r2(p, r),
        "max_abs_error": float(np.max(np.abs(err))) if n else NAN,
        "mean_error": float(np.mean(err)) if n else NAN,
    }


def _atomic_numbers(numbers: ArrayLike) -> np.ndarray:
    z = np.asarray(numbers)
    if z.size == 0:  # np.asarray([]) is float64; an empty frame list is still valid input
        z = z.astype(np.int64)
    if z.ndim != 1 or not np.issubdtype(z.dtype, np.integer):
        raise ValueError("numbers must be a 1-D array of integer atomic numbers")
    if z.size and (z.min() < 1 or z.max() >= len(chemical_symbols)):
        raise ValueError(f"atomic numbers must lie in 1..{len(chemical_symbols) - 1}")
    return z


def per_element_force_errors(numbers: ArrayLike, pred_forces: ArrayLike,
                             ref_forces: ArrayLike) -> dict[str, dict[str, float | int]]:
    """Force errors per element over flat per-atom arrays: ``numbers`` (N,), forces (N, 3).

    Errors are per Cartesian component (MACE's convention, see the module docstring): ``mae``
    and ``rmse`` average over the 3·n components of the element's atoms, and ``n`` counts atoms.
    An atom with a NaN component in either array is left out. Keys are chemical symbols in
    order of atomic number; elements with no scored atom are absent.
    """
    z = _atomic_numbers(numbers)
    fp, fr = _as_float(pred_forces), _as_float(ref_forces)
    if fp.shape != (z.size, 3) or fr.shape != (z.size, 3):
        raise ValueError(f"forces must have shape ({z.size}, 3); got {fp.shape} and {fr.shape}")
    # Drop whole atoms rather than single components so that n stays a count of atoms.
    keep = ~(np.isnan(fp).any(axis=1) | np.isnan(fr).any(axis=1))
    z, err = z[keep], (fp - fr)[keep]
    out: dict[str, dict[str, float | int]] = {}
    for el in np.unique(z):  # sorted, so the dict comes out in order of atomic number
        e = err[z == el]
        mae, rmse = _mae_rmse(e)
        out[chemical_symbols[el]] = {"n": int(e.shape[0]), "mae": mae, "rmse": rmse}
    return out


def _symbol(el: str | int) -> str:
    # Frames may come as symbols (from the lake's `elements` column) or as atomic numbers.
    if isinstance(el, (int, np.integer)):
        if not 1 <= el < len(chemical_symbols):
            raise ValueError(f"unknown atomic number {el}")
        return chemical_symbols[int(el)]
    if el not in atomic_numbers or el == "X":
        raise ValueError(f"unknown element symbol {el!r}")
    return el


def per_pair_energy_errors(elements_per_frame: Sequence[Iterable[str | int]],
                           pred_energy_per_atom: ArrayLike,
                           ref_energy_per_atom: ArrayLike) -> dict[str, dict[str, float | int]]:
    """Per-atom energy errors broken down by the element pairs each frame contains.

    A frame with elements {A, B, C} contributes its error once to each of "A-B", "A-C" and
    "B-C"; a single-element frame contributes to "A-A". Pairs are written in alphabetical
    order (pymatgen's chemical-system convention, "Fe-O" not "O-Fe") and the dict is sorted by
    key. ``n`` counts frames. Frames whose predicted or reference energy is NaN are left out;
    a frame with no elements is an error.
    """
    p, r = _as_float(pred_energy_per_atom), _as_float(ref_energy_per_atom)
    if p.ndim != 1 or p.shape != r.shape or p.size != len(elements_per_frame):
        raise ValueError(f"need one energy per frame: {len(elements_per_frame)} frames, "
                         f"pred {p.shape}, ref {r.shape}")
    err = p - r
    by_pair: dict[str, list[float]] = {}
    for elements, e in zip(elements_per_frame, err, strict=True):
        syms = sorted({_symbol(el) for el in elements})
        if not syms:
            raise ValueError("a frame has no elements")
        if np.isnan(e):
            continue
        pairs = [f"{a}-{b}" for a, b in combinations(syms, 2)] if len(syms) > 1 \
            else [f"{syms[0]}-{syms[0]}"]
        for pair in pairs:
            by_pair.setdefault(pair, []).append(float(e))
    out: dict[str, dict[str, float | int]] = {}
    for pair in sorted(by_pair):
        e = np.asarray(by_pair[pair])
        mae, rmse = _mae_rmse(e)
        out[pair] = {"n": int(e.size), "mae": mae, "rmse": rmse}
    return out


def stability(e_above_hull_pred: ArrayLike, e_above_hull_true: ArrayLike,
              stability_threshold: float = 0.0, fillna: bool = True) -> dict[str, float | int]:
    """Matbench-Discovery stability metrics for predicted vs DFT energies above hull (eV/atom).

    Returns, in Matbench Discovery's order: ``F1``, ``DAF``, ``Precision``, ``Recall``,
    ``Accuracy``, ``TPR``, ``FPR``, ``TNR``, ``FNR``, ``TP``, ``FP``, ``TN``, ``FN`` (ints),
    ``MAE``, ``RMSE``, ``R2``. "Positive" means stable: ``e_above_hull <= stability_threshold``.
    See the module docstring for NaN handling and where this differs from matbench-discovery
    1.3.1. Note the argument order: prediction first, like the rest of this module (the
    reference takes the true values first).
    """
    pred, true = _as_float(e_above_hull_pred).ravel(), _as_float(e_above_hull_true).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"{pred.size} predictions but {true.size} true values")
    thr = float(stability_threshold)
    if not np.isfinite(thr):
        raise ValueError("stability_threshold must be a finite number")

    # Comparisons with NaN are False, so a NaN lands in neither class unless filled below.
    actual_pos, actual_neg = true <= thr, true > thr
    model_pos, model_neg = pred <= thr, pred > thr
    if fillna:
        missing = np.isnan(pred)
        model_pos = model_pos & ~missing
        model_neg = model_neg | missing

    tp = int(np.count_nonzero(actual_pos & model_pos))
    fn = int(np.count_nonzero(actual_pos & model_neg))
    fp = int(np.count_nonzero(actual_neg & model_pos))
    tn = int(np.count_nonzero(actual_neg & model_neg))
    n_pos, n_neg = tp + fn, tn + fp
    n_classified = n_pos + n_neg

    prevalence = _ratio(n_pos, n_classified)  # hit rate of picking materials at random
    precision = _ratio(tp, tp + fp)  # the model's hit rate
    recall = _ratio(tp, n_pos)
    # precision + recall is nan when either is, and the nan propagates, as intended
    f1 = _ratio(2 * precision * recall, precision + recall)
    daf = _ratio(precision, prevalence)

    both = ~(np.isnan(pred) | np.isnan(true))
    p, t = pred[both], true[both]
    mae, rmse = _mae_rmse(t - p)
    return {
        "F1": f1,
        "DAF": daf,
        "Precision": precision,
        "Recall": recall,
        "Accuracy": _ratio(tp + tn, n_classified),
        "TPR": recall,
        "FPR": _ratio(fp, n_neg),
        "TNR": _ratio(tn, n_neg),
        "FNR": _ratio(fn, n_pos),
        "TP": tp,
        "FP": fp,
        "TN": tn,
        "FN": fn,
        "MAE": mae,
        "RMSE": rmse,
        "R2": _r2(p, t),
    }
