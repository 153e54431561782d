"""Web portal benchmark: how fast its pages draw in a real browser over a lake of many datasets and models.

Builds (once, cached under ``bench/_work/web/lake-<N>``) a lake of N datasets (default 1,000), each
one deposit made with ``lake.deposit`` of a small extxyz file (5 frames of 2 atoms, Si and a second
element that cycles through 8, labelled), then ``catalogue.refresh``; and N models with one
benchmark each, their rows written the way ``ml.register`` and ``ml.benchmark`` write them (one
transaction per table: training N models would measure MACE, not the portal).

Serves it with ``mliplake serve`` (uvicorn, one worker, on 127.0.0.1) and drives headless Chromium
(Debian's /usr/bin/chromium through Playwright, the flags of tests/web/test_web.py) to measure, each
the median (and max) of ``--runs``:

- ``catalogue: first render``: a fresh page load of ``/#/catalogue`` until the page has drawn (its
  view marked ready: every dataset listed and the periodic table counted), from navigation start;
- ``dataset: first render``: the same for ``/#/dataset/<name>`` (card, histograms, element heat map,
  key frequencies, samples, deposits: everything drawn);
- ``catalogue: next page``: pressing *Next* (50 datasets a page) until the new page is drawn;
- ``catalogue: search``: typing a word in the search box until the table shows the answer;
- ``leaderboard: first render`` and ``leaderboard: sort``: pressing a metric's heading until the
  table is redrawn in that order (N models);

and, for reference, the API calls behind them (``/api/v1/catalogue``, ``/api/v1/leaderboard``) with
httpx.  With ``--big-lake DIR`` (the 1.5 M-configuration lake of bench/query.py,
``bench/_work/query_lake``) the two first renders are measured on that lake as well, with its first
dataset.  Targets: first render under 1 s, paging and sorting under 200 ms an interaction.  Results
go to the ``## Web portal`` section of docs/performance.md (``--no-doc``: printed only).

Usage::

    .venv/bin/python bench/web.py --big-lake bench/_work/query_lake   # builds the 1,000 once (minutes)
    .venv/bin/python bench/web.py --n 100 --runs 3 --no-doc            # a quick check
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "_work" / "web"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--enable-unsafe-swiftshader"]
SECOND = ["O", "H", "C", "N", "Al", "Cu", "Fe", "Ti"]


def frames(k: int) -> str:
    el = SECOND[k % len(SECOND)]
    return "".join(f'2\nLattice="6 0 0 0 6 0 0 0 6" Properties=species:S:1:pos:R:3:forces:R:3 '
                   f'energy={-2 - i * 0.01 - k * 1e-4:.6f} pbc="T T T"\nSi 0 0 0 0.1 0 0\n'
                   f"{el} 1.2 {0.1 * i + k * 1e-3:.5f} 0 -0.1 0 0\n" for i in range(5))


def build(n: int) -> Path:
    """The lake of n datasets and n models (cached: a finished build leaves a marker file)."""
    import mliplake
    from mliplake.catalogue import cards as catalogue
    from mliplake.ml import models as ml
    from mliplake.storage.tables import arrow_rows

    root = WORK / f"lake-{n}"
    if (root / "built.json").exists():
        return root
    lake = mliplake.Lake(root / "lake")
    have = {d["dataset"] for d in lake.datasets()}
    src = WORK / "src.xyz"
    t0 = time.perf_counter()
    for k in range(n):
        name = f"ds-{k:05d}"
        if name in have:
            continue
        src.write_text(frames(k))
        rep = lake.deposit([src], manifest={
            "dataset": name, "title": f"Benchmark dataset {k}: Si-{SECOND[k % len(SECOND)]} dimers",
            "description": f"Five Si-{SECOND[k % len(SECOND)]} dimers in a 6 Å box, for the portal benchmark.",
            "authors": [f"Author {k % 37}"], "license": ["CC-BY-4.0", "CC0-1.0", "MIT"][k % 3],
            "method": {"code": ["VASP", "ORCA", "CP2K"][k % 3], "functional": ["PBE", "r2SCAN"][k % 2]},
            "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom"}, "labels": ["energy", "forces"]})
        if rep.status != "stored":
            raise SystemExit(f"deposit {k}: {rep.status} {rep.error}")
        if (k + 1) % 100 == 0:
            print(f"  {k + 1:,}/{n:,} datasets, {time.perf_counter() - t0:.0f} s", flush=True)
    catalogue.refresh(lake)
    # n models, one benchmark each, in one transaction per table
    models, benches = [], []
    for k in range(n):
        mid = f"bench-model-{k:05d}"
        e, f = 0.001 + (k * 7919 % 1000) / 1e5, 0.02 + (k * 104729 % 1000) / 1e4
        card = {"model_id": mid, "name": f"bench-model-{k}", "architecture": "MACE", "parameters": 10_000 + 37 * k,
                "elements": ["Si", SECOND[k % len(SECOND)]], "training_set": {"name": f"ts-{k}", "version": f"{k:016x}"},
                "hyperparameters": {"hidden_irreps": "8x0e", "r_max": 4.0}, "license": "MIT",
                "created_at": f"2026-01-01T00:00:{k % 60:02d}+00:00"}
        models.append({"model_id": mid, "created_at": card["created_at"], "datasets": [f"ds-{k:05d}"],
                       "card": json.dumps(card)})
        result = {"model_id": mid, "benchmark": "bench", "configurations": 5, "missing_predictions": 0,
                  "energy_per_atom": {"n": 5, "mae": e, "rmse": e * 1.3, "r2": 0.99},
                  "forces": {"n": 30, "mae": f, "rmse": f * 1.3, "r2": 0.98},
                  "forces_per_element": {"Si": {"n": 5, "mae": f, "rmse": f * 1.3}}, "seconds": 0.1}
        benches.append({"model_id": mid, "benchmark": "bench", "created_at": card["created_at"],
                        "result": json.dumps(result)})
    for table, schema, rows in (("models", ml.MODEL_ROWS, models), ("benchmarks", ml.BENCHMARK_ROWS, benches)):
        lake.tables.ensure_table(table, schema)
        lake.tables.transaction(lambda cur, t=table, s=schema, r=rows: (cur.execute(f"DELETE FROM lake.{t}"),
                                                                        arrow_rows(cur, t, r, s)))
    (root / "built.json").write_text(json.dumps({"datasets": n, "models": n, "seconds": round(time.perf_counter() - t0)}))
    return root


def serve(lake: Path) -> tuple[subprocess.Popen, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from support import start_api

    return start_api(lake, {"MLIPLAKE_API_BURST": "1000000", "MLIPLAKE_API_RATE": "1000000"})


def stats(xs: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(xs) * 1000, 1), "max_ms": round(max(xs) * 1000, 1), "runs": len(xs)}


def first_renders(url: str, runs: int, dataset: str) -> dict[str, Any]:
    """Time to first render of the catalogue and of one dataset's page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        out = {"catalogue: first render": stats(_first_render(page, url, "catalogue", runs)),
               "dataset: first render": stats(_first_render(page, url, f"dataset/{dataset}", runs))}
        browser.close()
    return out


def _first_render(page: Any, url: str, route: str, runs: int) -> list[float]:
    ts = []
    for i in range(runs + 1):  # the first load warms the server and the browser's cache
        page.goto(f"{url}/?run={i}#/{route}")
        page.wait_for_selector(".view[data-ready]", timeout=120_000)
        if i:
            ts.append(page.evaluate("performance.now()") / 1000)
    return ts


def measure(url: str, n: int, runs: int) -> dict[str, Any]:
    import httpx
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {}
    for name, path in (("api: /catalogue (all datasets)", "/api/v1/catalogue"),
                       ("api: /leaderboard?sort=forces_mae", "/api/v1/leaderboard?sort=forces_mae")):
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            httpx.get(url + path, timeout=120).raise_for_status()
            ts.append(time.perf_counter() - t0)
        out[name] = stats(ts)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def first_render(route: str) -> list[float]:
            return _first_render(page, url, route, runs)

        out["catalogue: first render"] = stats(first_render("catalogue"))
        out["dataset: first render"] = stats(first_render("dataset/ds-00007"))
        page.goto(f"{url}/?paging#/catalogue")
        page.wait_for_selector(".view[data-ready]")
        ts = []
        for i in range(min(runs, (n - 1) // 50)):  # 50 datasets a page
            t0 = time.perf_counter()
            page.click("nav.pager button:has-text('Next')")
            page.wait_for_selector(f"nav.pager span:has-text('Page {i + 2} of')")
            ts.append(time.perf_counter() - t0)
        if ts:
            out["catalogue: next page"] = stats(ts)
        ts = []
        for i in range(runs):
            word = f"ds-{(i * 97 + 1) % n:05d}"
            t0 = time.perf_counter()
            page.fill("#cat-q", word)
            # drawn: the dataset asked for is listed first (its name ranks highest; ds-00000 was first)
            while page.locator("tbody tr[data-key]").first.get_attribute("data-key") != word:
                if time.perf_counter() - t0 > 60:
                    raise TimeoutError(f"search for {word}: not drawn in 60 s")
                time.sleep(0.005)
            ts.append(time.perf_counter() - t0)
            page.fill("#cat-q", "")
            page.wait_for_selector("tbody tr[data-key='ds-00000']")
        out["catalogue: search"] = stats(ts)
        out["leaderboard: first render"] = stats(first_render("leaderboard"))
        ts = []
        keys = ["energy_mae", "forces_mae", "parameters", "forces_rmse", "energy_rmse"]
        for i in range(runs):
            key = keys[i % len(keys)]
            t0 = time.perf_counter()
            page.click(f"button[data-sort={key}]")  # a new key each time (errors: lowest first)
            page.wait_for_selector(f"th[aria-sort=ascending] button[data-sort={key}]", timeout=60_000)
            ts.append(time.perf_counter() - t0)
        rows = page.locator("table.leaderboard tbody tr").count()
        out["leaderboard: sort"] = stats(ts) | {"rows": rows}
        browser.close()
    return out


# the targets; catalogue search has none (the box waits 300 ms after the last keystroke)
TARGETS = {"first render": 1000, "next page": 200, "sort": 200}


def render(res: dict[str, Any], big: dict[str, Any] | None, n: int, runs: int, big_name: str) -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    from perfdoc import machine

    m = machine(("mliplake", "duckdb", "playwright"))
    lines = ["## Web portal", "", "_Generated by `bench/web.py`; do not edit by hand._", "",
             f"Headless Chromium (Debian's, through Playwright) against `mliplake serve` on 127.0.0.1; median and "
             f"max of {runs} runs after a warm-up. Machine: {m['cpu']}, {m['nproc']} cores, {m['ram']}; "
             f"{m['versions']}; git {m['git']}.", "",
             "| lake | measure | median | max | target | met |", "|---|---|---:|---:|---:|---|"]

    def rows(label: str, r: dict[str, Any]) -> None:
        for k, v in r.items():
            target = next((t for word, t in TARGETS.items() if k.endswith(word)), None)
            met = "" if target is None else ("met" if v["median_ms"] < target else "**NOT met**")
            lines.append(f"| {label} | {k} | {v['median_ms']:,.0f} ms | {v['max_ms']:,.0f} ms | "
                         f"{'' if target is None else f'{target:,} ms'} | {met} |")

    rows(f"{n:,} datasets and models", res)
    if big is not None:
        rows(big_name, big)
    lines += ["", "First render: from navigation start until the page marks itself drawn (every part of it "
              "filled in); an interaction: from the click or keystroke until the new rows are drawn (catalogue "
              "search includes the 300 ms the search box waits after the last keystroke).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="datasets and models (default 1,000)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--big-lake", type=Path, help="also time first renders on this lake (bench/_work/query_lake)")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/performance.md alone")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit("needs Debian's chromium (make chromium) and playwright (pip install playwright)")
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    root = build(args.n)
    print(f"lake of {args.n:,} datasets and models ready in {time.perf_counter() - t0:.0f} s", flush=True)
    proc, url = serve(root / "lake")
    try:
        res = measure(url, args.n, args.runs)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    big, big_name = None, ""
    if args.big_lake is not None:
        import mliplake

        lake = mliplake.Lake(args.big_lake)
        first = lake.datasets()[0]["dataset"]
        big_name = f"{lake.count():,} configurations ({len(lake.datasets())} datasets)"
        proc, url = serve(args.big_lake)
        try:
            big = first_renders(url, args.runs, first)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    if not args.no_doc:
        sys.path.insert(0, str(ROOT / "bench"))
        from perfdoc import write_section

        write_section(ROOT / "docs" / "performance.md", "## Web portal", render(res, big, args.n, args.runs, big_name))
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(f"\n{'measure':38} {'median':>10} {'max':>10}   (N = {args.n:,}, {args.runs} runs, {os.cpu_count()} CPUs)")
    for k, v in [*res.items(), *((big or {}).items())]:
        extra = f"   {v['rows']:,} rows" if "rows" in v else ""
        print(f"{k:38} {v['median_ms']:>8.0f} ms {v['max_ms']:>7.0f} ms{extra}")


if __name__ == "__main__":
    main()
