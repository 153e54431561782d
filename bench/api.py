"""API benchmark: what the HTTP layer costs over the library, measured side by side in one run.

Builds (once, cached under ``bench/_work/api/lake-<N>``) a local lake of N synthetic
configurations (bench/ingest.py's generator: MPtrj-like sizes and compositions, energies and
forces) in one deposit, starts ``mliplake serve`` (uvicorn, one process, on 127.0.0.1) over it, and
measures each API operation against its anchor, the same work done by the library in this process:

- ``count``: ``GET /api/v1/count?filter=nsites < 20`` vs ``lake.count(...)`` (median of ``--runs``);
- ``page 1`` and ``deep page``: a 1,000-row page of ``GET /api/v1/search`` at the start and after
  following the cursor to row ``--deep`` vs DuckDB's ``LIMIT 1000 OFFSET k`` at the same depth (the
  offset paging that other portals cap at 10,000);
- ``export extxyz`` / ``export parquet``: ``GET /api/v1/export`` of every configuration, streamed
  to a file, vs ``lake.export(...)`` to a file; the server's peak RSS growth during the download
  (psutil, sampled every 20 ms) says whether memory stays flat;
- ``upload``: a tus upload of the N-frame extxyz file with ``mliplake.Client.upload`` vs
  ``shutil.copyfile`` of the same file (disk speed: the floor).

Ratios are API / anchor (1.0: no overhead).  Targets: count and a page within 50 ms of the
library; a deep page as fast as the first (cursor paging: no growth with depth); export at least
0.5x the library's speed with server memory growth under 200 MB whatever N; upload at least 50 MB/s.

    .venv/bin/python bench/api.py [--frames 200000] [--runs 15] [--deep 100000] [--no-doc]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

import httpx  # noqa: E402
import psutil  # noqa: E402
from perfdoc import machine, write_section  # noqa: E402

import mliplake  # noqa: E402

WORK = HERE / "_work" / "api"
FILTER = "nsites < 20"


def build(frames: int) -> tuple[Path, Path]:
    from ingest import generate

    WORK.mkdir(parents=True, exist_ok=True)
    data = WORK / f"frames-{frames}.xyz"
    if not data.exists():
        generate(data, frames, seed=7)
    lake_dir = WORK / f"lake-{frames}"
    if not (lake_dir / ".built").exists():
        shutil.rmtree(lake_dir, ignore_errors=True)
        t0 = time.perf_counter()
        mliplake.Lake(lake_dir).deposit([data], dataset="bench", progress=True)
        print(f"lake of {frames} configurations built in {time.perf_counter() - t0:.1f} s", flush=True)
        (lake_dir / ".built").touch()
    return data, lake_dir


def serve(lake_dir: Path) -> tuple[subprocess.Popen, str]:
    from support import start_api

    return start_api(lake_dir, {"MLIPLAKE_API_RATE": "1e9", "MLIPLAKE_API_BURST": "1000000000",
                                "MLIPLAKE_API_PAGE_MAX": "1000"})


def timings_ms(fn, runs: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)


def median_ms(fn, runs: int) -> float:
    return statistics.median(timings_ms(fn, runs))


def p99(times: list[float]) -> float:
    return times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]


def throughput(url: str, path: str, params: dict, clients: int, seconds: float = 5.0) -> float:
    """Requests per second that ``clients`` concurrent clients get, each waiting for its answer."""
    done = [0] * clients
    end = time.perf_counter() + seconds

    def run(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.perf_counter() < end:
                c.get(path, params=params).raise_for_status()
                done[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


class PeakRSS:
    """The peak resident memory of a process while a block runs, above its level before."""

    def __init__(self, pid: int) -> None:
        self.p = psutil.Process(pid)
        self.base = self.peak = 0

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self.p.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.p.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def measure(frames: int, runs: int, deep: int) -> list[dict]:
    data, lake_dir = build(frames)
    lake = mliplake.Lake(lake_dir)
    n = lake.count()
    proc, url = serve(lake_dir)
    http = httpx.Client(base_url=url, timeout=600)
    rows: list[dict] = []
    try:
        api_t = timings_ms(lambda: http.get("/api/v1/count", params={"filter": FILTER}).raise_for_status(), runs * 4)
        lib_t = timings_ms(lambda: lake.count(FILTER), runs * 4)
        api, lib = statistics.median(api_t), statistics.median(lib_t)
        rows.append({"op": f"count `{FILTER}` (p50)", "api": api, "anchor": lib, "anchor_name": "lake.count",
                     "unit": "ms", "note": f"added {api - lib:.1f} ms"})
        rows.append({"op": f"count `{FILTER}` (p99)", "api": p99(api_t), "anchor": p99(lib_t),
                     "anchor_name": "lake.count", "unit": "ms", "note": f"added {p99(api_t) - p99(lib_t):.1f} ms"})
        for k in (1, 8, 32):
            rps = throughput(url, "/api/v1/count", {"filter": FILTER}, k)
            rows.append({"op": f"count, {k} concurrent client{'s' if k > 1 else ''}", "api": 1000 / rps,
                         "anchor": lib, "anchor_name": "lake.count, 1 caller", "unit": "ms",
                         "note": f"{rps:.0f} requests/s"})

        first = median_ms(lambda: http.get("/api/v1/search", params={"limit": 1000}).raise_for_status(), runs)
        cursor = None
        seen = 0
        while seen < deep:  # follow the cursor to the deep page
            page = http.get("/api/v1/search", params={"limit": 1000, "cursor": cursor} if cursor else {"limit": 1000}).json()
            seen += len(page["data"])
            cursor = page["meta"]["next_cursor"]
            if not cursor:
                break
        deep_ms = median_ms(lambda: http.get("/api/v1/search", params={"limit": 1000, "cursor": cursor}).raise_for_status(),
                            runs)
        con = lake.connection()
        cols = "id, dataset, chemical_formula_reduced, nsites, energy_per_atom, max_force"
        off0 = median_ms(lambda: con.execute(f"SELECT {cols} FROM configurations ORDER BY dataset, config_id "
                                             "LIMIT 1000").fetchall(), runs)
        offk = median_ms(lambda: con.execute(f"SELECT {cols} FROM configurations ORDER BY dataset, config_id "
                                             f"LIMIT 1000 OFFSET {seen}").fetchall(), runs)
        rows.append({"op": "page 1 (1,000 rows)", "api": first, "anchor": off0, "anchor_name": "SQL LIMIT", "unit": "ms"})
        rows.append({"op": f"page at row {seen:,} (cursor vs OFFSET)", "api": deep_ms, "anchor": offk,
                     "anchor_name": "SQL OFFSET", "unit": "ms"})

        for fmt, ext in (("extxyz", "xyz"), ("parquet", "parquet")):
            out = WORK / f"api-export.{ext}"
            t0 = time.perf_counter()
            with PeakRSS(proc.pid) as mem, http.stream("GET", "/api/v1/export", params={"format": fmt}) as r, \
                    open(out, "wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
            api_s = time.perf_counter() - t0
            size = out.stat().st_size
            t0 = time.perf_counter()
            lake.export(None, WORK / f"lib-export.{ext}", format=fmt)
            lib_s = time.perf_counter() - t0
            rows.append({"op": f"export {fmt} ({n:,} configurations, {size / 2**20:.0f} MB)", "api": api_s,
                         "anchor": lib_s, "anchor_name": "lake.export", "unit": "s",
                         "note": f"server memory +{mem.growth_mb:.0f} MB"})

        client = mliplake.Client(url, token=_token(lake), progress=False)
        t0 = time.perf_counter()
        client.upload(data)
        up_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        shutil.copyfile(data, WORK / "copy.xyz")
        cp_s = time.perf_counter() - t0
        mb = data.stat().st_size / 2**20
        rows.append({"op": f"upload {mb:.0f} MB (tus)", "api": up_s, "anchor": cp_s, "anchor_name": "file copy",
                     "unit": "s", "note": f"{mb / up_s:.0f} MB/s"})
    finally:
        http.close()
        proc.terminate()
        proc.wait(30)
    return rows


def _token(lake: mliplake.Lake) -> str:
    from mliplake.accounts import Accounts, accounts_url

    acc = Accounts(accounts_url(lake.settings, lake))
    if not any(u["name"] == "bench" for u in acc.users()):
        acc.add_user("bench", roles=["depositor"], actor="bench")
    token = acc.create_token("bench", scope="write", actor="bench")[1]
    acc.close()
    return token


def render(rows: list[dict], frames: int, runs: int) -> str:
    m = machine(("mliplake", "duckdb", "fastapi", "uvicorn", "httpx"))
    lines = ["## API", "",
             f"`bench/api.py --frames {frames} --runs {runs}`: `mliplake serve` (one uvicorn process on 127.0.0.1) "
             "against the same work done by the library in the measuring process. Ratio: API / anchor.", "",
             f"Machine: {m['cpu']}, {m['nproc']} cores, {m['ram']}; Python {m['python']}; {m['versions']}; git {m['git']}.",
             "", "| operation | API | anchor | ratio | note |", "|---|---|---|---|---|"]
    for r in rows:
        unit = r["unit"]
        fmt = (lambda v: f"{v:.1f} ms") if unit == "ms" else (lambda v: f"{v:.2f} s")
        lines.append(f"| {r['op']} | {fmt(r['api'])} | {fmt(r['anchor'])} ({r['anchor_name']}) | "
                     f"{r['api'] / r['anchor']:.2f} | {r.get('note', '')} |")
    lines += ["", "Reading the table: a count or a page through the API costs the library's time plus the HTTP "
              "round trip and building the request's views; the cursor page deep in the result costs what the "
              "first page costs, where offset paging grows with the depth; an export streams batch by batch, so "
              "the server's memory does not grow with the size of the download.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--deep", type=int, default=100_000)
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/performance.md alone")
    a = ap.parse_args()
    os.environ.setdefault("MLIPLAKE_STATE_DIR", str(WORK / "state"))
    rows = measure(a.frames, a.runs, a.deep)
    section = render(rows, a.frames, a.runs)
    print(section)
    if not a.no_doc:
        write_section(ROOT / "docs" / "performance.md", "## API", section)


if __name__ == "__main__":
    main()
