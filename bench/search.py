"""Search benchmark: indexing the lake into OpenSearch, and the two search engines side by side.

Builds (once, cached under ``bench/_work/search_lake``) a lake of >= 100,000 configurations by
copying whole deposits (their records, raw manifests and shards, paths kept) out of the
1.5M-configuration lake of ``bench/query.py`` (``bench/_work/query_lake``; run that first).  By
default: the deposits generated from sources 0 and 3 (datasets ds0 and ds3), 2 x 50,000.

Against osmem-server (an in-memory OpenSearch-API test server, started on 127.0.0.1), or a real
OpenSearch when ``$MLIPLAKE_TEST_OPENSEARCH_URL`` is set (used as is; nothing is started), it
measures:

- ``search.index_lake(lake, client)`` end to end (new index, streaming bulk from the lake's
  Parquet, refresh, alias swap): documents/s;
- plain ``opensearchpy.helpers.bulk`` of the same documents, pre-built in memory with
  ``search.documents`` over the same rows, into a fresh index with the same settings and
  mappings, then a refresh: documents/s.  Our overhead ratio is the first over the second;
- the ratio to abcd's reported 80-130 documents/s;
- count and fetch-100 latency (median of N after a warm-up) of ``OpenSearchEngine`` and
  ``DuckDBEngine`` on the same lake for six filters of ``bench/query.py``, checking that the
  counts agree.

Results go to the ``## Search`` section of ``docs/performance.md``.

Usage::

    .venv/bin/python bench/search.py             # build once (cached), measure, write the doc
    .venv/bin/python bench/search.py --no-doc    # measure and print only
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from perfdoc import write_section  # noqa: E402
from query import FILTERS, SEARCH_COLUMNS, machine, timed  # noqa: E402  (bench/query.py)

WORK = ROOT / "bench" / "_work"
SOURCE_LAKE = WORK / "query_lake"
LAKE_DIR = WORK / "search_lake"
DOC = ROOT / "docs" / "performance.md"
SECTION = "## Search"
MIN_CONFIGS = 100_000
ABCD_DOCS_S = (80.0, 130.0)  # abcd's reported indexing rate (documents/s)
OVERHEAD_TARGET = 0.8
ABCD_TARGET = 50.0
FILTER_NAMES = ("Cu-Ni binaries", "SiO2 (reduced formula)", "Li, small cells", "relaxed, large",
                "ds3, converged forces", "hot MD")


# ----------------------------------------------------------------------------- the lake


def copy_deposits(src: Path, dst: Path, sources: list[str]) -> int:
    """Copy the deposits whose (single) source file is in ``sources`` from lake ``src`` to ``dst``."""
    records = [(p, json.loads(p.read_text())) for p in sorted((src / "tables" / "deposits").glob("*.json"))]
    chosen = [(p, r) for p, r in records if r["files"][0]["name"] in sources]
    if len(chosen) != len(sources):
        raise SystemExit(f"found {len(chosen)} of {len(sources)} deposits in {src}; run bench/query.py first")
    if dst.exists():
        shutil.rmtree(dst)
    for path, rec in chosen:
        for rel in [*rec["shards"], rec["raw"]]:
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (src / rel).is_dir() else shutil.copy2)(src / rel, target)
        (dst / "tables" / "deposits").mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst / "tables" / "deposits" / path.name)
    return sum(r["stored"] for _, r in chosen)


def ensure_lake(sources: list[str]) -> Any:
    """The cached search lake (rebuilt when the chosen sources change); at least MIN_CONFIGS rows."""
    from mliplake import Lake

    stamp = LAKE_DIR / ".sources"
    if not (stamp.exists() and stamp.read_text() == ",".join(sources)):
        print(f"copying deposits {sources} from {SOURCE_LAKE} -> {LAKE_DIR}", flush=True)
        copy_deposits(SOURCE_LAKE, LAKE_DIR, sources)
        stamp.write_text(",".join(sources))
    lake = Lake(LAKE_DIR)
    n = lake.count()
    if n < MIN_CONFIGS:
        raise SystemExit(f"the search lake has {n:,} configurations, fewer than {MIN_CONFIGS:,}")
    return lake


# ----------------------------------------------------------------------------- the server


@dataclass
class Server:
    url: str
    label: str
    handle: Any = None  # the OsmemServer we started, if any

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def start_server() -> Server:
    """``$MLIPLAKE_TEST_OPENSEARCH_URL`` if set, else a fresh osmem-server on 127.0.0.1."""
    external = os.environ.get("MLIPLAKE_TEST_OPENSEARCH_URL")
    if external:
        return Server(external, "")
    from importlib.metadata import version

    from osmem_server import OsmemServer

    handle = OsmemServer.start(addr="127.0.0.1:0", japanese=False)
    return Server(handle.url, f"osmem-server {version('osmem-server')} (in-memory, 127.0.0.1)", handle)


def describe(server: Server, client: Any) -> str:
    """A line naming the server: ours, or what a real cluster reports about itself."""
    if server.label:
        return server.label
    info = client.info()
    v = info.get("version", {})
    return f"{v.get('distribution', 'elasticsearch')} {v.get('number', '?')} at {server.url} (cluster {info.get('cluster_name', '?')})"


# ----------------------------------------------------------------------------- indexing


@dataclass
class Indexing:
    docs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.docs / self.seconds


def time_index_lake(lake: Any, client: Any, alias: str) -> Indexing:
    """mliplake's own path: ``index_lake`` end to end."""
    from mliplake import search

    t0 = time.perf_counter()
    report = search.index_lake(lake, client, alias=alias)
    return Indexing(report.indexed, time.perf_counter() - t0)


def prebuilt_documents(lake: Any, index: str) -> list[dict[str, Any]]:
    """The same documents ``index_lake`` sends, built in memory beforehand (not timed)."""
    from mliplake import search

    return [{**doc, "_index": index} for table in search._rows(lake) for doc in search.documents(table)]


def time_plain_bulk(client: Any, docs: list[dict[str, Any]], index: str) -> Indexing:
    """The floor: ``helpers.bulk`` of ready documents into a fresh index with the same mappings, then a refresh."""
    from opensearchpy import helpers

    from mliplake import search

    client.indices.create(index=index, body={"settings": search.index_settings(), "mappings": search.mappings()})
    t0 = time.perf_counter()
    ok, errors = helpers.bulk(client, docs, chunk_size=search.CHUNK_SIZE, request_timeout=120)
    client.indices.put_settings(index=index, body={"index": {"refresh_interval": None}})
    client.indices.refresh(index=index)
    seconds = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"plain bulk: {len(errors)} errors, e.g. {errors[0]}")
    return Indexing(ok, seconds)


# ----------------------------------------------------------------------------- queries


@dataclass
class QueryRow:
    name: str
    text: str
    os_count: int
    db_count: int
    os_count_ms: float
    db_count_ms: float
    os_fetch_ms: float
    db_fetch_ms: float
    os_rows: int
    db_rows: int
    same_rows: bool


def median_ms(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Median milliseconds of ``runs`` calls after one warm-up; and the last result."""
    times, out = timed(fn, runs)
    return 1000 * statistics.median(times), out


def measure_queries(lake: Any, client: Any, alias: str, runs: int) -> list[QueryRow]:
    """count and fetch-100 on both engines for the chosen filters of bench/query.py."""
    from mliplake.search import DuckDBEngine, OpenSearchEngine

    ose, dbe = OpenSearchEngine(lake, client, alias=alias), DuckDBEngine(lake)
    rows = []
    for f in (f for f in FILTERS if f.name in FILTER_NAMES):
        oc_ms, oc = median_ms(lambda: ose.count(f.text), runs)
        dc_ms, dc = median_ms(lambda: dbe.count(f.text), runs)
        of_ms, ot = median_ms(lambda: ose.search(f.text, SEARCH_COLUMNS, limit=100), runs)
        df_ms, dtab = median_ms(lambda: dbe.search(f.text, SEARCH_COLUMNS, limit=100), runs)
        rows.append(QueryRow(f.name, f.text, oc, dc, oc_ms, dc_ms, of_ms, df_ms, ot.num_rows, dtab.num_rows,
                             ot.to_pylist() == dtab.to_pylist()))
        print(f"  {f.name}: {oc:,} / {dc:,} matches; count {oc_ms:.1f} / {dc_ms:.1f} ms; "
              f"fetch-100 {of_ms:.1f} / {df_ms:.1f} ms (OpenSearch / DuckDB)", flush=True)
    return rows


# ----------------------------------------------------------------------------- report


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "?"


def _met(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def _ms(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def render(ours: Indexing, plain: Indexing, rows: list[QueryRow], server: str, lake_info: str,
           mach: dict[str, str], runs: int, external: bool) -> str:
    overhead = ours.rate / plain.rate
    lo, hi = ours.rate / ABCD_DOCS_S[1], ours.rate / ABCD_DOCS_S[0]
    today = dt.date.today().isoformat()
    out = [
        SECTION,
        "",
        f"_Generated by `bench/search.py` on {today}; do not edit by hand._",
        "",
        f"- Machine: {mach.get('cpu', '?')}, nproc {mach.get('nproc', '?')}, {mach.get('ram', '?')} RAM; "
        f"Python {mach.get('python', '?')}",
        f"- Software: {mach.get('versions', '?')}, opensearch-py {_version('opensearch-py')}; git {mach.get('git', '?')}",
        f"- Server: {server}",
        f"- Lake: {lake_info}",
        "",
        "### Indexing",
        "",
        "| path | documents | seconds | documents/s |",
        "| --- | ---: | ---: | ---: |",
        f"| mliplake `index_lake` (end to end: new index, rows from Parquet, documents, streaming bulk, refresh, "
        f"alias swap) | {ours.docs:,} | {ours.seconds:.1f} | {ours.rate:,.0f} |",
        f"| plain `opensearchpy.helpers.bulk` of the same documents, pre-built in memory (+ refresh) | "
        f"{plain.docs:,} | {plain.seconds:.1f} | {plain.rate:,.0f} |",
        "",
        f"- Overhead ratio, `index_lake` / plain bulk: **{overhead:.2f}x** (target >= {OVERHEAD_TARGET}x: "
        f"{_met(overhead >= OVERHEAD_TARGET)})",
        f"- Against abcd's reported {ABCD_DOCS_S[0]:.0f}-{ABCD_DOCS_S[1]:.0f} documents/s: **{lo:,.0f}x-{hi:,.0f}x** "
        f"(target >= {ABCD_TARGET:.0f}x even at the upper end, i.e. >= {ABCD_TARGET * ABCD_DOCS_S[1]:,.0f} "
        f"documents/s: {_met(lo >= ABCD_TARGET)})",
    ]
    if not external:
        out += [
            "- Caveat: osmem-server is an in-memory test server on the same machine (sharing its CPUs with the "
            "client), not OpenSearch; its own speed bounds both rows, so the overhead ratio says how much of the "
            "end-to-end time is ours rather than the server's, and the abcd comparison is not cluster against "
            "cluster. For a real cluster: `MLIPLAKE_TEST_OPENSEARCH_URL=http://host:9200 .venv/bin/python "
            "bench/search.py` (nothing is started; the server line then names its distribution and version from "
            "`client.info()`).",
        ]
    n_eq = sum(r.os_count == r.db_count for r in rows)
    n_same = sum(r.same_rows for r in rows)
    out += [
        "",
        "### Queries: OpenSearch engine vs DuckDB engine",
        "",
        f"Median of {runs} runs after one warm-up, one `Lake` and one client reused. `count` is `engine.count(f)`; "
        f"fetch-100 is `engine.search(f, columns=[{', '.join(SEARCH_COLUMNS)}], limit=100)` (OpenSearch finds the "
        f"first 100 ids in the lake's order, DuckDB reads their columns from the Parquet). Counts equal on "
        f"**{n_eq} of {len(rows)}** filters; fetch-100 rows identical on **{n_same} of {len(rows)}**.",
        "",
        "| filter | matches (OpenSearch) | matches (DuckDB) | equal | OpenSearch count ms | DuckDB count ms | "
        "OpenSearch fetch-100 ms | DuckDB fetch-100 ms | same 100 rows |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        out.append(f"| `{r.text}` | {r.os_count:,} | {r.db_count:,} | {'yes' if r.os_count == r.db_count else '**NO**'} "
                   f"| {_ms(r.os_count_ms)} | {_ms(r.db_count_ms)} | {_ms(r.os_fetch_ms)} | {_ms(r.db_fetch_ms)} | "
                   f"{'yes' if r.same_rows else '**NO**'} |")
    out += ["", "Reproduce: `.venv/bin/python bench/search.py` (needs `bench/_work/query_lake` from "
                "`bench/query.py`; set `MLIPLAKE_TEST_OPENSEARCH_URL` to measure a real cluster)."]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", default="0,3", help="source indices of bench/query.py's deposits to copy")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per query (after one warm-up)")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    args = ap.parse_args()

    from mliplake import search

    sources = [f"mptrj_like_{int(k):03d}.extxyz" for k in args.sources.split(",")]
    lake = ensure_lake(sources)
    n = lake.count()
    lake_info = (f"{n:,} configurations: {len(sources)} deposits of bench/query.py's synthetic MPtrj-like lake "
                 f"(`{', '.join(sources)}`), copied to `bench/_work/search_lake`")
    print(f"lake: {n:,} configurations", flush=True)
    server = start_server()
    try:
        client = search.connect(server.url, timeout=120)
        label = describe(server, client)
        print(f"server: {label}", flush=True)
        alias = "mliplake-bench-search"
        plain_index = "mliplake-bench-plain"
        client.indices.delete(index=plain_index, ignore_unavailable=True)

        print("index_lake ...", flush=True)
        ours = time_index_lake(lake, client, alias)
        print(f"  {ours.docs:,} docs in {ours.seconds:.1f} s = {ours.rate:,.0f} docs/s", flush=True)

        print("building the documents in memory for the plain bulk ...", flush=True)
        docs = prebuilt_documents(lake, plain_index)
        print(f"plain helpers.bulk of {len(docs):,} documents ...", flush=True)
        plain = time_plain_bulk(client, docs, plain_index)
        del docs
        print(f"  {plain.docs:,} docs in {plain.seconds:.1f} s = {plain.rate:,.0f} docs/s", flush=True)
        client.indices.delete(index=plain_index, ignore_unavailable=True)

        print("queries (OpenSearch / DuckDB):", flush=True)
        rows = measure_queries(lake, client, alias, args.runs)
    finally:
        server.close()
    section = render(ours, plain, rows, label, lake_info, machine(), args.runs, server.handle is None)
    print("\n" + section)
    if not args.no_doc:
        write_section(DOC, SECTION, section)
        print(f"wrote the {SECTION} section of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
