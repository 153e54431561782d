"""API benchmark: what the HTTP layer costs over the library, measured side by side in one run.

Builds (once, cached under ``bench/_work/api/lake-<N>``) a local lake of N synthetic
configurations (bench/ingest.py's generator: MPtrj-like sizes and compositions, energies and
forces) in one deposit, starts ``mliplake serve`` (uvicorn, one process, on 127.0.0.1) over it, and
measures each API operation against its anchor, the same work done by the library in this process
for the same principal (anonymous: both sides go through the same access rules):

- ``count`` and ``search``: ``GET /api/v1/count?filter=...`` vs ``lake.count(...)``, and a
  100-row ``GET /api/v1/search`` (a page and the total matching, ``meta.data_returned``) vs
  ``lake.search(..., limit=100)`` plus ``lake.count(...)``: p50 and p99 of ``4 x --runs``,
  and requests/s with 1, 8 and 32 concurrent clients;
- ``page 1`` and ``deep page``: a 1,000-row page of ``GET /api/v1/search`` at the start and after
  following the cursor to row ``--deep`` vs DuckDB's ``LIMIT 1000 OFFSET k`` at the same depth (the
  offset paging that other portals cap at 10,000);
- ``export extxyz`` / ``export parquet``: ``GET /api/v1/export`` of every configuration, streamed
  to a file, vs ``lake.export(...)`` to a file; the two files are compared byte for byte (sha256);
  the server's peak RSS growth during the download (psutil, sampled every 20 ms) says whether
  memory stays flat.  With ``--big-lake PATH`` (e.g. the 1.5 M-configuration lake of
  bench/query.py, ``bench/_work/query_lake``) the exports are measured on that lake too, so the
  memory growth can be compared across sizes (``--big-formats``: Parquet by default; an extxyz
  export writes about 1,500 frames/s, the extxyz package's writer, so 1.5 M frames take minutes);
- ``upload``: a tus upload of the N-frame extxyz file with ``mliplake.Client.upload`` vs
  ``shutil.copyfile`` of the same file (disk speed: the floor).

Ratios are API / anchor for times (1.0: no overhead).  Targets: added p50 latency under 5 ms for
count and search; a deep page as fast as the first (cursor paging: no growth with depth); export at
least 0.8x the library's speed, byte-identical, with server memory growth that does not grow with the
size of the download (at most 1.5x from the bench lake to the big one); upload at least 0.5x a file copy's speed.  OPTIMADE against the reference
server is measured by bench/optimade_reference.py.

    .venv/bin/python bench/api.py [--frames 200000] [--runs 15] [--deep 100000] [--big-lake DIR] [--no-doc]
"""
from __future__ import annotations

import argparse
import hashlib
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
from mliplake.access import ANONYMOUS  # noqa: E402

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


SERVER_CPU = [0.0]  # CPU seconds of the servers this run started, added when each stops


def busy_cpus() -> float:
    """CPU seconds every process on the machine has used (from /proc/stat) less this run's own."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    own = sum(os.times()[:4]) + SERVER_CPU[0]
    return busy - own


def stop(proc: subprocess.Popen) -> None:
    try:
        t = psutil.Process(proc.pid).cpu_times()
        SERVER_CPU[0] += t.user + t.system
    except psutil.Error:
        pass
    proc.terminate()
    proc.wait(30)


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


def latency(rows: list[dict], name: str, api_fn, lib_fn, runs: int) -> None:
    api_t, lib_t = timings_ms(api_fn, runs * 4), timings_ms(lib_fn, runs * 4)
    api, lib = statistics.median(api_t), statistics.median(lib_t)
    rows.append({"op": f"{name} (p50)", "api": api, "anchor": lib, "anchor_name": "library", "unit": "ms",
                 "added": api - lib, "note": f"added {api - lib:.1f} ms"})
    rows.append({"op": f"{name} (p99)", "api": p99(api_t), "anchor": p99(lib_t), "anchor_name": "library",
                 "unit": "ms", "note": f"added {p99(api_t) - p99(lib_t):.1f} ms"})


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def exports(rows: list[dict], lake_dir: Path, label: str, formats: tuple[str, ...] = ("extxyz", "parquet")) -> None:
    """Every configuration through GET /export and through lake.export, compared byte for byte."""
    lake = mliplake.Lake(lake_dir).as_principal(ANONYMOUS)
    n = lake.count()
    proc, url = serve(lake_dir)
    try:
        with httpx.Client(base_url=url, timeout=3600) as http:
            for fmt in formats:
                ext = {"extxyz": "xyz"}.get(fmt, fmt)
                out, mine = WORK / f"api-export.{ext}", WORK / f"lib-export.{ext}"
                t0 = time.perf_counter()
                with PeakRSS(proc.pid) as mem, http.stream("GET", "/api/v1/export", params={"format": fmt}) as r, \
                        open(out, "wb") as f:
                    r.raise_for_status()
                    for chunk in r.iter_bytes(1 << 20):
                        f.write(chunk)
                api_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                lake.export(None, mine, format=fmt, progress=False)
                lib_s = time.perf_counter() - t0
                size = out.stat().st_size
                same = sha256(out) == sha256(mine)
                rows.append({"op": f"export {fmt}, {label} ({n:,} configurations, {size / 2**20:,.0f} MB)",
                             "api": api_s, "anchor": lib_s, "anchor_name": "lake.export", "unit": "s",
                             "speed": lib_s / api_s, "memory": mem.growth_mb, "same": same,
                             "note": f"{size / 2**20 / api_s:.0f} MB/s; server memory +{mem.growth_mb:.0f} MB; "
                                     f"bytes {'equal' if same else '**differ**'}"})
                out.unlink()
                mine.unlink()
                Path(str(mine) + ".manifest.yaml").unlink(missing_ok=True)
    finally:
        stop(proc)


def measure(frames: int, runs: int, deep: int, big_lake: Path | None, big_formats: tuple[str, ...]) -> list[dict]:
    data, lake_dir = build(frames)
    lake = mliplake.Lake(lake_dir).as_principal(ANONYMOUS)
    proc, url = serve(lake_dir)
    http = httpx.Client(base_url=url, timeout=600)
    rows: list[dict] = []
    cols = "id,dataset,chemical_formula_reduced,nsites,energy_per_atom"
    try:
        latency(rows, f"count `{FILTER}`", lambda: http.get("/api/v1/count", params={"filter": FILTER}).raise_for_status(),
                lambda: lake.count(FILTER), runs)
        latency(rows, f"search `{FILTER}`, 100 rows and the total",
                lambda: http.get("/api/v1/search", params={"filter": FILTER, "limit": 100, "columns": cols}).raise_for_status(),
                # the API's page carries the total (meta.data_returned): the library does both too
                lambda: (lake.search(FILTER, columns=cols.split(","), limit=100), lake.count(FILTER)), runs)
        lib = statistics.median(timings_ms(lambda: lake.count(FILTER), runs))
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
        sql_cols = "id, dataset, chemical_formula_reduced, nsites, energy_per_atom, max_force"
        off0 = median_ms(lambda: con.execute(f"SELECT {sql_cols} FROM configurations ORDER BY dataset, config_id "
                                             "LIMIT 1000").fetchall(), runs)
        offk = median_ms(lambda: con.execute(f"SELECT {sql_cols} FROM configurations ORDER BY dataset, config_id "
                                             f"LIMIT 1000 OFFSET {seen}").fetchall(), runs)
        rows.append({"op": "page 1 (1,000 rows)", "api": first, "anchor": off0, "anchor_name": "SQL LIMIT", "unit": "ms"})
        rows.append({"op": f"page at row {seen:,} (cursor vs OFFSET)", "api": deep_ms, "anchor": offk,
                     "anchor_name": "SQL OFFSET", "unit": "ms"})

        client = mliplake.Client(url, token=_token(mliplake.Lake(lake_dir)), progress=False)
        t0 = time.perf_counter()
        client.upload(data)
        up_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        shutil.copyfile(data, WORK / "copy.xyz")
        cp_s = time.perf_counter() - t0
        mb = data.stat().st_size / 2**20
        rows.append({"op": f"upload {mb:.0f} MB (tus)", "api": up_s, "anchor": cp_s, "anchor_name": "file copy",
                     "unit": "s", "speed": cp_s / up_s, "note": f"{mb / up_s:.0f} MB/s"})
    finally:
        http.close()
        stop(proc)
    exports(rows, lake_dir, "bench lake")
    if big_lake is not None:
        exports(rows, big_lake, big_lake.name, big_formats)
    return rows


def _token(lake: mliplake.Lake) -> str:
    from mliplake.accounts import Accounts, accounts_url

    acc = Accounts(accounts_url(lake.settings, lake))
    if not any(u["name"] == "bench" for u in acc.users()):
        acc.add_user("bench", roles=["depositor"], actor="bench")
    token = acc.create_token("bench", scope="write", actor="bench")[1]
    acc.close()
    return token


def targets(rows: list[dict]) -> list[str]:
    def met(ok: bool) -> str:
        return "met" if ok else "**NOT met**"

    out = []
    for r in rows:
        if "added" in r:
            out.append(f"- {r['op']}: added {r['added']:.1f} ms (target under 5 ms): {met(r['added'] < 5)}")
    ex = [r for r in rows if "memory" in r]
    for r in ex:
        out.append(f"- {r['op']}: {r['speed']:.2f}x the library's speed (target at least 0.8x): {met(r['speed'] >= 0.8)}; "
                   f"bytes equal to the library's export: {met(r['same'])}")
    for fmt in ("extxyz", "parquet"):
        sized = sorted((int(r["op"].split("(")[1].split(" ")[0].replace(",", "")), r["memory"])
                       for r in ex if r["op"].startswith(f"export {fmt}"))
        if len(sized) > 1:
            (n0, m0), (n1, m1) = sized[0], sized[-1]
            out.append(f"- Server memory, {fmt} export: +{m0:.0f} MB for {n0:,} configurations, +{m1:.0f} MB for "
                       f"{n1:,} ({n1 / n0:.0f}x the rows; flat: at most 1.5x the memory): {met(m1 <= 1.5 * m0)}")
    for r in rows:
        if r["op"].startswith("upload"):
            out.append(f"- {r['op']}: {r['speed']:.2f}x a file copy's speed (target at least 0.5x): {met(r['speed'] >= 0.5)}")
    return out


def render(rows: list[dict], frames: int, runs: int, load: float) -> str:
    m = machine(("mliplake", "duckdb", "fastapi", "uvicorn", "httpx"))
    lines = ["## API", "", "_Generated by `bench/api.py`; do not edit by hand._", "",
             f"`bench/api.py --frames {frames} --runs {runs}`: `mliplake serve` (one uvicorn process on 127.0.0.1) "
             "against the same work done by the library in the measuring process, both as the anonymous "
             "caller. Ratio: API / anchor.", "",
             f"Machine: {m['cpu']}, {m['nproc']} cores, {m['ram']}; Python {m['python']}; {m['versions']}; git {m['git']}. "
             f"Other processes kept {load:.2f} of the CPUs busy on average during the run.",
             "", "| operation | API | anchor | ratio | note |", "|---|---|---|---|---|"]
    for r in rows:
        unit = r["unit"]
        fmt = (lambda v: f"{v:.1f} ms") if unit == "ms" else (lambda v: f"{v:.2f} s")
        lines.append(f"| {r['op']} | {fmt(r['api'])} | {fmt(r['anchor'])} ({r['anchor_name']}) | "
                     f"{r['api'] / r['anchor']:.2f} | {r.get('note', '')} |")
    lines += ["", "### Targets", "", *targets(rows), "",
              "Reading the table: a count or a page through the API costs the library's time plus the HTTP "
              "round trip; the cursor page deep in the result costs what the first page costs, where offset "
              "paging grows with the depth; an export streams batch by batch in the order rows are stored, "
              "so the server holds a few batches at a time, whatever the size of the download.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--deep", type=int, default=100_000)
    ap.add_argument("--big-lake", type=Path, help="also export this lake (e.g. bench/_work/query_lake)")
    ap.add_argument("--big-formats", default="parquet",
                    help="formats exported from the big lake (comma-separated; extxyz writes ~1,500 frames/s)")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave docs/performance.md alone")
    a = ap.parse_args()
    os.environ.setdefault("MLIPLAKE_STATE_DIR", str(WORK / "state"))
    busy0 = busy_cpus()
    t0 = time.monotonic()
    rows = measure(a.frames, a.runs, a.deep, a.big_lake, tuple(a.big_formats.split(",")))
    load = max(0.0, busy_cpus() - busy0) / max(time.monotonic() - t0, 1e-9)
    section = render(rows, a.frames, a.runs, load)
    print(section)
    if not a.no_doc:
        write_section(ROOT / "docs" / "performance.md", "## API", section)


if __name__ == "__main__":
    main()
