"""Models over HTTP: cards, the leaderboard, benchmarks, lineage, model files and predictions.

A model is visible only when every dataset it was trained on is (the library's views decide)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from mliplake.server.auth import lake_for
from mliplake.server.problems import Problem
from mliplake.server.routes.data import jsonable, rows

router = APIRouter(tags=["models"])
LEADERBOARD_SORT = ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse", "stress_mae", "parameters",
                    "seconds", "created_at", "model_id", "energy_r2", "forces_r2")


def _card(request: Request, mid: str) -> dict[str, Any]:
    from mliplake.ml import models as ml

    try:
        return ml.card(lake_for(request), mid)
    except KeyError as e:
        raise Problem(404, "Not found", str(e.args[0]) if e.args else f"no model {mid!r}") from None


@router.get("/models", summary="Model cards the caller may see, newest first")
def models(request: Request) -> dict[str, Any]:
    from mliplake.ml import models as ml

    return {"data": jsonable(ml.models(lake_for(request)))}


@router.get("/models/{mid}", summary="A model card: training set, hyperparameters, benchmark results")
def model(request: Request, mid: str) -> dict[str, Any]:
    card = _card(request, mid)
    lake = lake_for(request)
    bench = []
    if "benchmarks" in {r[0] for r in lake.connection().execute("SELECT table_name FROM information_schema.tables "
                                                                 "WHERE table_schema = current_schema()").fetchall()}:
        bench = [{"benchmark": b, "created_at": t, "result": r} for b, t, r in lake.connection().execute(
            "SELECT benchmark, created_at, result FROM benchmarks WHERE model_id = ? ORDER BY created_at",
            [card["model_id"]]).fetchall()]
        for b in bench:
            if isinstance(b["result"], str):
                import json

                b["result"] = json.loads(b["result"])
    return {"data": jsonable(card | {"benchmarks": bench})}


@router.get("/models/{mid}/lineage", summary="From a model to its training set and the exact config_ids")
def lineage(request: Request, mid: str) -> dict[str, Any]:
    from mliplake.ml import models as ml

    _card(request, mid)
    return {"data": jsonable(ml.lineage(lake_for(request), mid))}


@router.get("/models/{mid}/file", summary="Download the model file (MACE)")
def model_file(request: Request, mid: str) -> FileResponse:
    from mliplake.ml import models as ml

    card = _card(request, mid)
    path = ml.model_path(lake_for(request), card["model_id"])
    return FileResponse(path, filename=f"{card['model_id']}.model", media_type="application/octet-stream")


@router.get("/leaderboard", summary="Models by benchmark metric, sortable by any of them")
def leaderboard(request: Request, sort: str = "forces_mae", descending: bool = False,
                benchmark: str | None = None, training_set: str | None = None) -> dict[str, Any]:
    if sort not in LEADERBOARD_SORT:
        raise Problem(400, "Bad sort key", f"sort {sort!r}: one of {', '.join(LEADERBOARD_SORT)}")
    lake = lake_for(request)
    # the leaderboard view exists once both tables do (asked before the session is made, whose views
    # follow the same answer; a catalog query of information_schema cost 10 ms a request)
    if not (lake.tables.has_table("benchmarks") and lake.tables.has_table("models")):
        return {"data": [], "meta": {"sort": sort}}
    con = lake.connection()
    where, params = ["TRUE"], []
    if benchmark:
        where.append("benchmark = ?")
        params.append(benchmark)
    if training_set:
        where.append("training_set = ?")
        params.append(training_set)
    table = con.execute(f"SELECT * FROM leaderboard WHERE {' AND '.join(where)} "
                        f"ORDER BY {sort} {'DESC' if descending else 'ASC'} NULLS LAST, model_id", params).to_arrow_table()
    return {"data": rows(table), "meta": {"sort": sort, "descending": descending}}


# ------------------------------------------------------------------ predict


class PredictBody(BaseModel):
    model: str = Field(..., description="model id (or a unique prefix)")
    structure: str = Field(..., description="POSCAR, extxyz or CIF text")
    format: str | None = Field(None, description="poscar, extxyz or cif (default: guessed)")
    relax: bool = False
    fmax: float = Field(0.05, gt=0)
    steps: int = Field(50, ge=1, le=500)


class _Calculators:
    """Models loaded once and kept (a few, least recently used first out)."""

    def __init__(self, size: int = 4) -> None:
        self.size, self._cache, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, lake: Any, mid: str) -> Any:
        from mliplake.ml import models as ml

        with self._lock:
            if mid in self._cache:
                self._cache.move_to_end(mid)
                return self._cache[mid]
            calc = ml.load_calculator(mid, lake)
            self._cache[mid] = calc
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
            return calc


CALCULATORS = _Calculators()
_PREDICT_LOCK = threading.Lock()  # one model evaluation at a time: torch already uses every core


@router.post("/predict", summary="Energy, forces and stress of a structure by a model; optionally relaxed")
def predict(request: Request, body: PredictBody) -> dict[str, Any]:
    import numpy as np

    from mliplake.query.atoms import read_structure

    card = _card(request, body.model)
    try:
        atoms = read_structure(body.structure, body.format)[0]
    except ValueError as e:
        raise Problem(422, "Bad structure", str(e)) from None
    limit = request.app.state.settings.predict_max_atoms
    if len(atoms) > limit:
        raise Problem(413, "Structure too large", f"{len(atoms)} atoms; predict takes at most {limit}")
    known = set(card.get("elements") or card.get("training_set", {}).get("elements") or [])
    unknown = sorted(set(atoms.get_chemical_symbols()) - known) if known else []
    if unknown:
        raise Problem(422, "Unsupported elements", f"model {card['model_id']} was trained on {', '.join(sorted(known))}; "
                      f"the structure also has {', '.join(unknown)}", unsupported=unknown)
    try:
        calc = CALCULATORS.get(lake_for(request), card["model_id"])
    except ImportError:
        raise Problem(503, "Predictions unavailable", "this server has no mace-torch installed") from None
    with _PREDICT_LOCK:
        atoms.calc = calc
        trajectory = []
        if body.relax:
            from ase.optimize import BFGS

            opt = BFGS(atoms, logfile=None)
            for _ in opt.irun(fmax=body.fmax, steps=body.steps):
                trajectory.append({"positions": atoms.get_positions().tolist(),
                                   "energy": float(atoms.get_potential_energy())})
        out: dict[str, Any] = {"model": card["model_id"], "energy": float(atoms.get_potential_energy()),
                               "forces": atoms.get_forces().tolist(), "natoms": len(atoms),
                               "symbols": atoms.get_chemical_symbols(), "positions": atoms.get_positions().tolist(),
                               "cell": np.asarray(atoms.cell).tolist(), "pbc": atoms.pbc.tolist()}
        if atoms.pbc.all():
            out["stress"] = atoms.get_stress(voigt=False).tolist()
    if body.relax:
        out["trajectory"] = trajectory
    out["units"] = {"energy": "eV", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3", "positions": "Angstrom"}
    return {"data": jsonable(out)}
