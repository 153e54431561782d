"""The web portal in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
Playwright against ``mliplake serve`` (uvicorn) on 127.0.0.1 with the bundled samples.

The lake holds the three samples (public), a private dataset ``secret-cu`` (owner alice, group
g1, one quarantined frame), two materialised training sets and models whose rows are written the
way ``ml.register`` and ``ml.benchmark`` write them, with benchmark results computed by
``mliplake.metrics`` from the stored labels plus model-sized noise (training MACE here would take
minutes and test nothing the portal shows).  A model trained on the private dataset is in the
registry too.

Every page is opened through a context that routes each request through an allow-list (loopback
only) and fails on any JavaScript error.  Predictions need a trained MACE model: the predict page
is tested up to the point where a model is needed (the structure is read and drawn) and the
server's answer is shown; the prediction itself is left to tests/test_ml.py.

``MLIPLAKE_WEB_SCREENSHOTS=docs/img pytest tests/test_web.py`` also writes a PNG of every page.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from support import deposit_sample, start_api, stop

import mliplake
from mliplake.access import Principal

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--enable-unsafe-swiftshader"]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
SHOTS = os.environ.get("MLIPLAKE_WEB_SCREENSHOTS", "")
STATIC = Path(mliplake.__file__).parent / "web" / "static"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None

needs_browser = pytest.mark.skipif(
    sync_playwright is None or not Path(CHROMIUM).exists(),
    reason="browser tests need Playwright for Python (pip install playwright) and Debian's chromium "
           "(make chromium); `playwright install` is never used")


# ------------------------------------------------------------------ the lake behind the server


def _frames(path: Path, symbol: str, n: int, bad: int = 0) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(f'2\nLattice="6 0 0 0 6 0 0 0 6" Properties=species:S:1:pos:R:3:forces:R:3 '
                    f'energy={-2.0 - i * 0.01:.5f} cu_recipe={i} pbc="T T T"\n'
                    f"{symbol} 0 0 0 0.1 0 0\n{symbol} 1.1 {0.1 * i:.4f} 0 -0.1 0 0\n")
        for _ in range(bad):  # 2 atoms declared, 1 given: quarantined
            f.write("2\nenergy=1 Properties=species:S:1:pos:R:3\nCu 0 0 0\n")
    return path


def _model(lake, name: str, ts, arch_params: int, hidden: str, epochs: int, seconds: float, noise: dict[str, float],
           energy_noise: float, created: str, seed: int, description: str = "") -> str:
    """A model's card and its benchmark on its training set's test split, as ml.register and
    ml.benchmark write them; the 'predictions' are the references plus noise of the given size."""
    import pyarrow as pa

    from mliplake import metrics, ml
    from mliplake.chemistry import SYMBOLS, Z_OF

    spec = ml.ModelSpec(name=name, training_set=ts.name, hidden_irreps=hidden, max_num_epochs=epochs, seed=seed,
                        description=description)
    mid = ml.model_id(spec, ts)
    rng = np.random.default_rng(seed)
    ids = ts.config_ids("test") or ts.config_ids("train")[:20]
    con = lake.connection()
    con.register("_ids", pa.table({"config_id": pa.array(ids, pa.string())}))
    rows = con.execute("SELECT numbers, elements, energy, forces, nsites, stress FROM configurations "
                       "WHERE config_id IN (SELECT config_id FROM _ids)").fetchall()
    nums = np.concatenate([np.array(r[0]) for r in rows])
    f_ref = np.concatenate([np.array(r[3]).reshape(-1, 3) for r in rows])
    sigma = np.array([noise.get(str(SYMBOLS[z]), 0.05) for z in nums])[:, None]
    f_pred = f_ref + rng.normal(size=f_ref.shape) * sigma * 1.25
    n_at = np.array([r[4] for r in rows], float)
    e_ref = np.array([r[2] for r in rows]) / n_at
    e_pred = e_ref + rng.normal(size=e_ref.shape) * energy_noise
    stress = [(np.array(r[5]), np.array(r[5]) + rng.normal(size=9) * 0.002) for r in rows if r[5] is not None]
    elements = sorted({e for r in rows for e in r[1]}, key=lambda e: Z_OF[e])
    epochs_log = [{"epoch": i, "loss": round(2.0 / (i + 1), 4), "rmse_e_per_atom_meV": round(energy_noise * 1000 * (1 + 2 / (i + 1)), 2),
                   "rmse_f_meV_per_A": round(1000 * float(np.mean(list(noise.values()))) * (1 + 2 / (i + 1)), 1),
                   "seconds": round(seconds * (i + 1) / epochs, 1)} for i in range(epochs)]
    card = {
        "model_id": mid, "name": name, "architecture": "MACE",
        "hyperparameters": {k: v for k, v in asdict(spec).items() if k not in ("name", "training_set", "description", "license")},
        "parameters": arch_params, "elements": elements, "r_max": spec.r_max,
        "training_set": {"name": ts.name, "version": ts.version, "content_hash": ts.manifest["content_hash"],
                         "counts": ts.manifest["counts"], "filter": ts.manifest["filter"]},
        "training": {"seconds": seconds, "epochs": epochs_log, "device": "cpu", "hardware": "x86_64", "host": "node01",
                     "cpus": 8, "torch": "2.13.0", "mliplake": mliplake.__version__, "launcher": {"kind": "local"}},
        "metrics": epochs_log[-1], "license": "MIT", "description": description, "created_at": created,
        "model_file": f"{ml.MODELS}/{mid}/model.model",
    }
    ml._commit_row(lake, "models", ml.MODEL_ROWS, {"model_id": mid, "created_at": created,
                                                   "datasets": ts.manifest["source_datasets"], "card": json.dumps(card)},
                   "model_id = ?", [mid])
    bench = f"{ts.name}-test"
    result = {
        "model_id": mid, "benchmark": bench, "filter": "", "training_set": ts.name, "split": "test",
        "configurations": len(rows), "missing_predictions": 0, "missing_references": 0,
        "energy_per_atom": metrics.regression(e_pred, e_ref), "forces": metrics.regression(f_pred.ravel(), f_ref.ravel()),
        "stress": metrics.regression(np.concatenate([s[1] for s in stress]), np.concatenate([s[0] for s in stress]))
        if stress else None,
        "forces_per_element": metrics.per_element_force_errors(nums, f_pred, f_ref),
        "energy_per_pair": metrics.per_pair_energy_errors([r[1] for r in rows], e_pred, e_ref),
        "seconds": round(0.02 * len(rows), 3), "seconds_per_configuration": 0.02, "created_at": created,
    }
    ml._commit_row(lake, "benchmarks", ml.BENCHMARK_ROWS, {"model_id": mid, "benchmark": bench, "created_at": created,
                                                           "result": json.dumps(result, default=float)},
                   "model_id = ? AND benchmark = ?", [mid, bench])
    return mid


def build_world(tmp: Path) -> dict:
    """The samples, a private dataset, accounts with tokens, training sets and models."""
    from mliplake import catalogue, training
    from mliplake.accounts import Accounts, accounts_url

    lake = mliplake.Lake(tmp / "lake")
    for sample in ("mlearn", "rmd17", "3bpa"):
        deposit_sample(lake, sample)
    alice = lake.as_principal(Principal.user("alice", roles=["depositor"]))
    priv = alice.deposit([_frames(tmp / "cu.xyz", "Cu", 6, bad=1)],
                         manifest={"dataset": "secret-cu", "title": "Copper dimers (unpublished)", "visibility": "private",
                                   "groups": ["g1"], "license": "CC-BY-4.0", "submitter": "alice@example.org"})
    catalogue.refresh(lake)
    si = training.materialise(lake, training.load_spec({"name": "si", "filter": 'dataset = "mlearn-si"',
                                                        "split": {"method": "random", "seed": 1}}))
    eth = training.materialise(lake, training.load_spec({"name": "ethanol", "filter": 'dataset = "rmd17-ethanol" AND frame_index < 300',
                                                         "split": {"method": "random", "seed": 1}, "e0s": {"source": "average"}}))
    cu = training.materialise(lake, training.load_spec({"name": "cu", "filter": 'dataset = "secret-cu"',
                                                        "split": {"method": "random", "seed": 1}, "e0s": {"source": "average"}}))
    models = {
        "si-small": _model(lake, "mace-si-small", si, 25_000, "8x0e", 10, 310.0, {"Si": 0.14}, 0.006, "2026-01-10T10:00:00+00:00", 1,
                           "A small MACE for bulk and defected silicon."),
        "si-large": _model(lake, "mace-si-large", si, 190_000, "32x0e+32x1o", 60, 2400.0, {"Si": 0.07}, 0.003, "2026-02-01T10:00:00+00:00", 2,
                           "Silicon, larger: 32 channels, L=1."),
        "ethanol": _model(lake, "mace-ethanol", eth, 60_000, "16x0e", 40, 900.0, {"H": 0.03, "C": 0.06, "O": 0.09}, 0.002,
                          "2026-02-15T10:00:00+00:00", 3, "Ethanol from rMD17 (300 frames)."),
        "cu": _model(lake, "secret-cu-model", cu, 12_000, "8x0e", 5, 60.0, {"Cu": 0.02}, 0.001, "2026-03-01T10:00:00+00:00", 4),
    }
    acc = Accounts(accounts_url(lake.settings, lake))
    acc.add_group("g1", actor="test")
    acc.add_user("alice", roles=["depositor"], actor="test")
    acc.add_user("bob", actor="test")
    tokens = {name: acc.create_token(name, scope="write", actor="test")[1] for name in ("alice", "bob")}
    acc.close()
    return {"lake": lake, "tmp": tmp, "tokens": tokens, "models": models, "priv_deposit": priv.deposit_id}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    w = build_world(tmp)
    proc, url = start_api(tmp / "lake", {"MLIPLAKE_API_BURST": "100000", "MLIPLAKE_API_RATE": "100000"})
    w.update(url=url, proc=proc)
    yield w
    stop(proc)
