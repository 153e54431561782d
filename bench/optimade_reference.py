"""OPTIMADE benchmark: mliplake's ``/optimade/v1/structures`` against the reference implementation,
optimade-python-tools' own server, serving the same structures, measured side by side in one run.

Builds (once, cached under ``bench/_work/optimade/lake-<N>``) a lake of N synthetic configurations
(bench/ingest.py's generator: MPtrj-like sizes and compositions, energies, forces and stress; five
frames per composition, so formulas repeat) in one dataset, and starts ``mliplake serve`` (uvicorn,
one process, 127.0.0.1) over it.  Every entry is read back through our own OPTIMADE endpoint and
loaded, attributes unchanged (provider fields ``_mliplake_*`` declared as the reference server's
provider fields, prefix ``mliplake``), into the reference server: ``optimade.server.create_app``
with its mongomock backend (its default, the backend of its demo server), run by uvicorn in a
second process on 127.0.0.1.

Then, for each operation, both servers answer the same request (httpx, one client each, runs
interleaved ours, reference, ours, ...): the first page of every structure (``page_limit`` 20 and
100), the first page of three selective filters, every page of a filter by following
``links.next`` to the end (total time), and one entry by id (``/structures/{id}``).  Each
operation's ``data_returned`` (and the ids of a full walk) must agree between the servers.  Ratio:
ours / reference (below 1: ours is faster).

    .venv/bin/python bench/optimade_reference.py [--frames 3000] [--runs 9] [--no-doc]

The reference server needs optimade's server extras (``pip install "optimade[server]"``: mongomock and
pymongo).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# this file's name is the optimade package's: its folder goes last, after the installed packages
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402

WORK = HERE / "_work" / "optimade"
PREFIX = "mliplake"
WALK_FILTER = "nsites > 30"  # about a quarter of the structures: several pages
PROVIDER = {"prefix": PREFIX, "name": "mliplake", "description": "the same structures as the mliplake server",
            "homepage": None}


# ---------------------------------------------------------------- the reference server (its own process)


def serve_reference(docs_path: Path, port: int) -> None:
    """optimade-python-tools' server over mongomock, holding the entries of ``docs_path`` (a JSON list)."""
    import warnings
    from datetime import datetime

    import uvicorn

    warnings.simplefilter("ignore")
    try:
        import mongomock  # noqa: F401
        import pymongo  # noqa: F401
    except ImportError as e:
        sys.exit(f"the reference server needs optimade's server extras (pip install 'optimade[server]'): {e}")
    from optimade.server.config import ServerConfig
    from optimade.server.create_app import create_app

    docs = json.loads(docs_path.read_text())
    provider_fields = sorted({k.removeprefix(f"_{PREFIX}_") for d in docs for k in d if k.startswith(f"_{PREFIX}_")})
    config = ServerConfig(insert_test_data=False, database_backend="mongomock", base_url=f"http://127.0.0.1:{port}",
                          provider=PROVIDER, provider_fields={"structures": provider_fields}, page_limit_max=1000,
                          log_level="warning")
    app = create_app(config)
    rows = []
    for d in docs:  # the database holds provider fields without their prefix, timestamps as datetimes
        row = {k.removeprefix(f"_{PREFIX}_"): v for k, v in d.items()}
        row["last_modified"] = datetime.fromisoformat(row["last_modified"].replace("Z", "+00:00"))
        rows.append(row)
    app.state.entry_collections["structures"].insert(rows)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_reference(docs_path: Path) -> tuple[subprocess.Popen, str]:
    from support import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-reference", str(docs_path), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    end = time.time() + 300
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the reference server exited: {proc.stderr.read()[-3000:]}")
        try:
            httpx.get(url + "/v1/info", timeout=2).raise_for_status()
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the reference server did not start in time")


# ---------------------------------------------------------------- data


def build(frames: int) -> Path:
    from ingest import generate

    import mliplake

    WORK.mkdir(parents=True, exist_ok=True)
    data = WORK / f"frames-{frames}.xyz"
    if not data.exists():
        generate(data, frames, seed=11, trajectory=5)
    lake_dir = WORK / f"lake-{frames}"
    if not (lake_dir / ".built").exists():
        shutil.rmtree(lake_dir, ignore_errors=True)
        t0 = time.perf_counter()
        mliplake.Lake(lake_dir).deposit([data], dataset="bench-optimade")
        print(f"lake of {frames} configurations built in {time.perf_counter() - t0:.1f} s", flush=True)
        (lake_dir / ".built").touch()
    return lake_dir


def export_entries(ours: httpx.Client, path: Path) -> list[dict]:
    """Every entry, as our server serves it (every field): the reference server's documents."""
    docs, url = [], "/optimade/v1/structures"
    params: dict | None = {"page_limit": 1000}
    while url:
        body = ours.get(url, params=params).raise_for_status().json()
        docs += [{"id": e["id"], **e["attributes"]} for e in body["data"]]
        url, params = body["links"]["next"], None
    path.write_text(json.dumps(docs))
    return docs


# ---------------------------------------------------------------- measuring


def walk(http: httpx.Client, path: str, params: dict) -> tuple[list[str], int]:
    """Every id of a filter, following links.next; (ids, pages)."""
    ids, url, pages = [], path, 0
    while url:
        body = http.get(url, params=params).raise_for_status().json()
        ids += [e["id"] for e in body["data"]]
        url, params = body["links"].get("next"), None
        if isinstance(url, dict):  # a links object
            url = url.get("href")
        pages += 1
    return ids, pages


def interleaved(tasks: list, runs: int) -> list[list[float]]:
    """Times (ms) of each task, runs interleaved (1, 2, 1, 2, ...) after one warm-up each."""
    for t in tasks:
        t()
    times: list[list[float]] = [[] for _ in tasks]
    for _ in range(runs):
        for i, t in enumerate(tasks):
            t0 = time.perf_counter()
            t()
            times[i].append((time.perf_counter() - t0) * 1000)
    return times


def p90(ts: list[float]) -> float:
    s = sorted(ts)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def measure(frames: int, runs: int) -> tuple[list[dict], dict]:
    from support import start_api, stop

    lake_dir = build(frames)
    os.environ.setdefault("MLIPLAKE_STATE_DIR", str(WORK / "state"))
    proc, url = start_api(lake_dir, {"MLIPLAKE_API_RATE": "1e9", "MLIPLAKE_API_BURST": "1000000000",
                                     "MLIPLAKE_API_PAGE_MAX": "1000"})
    ref_proc = None
    try:
        ours = httpx.Client(base_url=url, timeout=600)
        docs_path = WORK / f"entries-{frames}.json"
        t0 = time.perf_counter()
        docs = export_entries(ours, docs_path)
        export_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref_proc, ref_url = start_reference(docs_path)
        load_s = time.perf_counter() - t0
        ref = httpx.Client(base_url=ref_url, timeout=600)
        formula = _common_formula(docs)
        probe = docs[len(docs) // 2]["id"]
        facts = {"n": len(docs), "export_s": export_s, "load_s": load_s, "formula": formula,
                 "mb": docs_path.stat().st_size / 2**20, "load_before": os.getloadavg()}
        ops = [
            ("first page, page_limit 20", {"page_limit": 20}),
            ("first page, page_limit 100", {"page_limit": 100}),
            ('`elements HAS "Si"`, page_limit 20', {"filter": 'elements HAS "Si"', "page_limit": 20}),
            ("`nsites < 5`, page_limit 20", {"filter": "nsites < 5", "page_limit": 20}),
            (f'`chemical_formula_reduced = "{formula}"`, page_limit 20',
             {"filter": f'chemical_formula_reduced = "{formula}"', "page_limit": 20}),
        ]
        rows = []
        for label, params in ops:
            a = ours.get("/optimade/v1/structures", params=params).raise_for_status()
            b = ref.get("/v1/structures", params=params).raise_for_status()
            na, nb = a.json()["meta"].get("data_returned"), b.json()["meta"].get("data_returned")
            t_ours, t_ref = interleaved([lambda p=params: ours.get("/optimade/v1/structures", params=p).raise_for_status(),
                                         lambda p=params: ref.get("/v1/structures", params=p).raise_for_status()], runs)
            rows.append({"op": label, "ours": t_ours, "ref": t_ref, "agree": na == nb,
                         "note": f"data_returned {na:,} / {nb:,}; {len(a.content) / 1024:.0f} / "
                                 f"{len(b.content) / 1024:.0f} KiB"})
        walk_filter = {"filter": WALK_FILTER, "page_limit": 100, "response_fields": "nsites"}
        ids_a, pages_a = walk(ours, "/optimade/v1/structures", dict(walk_filter))
        ids_b, pages_b = walk(ref, "/v1/structures", dict(walk_filter))
        walk_runs = max(3, runs // 3)
        t_ours, t_ref = interleaved([lambda: walk(ours, "/optimade/v1/structures", dict(walk_filter)),
                                     lambda: walk(ref, "/v1/structures", dict(walk_filter))], walk_runs)
        rows.append({"op": f"every page of `{WALK_FILTER}` (page_limit 100, response_fields nsites; "
                           f"{walk_runs} runs)", "ours": t_ours, "ref": t_ref,
                     "agree": sorted(ids_a) == sorted(ids_b) and len(ids_a) == len(set(ids_a)),
                     "note": f"{len(ids_a):,} / {len(ids_b):,} entries (same ids: {set(ids_a) == set(ids_b)}), "
                             f"{pages_a} / {pages_b} pages"})
        all_params = {"page_limit": 100}
        ids_a, pages_a = walk(ours, "/optimade/v1/structures", dict(all_params))
        ids_b, pages_b = walk(ref, "/v1/structures", dict(all_params))
        t_ours, t_ref = interleaved([lambda: walk(ours, "/optimade/v1/structures", dict(all_params)),
                                     lambda: walk(ref, "/v1/structures", dict(all_params))], walk_runs)
        rows.append({"op": f"every page of every structure (page_limit 100, all fields; {walk_runs} runs)",
                     "ours": t_ours, "ref": t_ref, "agree": sorted(ids_a) == sorted(ids_b),
                     "note": f"{len(ids_a):,} / {len(ids_b):,} entries, {pages_a} / {pages_b} pages"})
        a = ours.get(f"/optimade/v1/structures/{probe}").raise_for_status().json()["data"]
        b = ref.get(f"/v1/structures/{probe}").raise_for_status().json()["data"]
        same = a["id"] == b["id"] and all(a["attributes"][k] == b["attributes"][k] for k in
                                          ("nsites", "elements", "chemical_formula_reduced", "_mliplake_energy"))
        t_ours, t_ref = interleaved([lambda: ours.get(f"/optimade/v1/structures/{probe}").raise_for_status(),
                                     lambda: ref.get(f"/v1/structures/{probe}").raise_for_status()], runs)
        rows.append({"op": "one entry, `/structures/{id}`", "ours": t_ours, "ref": t_ref, "agree": same,
                     "note": "same entry" if same else "entries differ"})
        facts["load_after"] = os.getloadavg()
        return rows, facts
    finally:
        stop(proc)
        if ref_proc is not None:
            stop(ref_proc)


def _common_formula(docs: list[dict]) -> str:
    from collections import Counter

    counts = Counter(d["chemical_formula_reduced"] for d in docs)
    return counts.most_common(1)[0][0]


# ---------------------------------------------------------------- the section


def render(rows: list[dict], facts: dict, frames: int, runs: int) -> str:
    from perfdoc import machine

    m = machine(("mliplake", "optimade", "mongomock", "duckdb", "fastapi", "uvicorn", "pydantic", "httpx"))
    load = "/".join(f"{x:.1f}" for x in facts["load_before"]) + " before, " + \
        "/".join(f"{x:.1f}" for x in facts["load_after"]) + " after (1/5/15-minute load averages)"
    lines = [
        "## OPTIMADE", "",
        f"`bench/optimade_reference.py --frames {frames} --runs {runs}`: mliplake's `/optimade/v1/structures` against "
        "the reference implementation, optimade-python-tools' server (`optimade.server.create_app`, mongomock "
        "backend), both under uvicorn (one process each, 127.0.0.1), serving the same "
        f"{facts['n']:,} structures (a synthetic lake, MPtrj-like sizes: median 20 sites; every field of each entry "
        f"as mliplake serves it, {facts['mb']:.0f} MB of JSON, read from mliplake's OPTIMADE endpoint in "
        f"{facts['export_s']:.1f} s and loaded into the reference server, which took {facts['load_s']:.1f} s to "
        "start). One httpx client per server; default response fields (all) unless stated. Median and p90 of "
        f"{runs} runs after one warm-up, runs interleaved (ours, reference, ours, ...). Ratio: ours / reference "
        "(below 1: mliplake is faster). \"Agree\": the same `data_returned` from both (for the walks: the "
        "same ids; for the single entry: the same entry).", "",
        f"Machine: {m['cpu']}, {m['nproc']} cores, {m['ram']}; Python {m['python']}; {m['versions']}; "
        f"git {m['git']}. Load: {load}.", "",
        "| operation | mliplake median (p90) | reference median (p90) | ratio | agree | note (mliplake / reference) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = statistics.median(r["ours"]), statistics.median(r["ref"])
        lines.append(f"| {r['op']} | {_ms(a)} ({_ms(p90(r['ours']))}) | {_ms(b)} ({_ms(p90(r['ref']))}) | "
                     f"{a / b:.2f} | {'yes' if r['agree'] else '**no**'} | {r['note']} |")
    lines += ["", "Reading the table: the reference server keeps its documents in mongomock, in memory, tests each "
              "one against the filter in Python and copies every match before it applies the page limit, so a "
              "page costs in proportion to the number of matches (an unfiltered page: all of them), and, as it "
              "pages by offset, each later page does that work again. mliplake compiles the filter to DuckDB SQL "
              "over the lake's Parquet files. Each request pays a fixed cost: the caller's views, the lake's "
              "snapshot, and decoding the column chunks that hold the rows it returns. That is why a single "
              "entry, or a page of a rare filter, can take longer than in the in-memory reference at this size. "
              "`links.next` is a keyset cursor, so a late page costs what the first one does. Both servers build "
              "each entry's JSON in Python.", ""]
    return "\n".join(lines)


def _ms(v: float) -> str:
    return f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms"


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-reference":
        serve_reference(Path(sys.argv[2]), int(sys.argv[3]))
        return
    from perfdoc import write_section

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/performance.md alone")
    a = ap.parse_args()
    rows, facts = measure(a.frames, a.runs)
    section = render(rows, facts, a.frames, a.runs)
    print(section)
    if not a.no_doc:
        write_section(ROOT / "docs" / "performance.md", "## OPTIMADE", section)


if __name__ == "__main__":
    main()
