"""Training benchmark: MACE epoch time on CPU and GPU for the same spec, and the share of it spent
waiting for the data loader.

Builds (once, cached under ``bench/_work/train_lake_<schema hash>``) a lake with the bundled rMD17 ethanol
sample (2,000 frames) and materialises a training set of all of it (80/10/10, seeded).
Then, for each model spec below and each device asked for, it runs ``mliplake.ml.mace_train`` (the
wrapper every launcher uses) in a child process with MACE's ``train_one_epoch`` timed from outside:

- epoch seconds: the training pass over the train split (validation excluded), CUDA synchronised;
- loading seconds: the time spent in the loader's ``next()`` (collating graphs on the host;
  the host-to-device copy happens inside MACE's step and counts as compute).

The first epoch is reported separately (TorchScript and CUDA warm-up); the figures are medians of
the others. Results go to the ``## Training`` section of ``docs/performance.md``.

Usage::

    .venv/bin/python bench/train.py                  # CPU, and CUDA when torch sees a GPU
    .venv/bin/python bench/train.py --devices cpu --epochs 3 --no-doc
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import perfdoc  # noqa: E402
from perfdoc import write_section  # noqa: E402

WORK = ROOT / "bench" / "_work"
DOC = ROOT / "docs" / "performance.md"
SECTION = "## Training"
LOADING_TARGET = 0.10
# the main job's tiny model, and one of the size people train on a GPU (MACE's "small" settings)
SPECS: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_irreps": "8x0e", "max_L": 0, "correlation": 2, "batch_size": 16},
    "small": {"hidden_irreps": "64x0e+64x1o", "max_L": 1, "correlation": 3, "batch_size": 16},
}


def child(argv: list[str]) -> None:
    """Run inside the child: time MACE's epochs and its loader, then print one BENCH line."""
    import importlib

    import torch

    mt = importlib.import_module("mace.tools.train")  # the module: mace.tools re-exports a function of that name

    from mliplake.ml import mace_train

    epochs: list[dict[str, float]] = []
    original = mt.train_one_epoch

    def timed(**kw: Any) -> None:
        loader, waited = kw["data_loader"], [0.0]

        class Timed:
            def __iter__(self):  # noqa: ANN204
                it = iter(loader)
                while True:
                    t = time.perf_counter()
                    try:
                        batch = next(it)
                    except StopIteration:
                        return
                    waited[0] += time.perf_counter() - t
                    yield batch

            def __len__(self) -> int:
                return len(loader)

            def __getattr__(self, name: str) -> Any:
                return getattr(loader, name)

        cuda = kw["device"].type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        original(**{**kw, "data_loader": Timed()})
        if cuda:
            torch.cuda.synchronize()
        epochs.append({"epoch_s": time.perf_counter() - t0, "loading_s": waited[0], "batches": len(loader)})

    mt.train_one_epoch = timed
    sys.argv = ["mace_train", *argv]
    mace_train.main()
    print("BENCH " + json.dumps(epochs), flush=True)


def lake_and_training_set():  # noqa: ANN201
    import mliplake
    from mliplake.core.schema import CONFIGURATIONS
    from mliplake.ml import training_sets as training

    # a lake of the current schema: a cached one from before a schema change would not open
    schema = hashlib.sha256(str(CONFIGURATIONS).encode()).hexdigest()[:8]
    lake = mliplake.Lake(WORK / f"train_lake_{schema}")
    samples = ROOT / "src" / "mliplake" / "samples" / "rmd17"
    if not lake.records():
        lake.deposit(sorted(samples.glob("*.xyz")), manifest=samples / "manifest.yaml")
    spec = training.load_spec({"name": "bench-ethanol", "filter": 'dataset = "rmd17-ethanol"',
                               "split": {"method": "random", "seed": 0}, "e0s": {"source": "average"}})
    return lake, training.materialise(lake, spec)


def measure(lake, ts, name: str, device: str, epochs: int) -> dict[str, Any]:  # noqa: ANN001
    from mliplake.ml import models as ml

    spec = ml.ModelSpec(name=f"bench-{name}", training_set=ts.name, device=device, max_num_epochs=epochs,
                        seed=0, **SPECS[name])
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLIPLAKE_WORKDIR"] = tmp  # a fresh work dir: no resuming from an earlier run
        _, work, cmd = ml.prepare(lake, spec, ts)
        out = subprocess.run([sys.executable, __file__, "--child", *cmd[3:]], cwd=work, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"{name} on {device} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    ep = json.loads(line[6:])
    rest = ep[1:] or ep
    epoch_s = statistics.median(e["epoch_s"] for e in rest)
    loading_s = statistics.median(e["loading_s"] for e in rest)
    return {"model": name, "device": device, "frames": ts.manifest["counts"]["train"], "batches": ep[0]["batches"],
            "first_epoch_s": ep[0]["epoch_s"], "epoch_s": epoch_s, "loading_s": loading_s,
            "loading_share": loading_s / epoch_s, "epochs": len(ep)}


def devices_here() -> tuple[list[str], str]:
    import torch

    if torch.cuda.is_available():
        return ["cpu", "cuda"], torch.cuda.get_device_name(0)
    return ["cpu"], ""


def render(rows: list[dict[str, Any]], gpu: str) -> str:
    cpu = perfdoc.machine(())["cpu"]
    lines = [
        SECTION, "",
        f"`bench/train.py`, {dt.date.today()}: MACE (mace-torch, float32) on the bundled rMD17 ethanol "
        f"sample ({rows[0]['frames']} training frames, batch 16), through `mliplake.ml.mace_train`. "
        f"CPU: {cpu}, {os.cpu_count()} cores. GPU: {gpu or 'none on this machine (this task was not lent one)'}.",
        "Epoch = the training pass (validation excluded); loading = time in the data loader's `next()`; "
        "medians over the epochs after the first.", "",
        "| model | device | epoch s | first epoch s | loading s | loading share | target < 10% |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['device']} | {r['epoch_s']:.2f} | {r['first_epoch_s']:.2f} | "
                     f"{r['loading_s']:.3f} | {100 * r['loading_share']:.1f}% | "
                     f"{'met' if r['loading_share'] < LOADING_TARGET else 'NOT met'} |")
    by = {(r["model"], r["device"]): r for r in rows}
    speedups = [f"{m}: {by[(m, 'cpu')]['epoch_s'] / by[(m, 'cuda')]['epoch_s']:.1f}x" for m in SPECS
                if (m, "cpu") in by and (m, "cuda") in by]
    if speedups:
        lines += ["", "GPU speed-up per epoch over CPU: " + ", ".join(speedups) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", nargs="*", help="default: cpu, and cuda when present")
    ap.add_argument("--models", nargs="*", default=list(SPECS))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    found, gpu = devices_here()
    lake, ts = lake_and_training_set()
    rows = []
    for name in args.models:
        for device in args.devices or found:
            r = measure(lake, ts, name, device, args.epochs)
            print(json.dumps(r), flush=True)
            rows.append(r)
    text = render(rows, gpu)
    print(text)
    if not args.no_doc:
        write_section(DOC, SECTION, text)


if __name__ == "__main__":
    main()
