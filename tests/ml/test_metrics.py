"""mliplake.ml.metrics: stability() against Matbench Discovery's own stable_metrics (pinned 1.3.1),
and the regression/per-element/per-pair errors against values worked out by hand."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from pytest import approx

from mliplake.ml.metrics import per_element_force_errors, per_pair_energy_errors, regression, stability

MBD_VERSION = "1.3.1"  # the reference the stability tests pin; see the mliplake.ml.metrics docstring
KEYS = ["F1", "DAF", "Precision", "Recall", "Accuracy", "TPR", "FPR", "TNR", "FNR",
        "TP", "FP", "TN", "FN", "MAE", "RMSE", "R2"]
COUNTS = {"TP", "FP", "TN", "FN"}
REL = 1e-12


# --- the reference -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mbd() -> types.ModuleType:
    """matbench_discovery/metrics.py from the installed wheel, loaded on its own.

    The package's __init__ imports plotly, pymatviz (hence pymatgen, ipywidgets, ...) and
    creates folders inside site-packages; metrics.py itself needs only numpy, pandas and
    scikit-learn plus the constant STABILITY_THRESHOLD, so a stub parent package provides that.
    Install the reference with `pip install --no-deps matbench-discovery==1.3.1 scikit-learn`.
    """
    pytest.importorskip("pandas")
    pytest.importorskip("sklearn.metrics")
    try:
        version = importlib.metadata.version("matbench-discovery")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("matbench-discovery is not installed (test reference)")
    if version != MBD_VERSION:
        pytest.fail(f"tests pin matbench-discovery {MBD_VERSION}, found {version}: re-check the "
                    "conventions listed in mliplake.ml.metrics and update the pin")
    spec = importlib.util.find_spec("matbench_discovery")  # finds the package, does not run it
    path = Path(next(iter(spec.submodule_search_locations))) / "metrics.py"
    stub = types.ModuleType("matbench_discovery")
    stub.STABILITY_THRESHOLD = 0  # the value in 1.3.1's __init__; only used as a default
    stub.__path__ = []
    prev = sys.modules.get("matbench_discovery")
    sys.modules["matbench_discovery"] = stub
    try:
        mod_spec = importlib.util.spec_from_file_location("_mbd_reference_metrics", path)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
    finally:
        if prev is None:
            del sys.modules["matbench_discovery"]
        else:
            sys.modules["matbench_discovery"] = prev
    return mod


def reference(mbd, pred, true, thr=0.0, fillna=True) -> dict:
    with warnings.catch_warnings():  # 1.3.1 divides 0/0 in numpy and lets it warn
        warnings.simplefilter("ignore")
        return mbd.stable_metrics(true, pred, stability_threshold=thr, fillna=fillna)


def ours(pred, true, thr=0.0, fillna=True) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mliplake must stay quiet on degenerate input
        return stability(pred, true, stability_threshold=thr, fillna=fillna)


def ref_counts(mbd, pred, true, thr=0.0, fillna=True) -> dict:
    tp, fn, fp, tn = mbd.classify_stable(true, pred, stability_threshold=thr, fillna=fillna)
    return {"TP": int(np.sum(tp)), "FN": int(np.sum(fn)), "FP": int(np.sum(fp)), "TN": int(np.sum(tn))}


def same(a: float, b: float) -> bool:
    if math.isnan(b):
        return math.isnan(a)
    return a == approx(b, rel=REL)


def assert_matches(got: dict, want: dict, skip: tuple[str, ...] = ()) -> None:
    assert list(got) == KEYS == list(want)  # same keys in the same order
    for key in KEYS:
        if key in skip:
            continue
        if key in COUNTS:
            assert type(got[key]) is int and got[key] == int(want[key]), key
        else:
            assert type(got[key]) is float, key
            assert same(got[key], float(want[key])), (key, got[key], want[key])


def around(rng: np.random.Generator, n: int, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """Hull distances scattered around the threshold and predictions with noise on top."""
    true = thr + rng.normal(0.0, 0.1, n)
    pred = true + rng.normal(0.0, 0.05, n)
    return pred, true


# --- stability vs the reference ------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thr", [0.0, 0.05, -0.02])
@pytest.mark.parametrize("n", [5, 100, 2000])
def test_stability_random(mbd, seed, thr, n):
    rng = np.random.default_rng(seed)
    pred, true = around(rng, n, thr)
    got, want = ours(pred, true, thr), reference(mbd, pred, true, thr)
    if min(got["TP"] + got["FN"], got["TN"] + got["FP"]) == 0:
        pytest.skip("one class is empty for this draw")  # covered by the degenerate tests
    assert_matches(got, want)
    assert got["TP"] + got["FP"] + got["TN"] + got["FN"] == n


@pytest.mark.parametrize("fillna", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("nan_in", ["pred", "true", "both"])
def test_stability_nan(mbd, fillna, seed, nan_in):
    rng = np.random.default_rng(100 + seed)
    n, thr = 500, 0.0
    pred, true = around(rng, n, thr)
    if nan_in in ("pred", "both"):
        pred[rng.random(n) < 0.1] = np.nan
    if nan_in in ("true", "both"):
        true[rng.random(n) < 0.1] = np.nan
    got, want = ours(pred, true, thr, fillna), reference(mbd, pred, true, thr, fillna)
    assert_matches(got, want, skip=("Accuracy",))

    n_pairs = int(np.sum(~np.isnan(pred) & ~np.isnan(true)))
    n_classified = got["TP"] + got["FP"] + got["TN"] + got["FN"]
    # NaN labels are never classified; NaN predictions are "unstable" with fillna, else dropped
    assert n_classified == (int(np.sum(~np.isnan(true))) if fillna else n_pairs)
    # the documented deviation: 1.3.1 divides TP + TN by the rows with both values present
    assert got["Accuracy"] == approx((got["TP"] + got["TN"]) / n_classified, rel=REL)
    assert got["Accuracy"] == approx(want["Accuracy"] * n_pairs / n_classified, rel=REL)
    if not fillna or nan_in == "true":
        assert got["Accuracy"] == approx(want["Accuracy"], rel=REL)


def test_stability_nan_predictions_count_as_unstable():
    pred = np.array([np.nan, np.nan, -0.1, 0.2])
    true = np.array([-0.3, 0.4, -0.2, 0.1])
    filled, dropped = ours(pred, true, fillna=True), ours(pred, true, fillna=False)
    assert (filled["TP"], filled["FN"], filled["FP"], filled["TN"]) == (1, 1, 0, 2)
    assert (dropped["TP"], dropped["FN"], dropped["FP"], dropped["TN"]) == (1, 0, 0, 1)
    assert filled["Accuracy"] == 0.75 and dropped["Accuracy"] == 1.0
    assert filled["Recall"] == 0.5 and dropped["Recall"] == 1.0
    assert filled["DAF"] == 2.0  # precision 1 over prevalence 2/4
    for m in (filled, dropped):  # regression metrics use the two complete rows either way
        assert m["MAE"] == approx(0.1, rel=REL) and m["RMSE"] == approx(0.1, rel=REL)


@pytest.mark.parametrize("thr", [0.0, 0.05, -0.02])
def test_stability_ties_at_threshold(mbd, thr):
    rng = np.random.default_rng(7)
    pred, true = around(rng, 200, thr)
    true[::5] = thr  # exactly on the threshold: stable
    pred[::7] = thr
    pred[1::11] = np.nextafter(thr, np.inf)  # the smallest step above it: unstable
    got = ours(pred, true, thr)
    assert_matches(got, reference(mbd, pred, true, thr))
    assert got == ours(pred, true, thr)  # deterministic

    # by hand: <= is stable on both sides
    up = np.nextafter(thr, np.inf)
    m = ours([thr, up, thr, thr], [thr, thr, up, -1.0], thr)
    assert (m["TP"], m["FN"], m["FP"], m["TN"]) == (2, 1, 1, 0)
    assert_matches(m, reference(mbd, np.array([thr, up, thr, thr]), np.array([thr, thr, up, -1.0]), thr))


def test_stability_no_predicted_positives(mbd):
    rng = np.random.default_rng(3)
    _, true = around(rng, 50, 0.0)
    pred = np.abs(true) + 0.01  # model calls everything unstable
    got, want = ours(pred, true), reference(mbd, pred, true)
    assert_matches(got, want)  # 1.3.1 gives nan Precision/F1/DAF too
    assert got["TP"] == got["FP"] == 0
    assert math.isnan(got["Precision"]) and math.isnan(got["F1"]) and math.isnan(got["DAF"])
    assert got["Recall"] == 0.0 and got["FNR"] == 1.0 and got["TNR"] == 1.0


def test_stability_all_predicted_positive(mbd):
    rng = np.random.default_rng(4)
    _, true = around(rng, 50, 0.0)
    pred = -np.abs(true)  # model calls everything stable
    got = ours(pred, true)
    assert_matches(got, reference(mbd, pred, true))
    assert got["TN"] == got["FN"] == 0 and got["Recall"] == 1.0 and got["FPR"] == 1.0
    assert got["DAF"] == approx(1.0, rel=REL)  # no better than picking at random


def _by_hand(pred, true, thr=0.0) -> dict:
    """The definitions, spelled out with NaN for every empty denominator (no NaN inputs)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    tp = int(np.sum((true <= thr) & (pred <= thr)))
    fn = int(np.sum((true <= thr) & (pred > thr)))
    fp = int(np.sum((true > thr) & (pred <= thr)))
    tn = int(np.sum((true > thr) & (pred > thr)))
    div = lambda a, b: a / b if b else math.nan  # noqa: E731
    precision, recall, prevalence = div(tp, tp + fp), div(tp, tp + fn), div(tp + fn, len(true))
    err = true - pred
    return {
        "F1": div(2 * precision * recall, precision + recall), "DAF": div(precision, prevalence),
        "Precision": precision, "Recall": recall, "Accuracy": div(tp + tn, len(true)),
        "TPR": recall, "FPR": div(fp, fp + tn), "TNR": div(tn, fp + tn), "FNR": div(fn, tp + fn),
        "TP": tp, "FP": fp, "TN": tn, "FN": fn,
        "MAE": float(np.mean(np.abs(err))), "RMSE": float(np.sqrt(np.mean(err**2))),
        "R2": math.nan if len(true) < 2 else 1 - np.sum(err**2) / np.sum((true - true.mean()) ** 2),
    }


@pytest.mark.parametrize("case", ["no_positives", "all_positives"])
def test_stability_one_class_missing(mbd, case):
    rng = np.random.default_rng(5)
    pred, true = around(rng, 60, 0.0)
    true = np.abs(true) + 0.01 if case == "no_positives" else -np.abs(true)
    got = ours(pred, true)
    # 1.3.1 raises here (its TPR + FNR == 1 sanity check sees nan); mliplake returns nan
    with pytest.raises((ValueError, ZeroDivisionError)):
        reference(mbd, pred, true)
    counts = ref_counts(mbd, pred, true)  # classify_stable itself is fine with one class
    assert {k: got[k] for k in COUNTS} == counts
    assert_matches(got, _by_hand(pred, true))
    undefined = {"Recall", "TPR", "FNR", "F1", "DAF"} if case == "no_positives" else {"FPR", "TNR"}
    assert {k for k in KEYS if k not in COUNTS and math.isnan(got[k])} == undefined
    from sklearn.metrics import r2_score
    assert got["R2"] == approx(r2_score(true, pred), rel=REL)


@pytest.mark.parametrize(("pred", "true", "tp_fn_fp_tn"), [
    (-0.2, -0.1, (1, 0, 0, 0)), (0.3, -0.1, (0, 1, 0, 0)),
    (-0.2, 0.1, (0, 0, 1, 0)), (0.3, 0.1, (0, 0, 0, 1)), (0.0, 0.0, (1, 0, 0, 0))])
def test_stability_single_material(mbd, pred, true, tp_fn_fp_tn):
    got = ours([pred], [true])
    assert (got["TP"], got["FN"], got["FP"], got["TN"]) == tp_fn_fp_tn
    assert_matches(got, _by_hand([pred], [true]))
    assert math.isnan(got["R2"])  # sklearn: R2 is undefined for one sample
    assert got["MAE"] == got["RMSE"] == approx(abs(pred - true), rel=REL)
    with pytest.raises((ValueError, ZeroDivisionError)):  # one class is always missing
        reference(mbd, np.array([pred]), np.array([true]))


def test_stability_degenerate_inputs():
    m = ours([np.nan, np.nan], [0.1, -0.1])  # every prediction missing
    assert (m["TP"], m["FN"], m["FP"], m["TN"]) == (0, 1, 0, 1)
    assert m["Accuracy"] == 0.5 and m["Recall"] == 0.0
    assert all(math.isnan(m[k]) for k in ("Precision", "F1", "DAF", "MAE", "RMSE", "R2"))
    e = ours([], [])
    assert all(e[k] == 0 for k in COUNTS) and all(math.isnan(e[k]) for k in KEYS if k not in COUNTS)
    with pytest.raises(ValueError):
        stability([0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        stability([0.1], [0.1], stability_threshold=math.nan)


def test_stability_input_types(mbd):
    import pandas as pd

    rng = np.random.default_rng(9)
    pred, true = around(rng, 40, 0.0)
    pred[3] = np.nan
    want = ours(pred, true)
    assert ours(list(pred), list(true)) == approx(want, nan_ok=True)
    assert ours(pd.Series(pred), pd.Series(true)) == approx(want, nan_ok=True)
    assert ours(pred.astype(np.float32), true.astype(np.float32))["TP"] == want["TP"]
    # the reference with pandas input agrees too (its NaN fill also works on Series)
    assert_matches(want, reference(mbd, pd.Series(pred), pd.Series(true)), skip=("Accuracy",))


# --- regression ----------------------------------------------------------------------------------

def test_regression_by_hand():
    m = regression([1.0, 2.0, 3.0, np.nan], [1.5, 2.0, 2.0, 4.0])
    # errors pred - ref over the three complete pairs: -0.5, 0, 1
    assert m["n"] == 3 and m["missing"] == 1
    assert m["mae"] == approx(0.5, rel=REL)
    assert m["rmse"] == approx(math.sqrt(1.25 / 3), rel=REL)
    assert m["max_abs_error"] == 1.0
    assert m["mean_error"] == approx(1 / 6, rel=REL)
    # ref mean 11/6: SS_tot = 1/9 + 1/36 + 1/36 = 1/6, SS_res = 1.25, R2 = 1 - 7.5
    assert m["r2"] == approx(-6.5, rel=REL)
    assert list(m) == ["n", "missing", "mae", "rmse", "r2", "max_abs_error", "mean_error"]


def test_regression_edges():
    assert regression([1.0, 2.0], [1.0, 2.0])["r2"] == 1.0
    assert regression([3.0, 3.0], [3.0, 3.0])["r2"] == 1.0  # constant and exact (sklearn)
    assert regression([3.0, 4.0], [3.0, 3.0])["r2"] == 0.0  # constant and off (sklearn)
    one = regression([2.0], [1.5])
    assert one["n"] == 1 and one["mae"] == 0.5 and one["mean_error"] == 0.5 and math.isnan(one["r2"])
    none = regression([np.nan, 1.0], [1.0, np.nan])
    assert none["n"] == 0 and none["missing"] == 2
    assert all(math.isnan(none[k]) for k in ("mae", "rmse", "r2", "max_abs_error", "mean_error"))
    # 2-D input (forces) is flattened component by component
    f = regression([[1.0, 0.0, 0.0], [0.0, 0.0, -2.0]], np.zeros((2, 3)))
    assert f["n"] == 6 and f["mae"] == 0.5 and f["rmse"] == approx(math.sqrt(5 / 6), rel=REL)
    assert f["max_abs_error"] == 2.0 and f["mean_error"] == approx(-1 / 6, rel=REL)
    with pytest.raises(ValueError):
        regression([1.0, 2.0], [1.0])


def test_regression_r2_matches_sklearn():
    r2_score = pytest.importorskip("sklearn.metrics").r2_score
    rng = np.random.default_rng(11)
    ref = rng.normal(size=300)
    pred = ref + rng.normal(0, 0.3, size=300)
    assert regression(pred, ref)["r2"] == approx(r2_score(ref, pred), rel=REL)


# --- per-element forces --------------------------------------------------------------------------

def test_per_element_force_errors_by_hand():
    numbers = np.array([8, 1, 1, 6])  # water and a carbon whose prediction failed
    ref = np.zeros((4, 3))
    pred = np.array([[1.0, 0.0, 0.0],    # O: component errors 1, 0, 0
                     [0.0, 2.0, 0.0],    # H: 0, 2, 0
                     [0.0, 0.0, -1.0],   # H: 0, 0, -1
                     [np.nan, 0.0, 0.0]])
    m = per_element_force_errors(numbers, pred, ref)
    assert list(m) == ["H", "O"]  # by atomic number; C has no scored atom
    assert m["O"] == {"n": 1, "mae": approx(1 / 3, rel=REL), "rmse": approx(math.sqrt(1 / 3), rel=REL)}
    # H: six components 0, 2, 0, 0, 0, -1 -> MAE 3/6, RMSE sqrt(5/6); n counts atoms
    assert m["H"] == {"n": 2, "mae": approx(0.5, rel=REL), "rmse": approx(math.sqrt(5 / 6), rel=REL)}
    # per component, not per vector norm: a norm-based RMSE would be sqrt(5/2) for H
    assert m["H"]["rmse"] == approx(regression(pred[1:3], ref[1:3])["rmse"], rel=REL)


def test_per_element_force_errors_checks():
    assert per_element_force_errors([], np.zeros((0, 3)), np.zeros((0, 3))) == {}
    with pytest.raises(ValueError):
        per_element_force_errors([1, 1], np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError):
        per_element_force_errors([1.0, 1.0], np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError):
        per_element_force_errors([0, 1], np.zeros((2, 3)), np.zeros((2, 3)))


# --- per-pair energies ---------------------------------------------------------------------------

def test_per_pair_energy_errors_by_hand():
    frames = [["H", "O", "H"], ["Si", "O"], ["O"], ["H", "O", "Si"], ["H", "O"], [26, 8]]
    ref = np.array([-3.0, -5.0, -4.0, -4.5, -3.0, -7.0])
    err = np.array([0.1, -0.2, 0.3, 0.4, np.nan, 0.05])  # the fifth frame has no prediction
    m = per_pair_energy_errors(frames, ref + err, ref)
    # H-O: frames 1, 4 -> 0.1, 0.4; H-Si: 4 -> 0.4; O-O: 3 -> 0.3; O-Si: 2, 4 -> -0.2, 0.4;
    # Fe-O: 6 -> 0.05 (atomic numbers accepted, pair written alphabetically)
    assert list(m) == ["Fe-O", "H-O", "H-Si", "O-O", "O-Si"]
    want = {"Fe-O": (1, 0.05, 0.05), "H-O": (2, 0.25, math.sqrt(0.085)), "H-Si": (1, 0.4, 0.4),
            "O-O": (1, 0.3, 0.3), "O-Si": (2, 0.3, math.sqrt(0.1))}
    for pair, (n, mae, rmse) in want.items():
        assert m[pair]["n"] == n, pair
        assert m[pair]["mae"] == approx(mae, rel=1e-12), pair
        assert m[pair]["rmse"] == approx(rmse, rel=1e-12), pair


def test_per_pair_energy_errors_checks():
    assert per_pair_energy_errors([], [], []) == {}
    with pytest.raises(ValueError):
        per_pair_energy_errors([["H"]], [1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        per_pair_energy_errors([[]], [1.0], [1.0])
    with pytest.raises(ValueError):
        per_pair_energy_errors([["Xx"]], [1.0], [1.0])
