"""Lake benchmark: how opening, counting and fetching grow with the number of deposits, locally and on S3.

Builds (once, cached under ``bench/_work/lake/<kind>-<N>``) lakes of N deposits (default 10, 1,000
and 10,000), on a local folder and on S3, each deposit one small extxyz file (10 frames of 2-12
atoms: the dataset's own element, O and H, in a periodic cell, with energy and forces; seeded by the
deposit's number) made with ``lake.deposit([path], dataset=...)``, one at a time, into 50 datasets
(``ds-0`` .. ``ds-49``, deposit k into ``ds-{k % 50}``), so a filter on one dataset selects 2 % of
the lake.  The build times every deposit: deposits/s at the start and at the end of the build say
whether a deposit's cost grows with the lake.

S3 is moto's server (``moto_server -H 127.0.0.1``, started here) behind a small counting HTTP
proxy (a ``ThreadingHTTPServer`` on 127.0.0.1 in this process that forwards every request to moto
and counts it); ``AWS_ENDPOINT_URL`` points at the proxy, so every request DuckDB (httpfs) and s3fs
make is counted.  The S3 lake's DuckLake catalog is a SQLite file under ``MLIPLAKE_STATE_DIR``
(``bench/_work/lake/state``).  Moto keeps its objects in memory only, so a built S3 lake is cached
as a copy of its bucket and catalog on disk and uploaded into a fresh bucket on the next run.

Measured, for every lake, before and (by default) after ``lake.maintain(retention="0 seconds")``
(DuckLake's ``merge_adjacent_files``: the one-file-per-deposit layout compacted):

- ``open``: ``Lake(url)`` + a first query (``lake.count()``);
- ``count``: ``lake.count('dataset = "ds-7" AND nsites < 10')`` (the dataset column's file
  statistics let DuckLake skip the other datasets' files);
- ``count (element)``: ``lake.count('elements HAS "<ds-7's element>"')`` (same rows, no statistics to skip by);
- ``fetch``: ``lake.search('dataset = "ds-7"', columns=[id, dataset, chemical_formula_reduced,
  nsites, energy_per_atom], limit=100)``;
- ``fetch (any)``: the same columns, ``nsites >= 1`` (every row qualifies: the first 100 in lake order);

each in a **new process** (a fresh interpreter per operation; reported: the operation's wall time
inside it, ``Lake(url)`` included, imports of mliplake/duckdb/pyarrow excluded, and the whole
process from spawn to exit; median of ``--cold-runs``) and in a **warm process** (one interpreter:
``open`` makes a new ``Lake`` each time, the others reuse one ``Lake``; median and p90 of
``--runs`` after one warm-up, operations interleaved).  On S3, the HTTP requests each operation
makes (the proxy's counter, read by the measuring process itself before and after the call).

Growth is the ratio of a time at N deposits to the time at the smallest N.  The targets: locally,
under 100 ms at 10,000 deposits for open, count and fetch in a warm process; on S3 at 1,000
deposits, a warm count under 200 ms and under 50 requests, and a new process (spawn to exit) under
2 s; growth at most logarithmic in deposits (here: time at 10,000 / time at 10 <= 4 =
log(10,000)/log(10), the ratio of a cost proportional to log N; a linear cost gives 1,000).

Results go to the ``## Lake`` section of ``docs/performance.md``.

Usage::

    .venv/bin/python bench/lake.py                                 # build once (cached), measure, write the doc
    .venv/bin/python bench/lake.py --deposits 10,100 --no-doc      # a quick check
    .venv/bin/python bench/lake.py --storage local --build-only    # only build (and cache) the local lakes
    .venv/bin/python bench/lake.py --probe-only results.json --json results-probe.json
                                        # only the deposit probe, on the cached lakes, into an earlier run's results
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import http.client
import http.server
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import perfdoc  # noqa: E402
from perfdoc import write_section  # noqa: E402

SRC = ROOT / "src"
WORK = ROOT / "bench" / "_work" / "lake"
DOC = ROOT / "docs" / "performance.md"
SECTION = "## Lake"
PY = sys.executable

DATASETS = 50
FRAMES = 10
GEN_VERSION = 1  # of the deposit generator (part of the cache key)
# each dataset's own element (none of them O or H): an element filter that hits exactly one dataset
SIGNATURE = ["Li", "Be", "B", "C", "N", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "K", "Ca", "Sc", "Ti", "V",
             "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Rb", "Sr", "Y", "Zr", "Nb",
             "Mo", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Cs", "Ba", "La", "Ce"]
SEL_DATASET = 7
COLUMNS = ["id", "dataset", "chemical_formula_reduced", "nsites", "energy_per_atom"]
OPS: dict[str, str] = {  # name -> what it runs on `lake` (a Python expression; {ds}: a dataset number)
    "open": "lake.count()",
    "count": "lake.count('dataset = \"ds-{ds}\" AND nsites < 10')",
    "count (element)": "lake.count('elements HAS \"' + SIGNATURE[{ds}] + '\"')",
    "fetch": f"lake.search('dataset = \"ds-{{ds}}\"', columns={COLUMNS!r}, limit=100).num_rows",
    "fetch (any)": f"lake.search('nsites >= 1', columns={COLUMNS!r}, limit=100).num_rows",
}
WARM_ONLY: dict[str, str] = {  # what a warm query costs besides its SQL, and the SQL without the library
    "open (new instance)": "lake.count()",
    "views only": "lake.connection().close()",
    "count, plain SQL": "lake.tables.cursor().execute(\"SELECT count(*) FROM lake.configurations "
                        "WHERE dataset = 'ds-{ds}' AND nsites < 10\").fetchone()[0]",
}
ROTATING = ("count", "fetch")  # also measured warm with another dataset every run, each on a Lake of its own
TARGET_OPS = ("open", "count", "fetch")
LOCAL_MS, S3_COUNT_MS, S3_COUNT_REQ, S3_NEW_PROCESS_S = 100.0, 200.0, 50, 2.0


# ----------------------------------------------------------------------------- deposits


def deposit_text(k: int) -> str:
    """Deposit ``k``'s extxyz: 10 frames, 2-12 atoms (ds element, O, H), deterministic in k."""
    import numpy as np

    rng = np.random.default_rng([GEN_VERSION, k])
    sig = SIGNATURE[k % DATASETS]
    out = []
    for _ in range(FRAMES):
        n = int(rng.integers(2, 13))
        species = [sig, "O"] + [str(s) for s in rng.choice([sig, "O", "H"], n - 2)]
        a = 2.2 * n ** (1 / 3) + 2.0
        pos = rng.random((n, 3)) * a
        forces = rng.normal(0.0, 0.3, (n, 3))
        energy = -3.0 * n + rng.normal(0.0, 0.5)
        out.append(str(n))
        out.append(f'Lattice="{a:.6f} 0.0 0.0 0.0 {a:.6f} 0.0 0.0 0.0 {a:.6f}" '
                   f'Properties=species:S:1:pos:R:3:forces:R:3 energy={energy:.8f} pbc="T T T"')
        for s, p, f in zip(species, pos, forces):
            out.append(f"{s} {p[0]:.8f} {p[1]:.8f} {p[2]:.8f} {f[0]:.8f} {f[1]:.8f} {f[2]:.8f}")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- the counting proxy


class CountingProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to ``upstream`` (moto) and counts it; ``/__bench__/count`` reads the
    counter (and ``/__bench__/reset`` resets it) without being counted or forwarded."""

    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream_port
        self.lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> CountingProxy:
        threading.Thread(target=self.serve_forever, daemon=True, name="counting-proxy").start()
        return self


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

    def log_message(self, *args: Any) -> None:
        pass

    def _control(self) -> None:
        srv: CountingProxy = self.server  # type: ignore[assignment]
        with srv.lock:
            body = json.dumps({"total": sum(srv.counts.values()), **srv.counts}).encode()
            if self.path.startswith("/__bench__/reset"):
                srv.counts.clear()
        self.send_response_only(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        if self.path.startswith("/__bench__/"):
            return self._control()
        srv: CountingProxy = self.server  # type: ignore[assignment]
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body: bytes | None = b"".join(chunks)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
        skip = {"transfer-encoding", "connection", "keep-alive", "proxy-connection", "expect", "content-length"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        with srv.lock:
            srv.counts[self.command] += 1
        for attempt in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", srv.upstream, timeout=300)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                if attempt == 2:
                    raise
                time.sleep(0.1)
            finally:
                conn.close()
        self.send_response_only(resp.status, resp.reason)
        length_hdr = None
        for k, v in resp.getheaders():
            if k.lower() in ("transfer-encoding", "connection", "keep-alive"):
                continue
            if k.lower() == "content-length":
                length_hdr = v
                continue
            self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", length_hdr or "0")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's server on 127.0.0.1 behind a counting proxy; sets the AWS variables for children."""

    def __init__(self, log: Path) -> None:
        port = free_port()
        exe = shutil.which("moto_server", path=os.path.dirname(PY)) or "moto_server"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=open(log, "wb"),
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError(f"moto server did not start: {log.read_text()}") from None
                time.sleep(0.1)
        self.moto_url = f"http://127.0.0.1:{port}"
        self.proxy = CountingProxy(port).start()
        os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.proxy.url,
                           "BENCH_PROXY": self.proxy.url})

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.moto_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def stop(self) -> None:
        self.proxy.shutdown()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def proxy_count(reset: bool = False) -> int:
    """The proxy's request counter (0 when there is no proxy)."""
    url = os.environ.get("BENCH_PROXY")
    if not url:
        return 0
    with urllib.request.urlopen(f"{url}/__bench__/{'reset' if reset else 'count'}", timeout=30) as r:
        return int(json.loads(r.read())["total"])


# ----------------------------------------------------------------------------- where lakes live
#
# A lake is named by its id: "<kind>-<deposits>" (one commit per deposit), or
# "<kind>-<deposits>-bulk<B>" (B deposits registered per commit by the bench, see build_child).


def lid_of(kind: str, n: int, batch: int = 1) -> str:
    return f"{kind}-{n}" + (f"-bulk{batch}" if batch > 1 else "")


def parse_lid(lid: str) -> tuple[str, int, int]:
    parts = lid.split("-")
    return parts[0], int(parts[1]), int(parts[2][4:]) if len(parts) > 2 else 1


def bucket_of(lid: str) -> str:
    return "bench-lake-" + lid.split("-", 1)[1]


def lake_url(lid: str) -> str:
    return str(WORK / lid / "lake") if lid.startswith("local") else f"s3://{bucket_of(lid)}/lake"


def s3_catalog_dir(lid: str) -> Path:
    """The per-lake folder of the S3 lake's SQLite catalog under MLIPLAKE_STATE_DIR."""
    sys.path.insert(0, str(SRC))
    from mliplake.settings import Settings

    cat = Settings(state_dir=str(WORK / "state")).catalog_url(lake_url(lid), f"{bucket_of(lid)}/lake", False)
    return Path(cat.partition(":")[2]).parent


def meta_path(lid: str) -> Path:
    return WORK / f"{lid}.json"


def cache_key(lid: str) -> dict[str, Any]:
    kind, n, batch = parse_lid(lid)
    key = {"kind": kind, "deposits": n, "datasets": DATASETS, "frames": FRAMES, "generator": GEN_VERSION}
    return key | ({"batch": batch} if batch > 1 else {})


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MLIPLAKE_STATE_DIR"] = str(WORK / "state")
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("MLIPLAKE_CATALOG", None)
    env.pop("MLIPLAKE_LAKE", None)
    return env


def run_child(*args: str) -> None:
    subprocess.run([PY, __file__, *args], env=child_env(), check=True)


# ----------------------------------------------------------------------------- building (in a child process)


def build_child(lid: str, log: Path) -> None:
    """Deposits 0..n-1 into the lake with ``lake.deposit``, one line per deposit in ``log`` (resumes).

    Bulk (``-bulk<B>``): every deposit still runs the library's deposit path up to its commit
    (hash and copy the raw file, parse, normalise, stage the rows as Parquet, the manifest), but
    the commit (``ingest._commit``) is replaced: every B deposits, one DuckLake transaction copies
    their staged rows into the table (``INSERT ... SELECT * FROM read_parquet(...)``, as the
    commit does), inserts their records (the library's own ``ingest._record_row``) and the
    policies of new datasets, then the staged files go.  Left out: the commit's per-deposit
    statements (previous version out, duplicate check), which find nothing in these lakes (new
    deposit ids; random positions, no duplicates: the build checks the count), and the deposit's
    own compaction of small files.  The lake has the same rows and records in one data file per
    B deposits; one snapshot per B deposits."""
    import mliplake.ingest.deposit as ingest
    from mliplake import Lake
    from mliplake.access import make_policy
    from mliplake.storage.tables import arrow_rows

    kind, n, batch = parse_lid(lid)
    done = sum(1 for _ in log.open()) if log.exists() else 0
    lake = Lake(lake_url(lid))
    collected: list[tuple[Any, Any, list[str], Any]] = []
    if batch > 1:
        def collect(lake_: Any, report: Any, m: Any, files: list[str], quarantine: Any, replace: bool = False) -> None:
            if m is not None:
                lake_.write_json(f"{lake_.raw_dir(report.deposit_id)}/manifest.json", m.to_dict())
            collected.append((report, m, files, quarantine))

        ingest._commit = collect  # type: ignore[assignment]
        ingest._drop_staged = lambda lake_, paths: None  # type: ignore[assignment]  # the flush copies, then drops
        lake.tables.compact_small = lambda: {}  # type: ignore[method-assign]

    def flush() -> None:
        def work(cur: Any) -> None:
            cur.execute("CALL lake.set_commit_message('bench', ?)", [f"{len(collected)} deposits in bulk"])
            uris = [lake.uri(p) for _, _, files, _ in collected for p in files]
            if uris:
                listed = "[" + ", ".join("'" + u.replace("'", "''") + "'" for u in uris) + "]"
                cur.execute(f"INSERT INTO lake.configurations SELECT * FROM read_parquet({listed}, "
                            "hive_partitioning = false)")
            for _, _, _, quarantine in collected:
                if quarantine.num_rows:
                    cur.register("_quarantine", quarantine)
                    cur.execute("INSERT INTO lake.quarantine SELECT * FROM _quarantine")
                    cur.unregister("_quarantine")
            arrow_rows(cur, "deposits", [ingest._record_row(lake, r, m) for r, m, _, _ in collected])
            have = {r[0] for r in cur.execute("SELECT dataset FROM lake.policies").fetchall()}
            for report, m, _, _ in collected:
                if m is not None and report.dataset not in have:
                    have.add(report.dataset)
                    who = lake.principal
                    owner = who.name if who.kind in ("user", "admin") else (m.submitter or who.name)
                    policy = make_policy(report.dataset, m.visibility, owner, getattr(m, "groups", ()),
                                         getattr(m, "embargo_until", None), updated_by=who.name or who.kind)
                    arrow_rows(cur, "policies", [policy.to_row()])

        lake.tables.transaction(work, serialise=True)
        for _, _, files, _ in collected:
            for p in files:
                lake.fs.rm(p)
        collected.clear()

    tmp = WORK / "src" / lid
    tmp.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    pending: list[dict[str, Any]] = []
    with log.open("a") as out:
        for k in range(done, n):
            path = tmp / f"d{k:05d}.extxyz"
            path.write_text(deposit_text(k))
            r0 = proxy_count()
            t0 = time.perf_counter()
            rep = lake.deposit([path], dataset=f"ds-{k % DATASETS}")
            s = time.perf_counter() - t0
            req = proxy_count() - r0  # the counter reads themselves are not counted
            path.unlink()
            if rep.status != "stored" or rep.stored != FRAMES:
                raise SystemExit(f"deposit {k}: {rep.status}, {rep.stored} stored; {rep.error}")
            pending.append({"k": k, "s": round(s, 5), "req": req})
            if batch > 1 and (len(collected) == batch or k == n - 1):
                t0 = time.perf_counter()
                flush()
                pending[-1]["commit_s"] = round(time.perf_counter() - t0, 5)
            if batch == 1 or "commit_s" in pending[-1]:
                for row in pending:
                    out.write(json.dumps(row) + "\n")
                out.flush()
                pending = []
            if (k + 1) % 100 == 0 or k + 1 == n:
                el = time.perf_counter() - t_start
                print(f"  [{lid}] {k + 1:,}/{n:,} deposits, {el:.0f} s, last {s * 1000:.0f} ms", flush=True)
    if batch > 1:
        total = lake.count()
        if total != n * FRAMES:
            raise SystemExit(f"{lid}: {total:,} configurations, expected {n * FRAMES:,}")
    shutil.rmtree(tmp, ignore_errors=True)


def build_stats(log: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in log.open()]
    s = [r["s"] + r.get("commit_s", 0.0) for r in rows]  # a bulk build: the commit on its batch's last deposit
    n = len(s)
    w = max(1, min(100, n // 10))  # the first and last 10 % (at most 100 deposits)
    first = slice(1, w + 1) if n > w else slice(0, w)  # not the very first deposit: it creates the lake
    out = {"deposits": n, "seconds": sum(s), "window": w, "first_s": s[0],
           "start_rate": w / sum(s[first]), "end_rate": w / sum(s[-w:]),
           "start_ms": statistics.median(s[first]) * 1000, "end_ms": statistics.median(s[-w:]) * 1000}
    if any(r.get("req") for r in rows):
        out["start_req"] = statistics.median(r["req"] for r in rows[first])
        out["end_req"] = statistics.median(r["req"] for r in rows[-w:])
    step = max(1, n // 10)  # deposits/s along the build (every 10 %)
    out["profile"] = [(i + step, step / sum(s[i:i + step])) for i in range(0, n - step + 1, step)]
    return out


def tree_size(path: Path) -> tuple[int, int]:
    files = size = 0
    for p in path.rglob("*"):
        if p.is_file():
            files += 1
            size += p.stat().st_size
    return files, size


def _copytree(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)


def save_s3(s3: S3Server, lid: str) -> None:
    """The bucket's objects and the catalog folder, copied under bench/_work (moto forgets them)."""
    from concurrent.futures import ThreadPoolExecutor

    cache = WORK / lid
    if cache.exists():
        shutil.rmtree(cache)
    (cache / "bucket").mkdir(parents=True)
    cli, bucket = s3.client(), bucket_of(lid)
    keys = []
    for page in cli.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]

    def get(key: str) -> None:
        dst = cache / "bucket" / key
        dst.parent.mkdir(parents=True, exist_ok=True)
        cli.download_file(bucket, key, str(dst))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(get, keys))
    _copytree(s3_catalog_dir(lid), cache / "catalog")


def restore(s3: S3Server | None, lid: str) -> None:
    """The lake as built: a local lake copied back from its pristine copy; an S3 lake's objects
    uploaded into an emptied (or new) bucket and its catalog copied back into the state folder."""
    from concurrent.futures import ThreadPoolExecutor

    if lid.startswith("local"):
        _copytree(WORK / f"{lid}.pristine", WORK / lid)
        return
    cache = WORK / lid
    cli, bucket = s3.client(), bucket_of(lid)
    try:
        keys = []
        for page in cli.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys += [o["Key"] for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            cli.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
    except cli.exceptions.NoSuchBucket:
        cli.create_bucket(Bucket=bucket)
    root = cache / "bucket"
    files = [p for p in root.rglob("*") if p.is_file()]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: cli.upload_file(str(p), bucket, p.relative_to(root).as_posix()), files))
    cat = s3_catalog_dir(lid)
    cat.parent.mkdir(parents=True, exist_ok=True)
    _copytree(cache / "catalog", cat)


def set_dirty(lid: str, dirty: bool) -> None:
    mp = meta_path(lid)
    meta = json.loads(mp.read_text())
    meta["dirty"] = dirty
    mp.write_text(json.dumps(meta, indent=1))


def ensure_built(lid: str, s3: S3Server | None, rebuild: bool, s3_budget: float,
                 s3_rate: float | None) -> dict[str, Any]:
    """The lake, built (and cached) if needed, as built (not compacted); its metadata."""
    kind, n, batch = parse_lid(lid)
    mp = meta_path(lid)
    meta = json.loads(mp.read_text()) if mp.exists() else {}
    log = WORK / f"{lid}.deposits.jsonl"
    if not rebuild and meta.get("key") == cache_key(lid) and meta.get("complete"):
        print(f"[{lid}] cached (built {meta['built_at']})", flush=True)
        if kind == "s3" or meta.get("dirty"):
            restore(s3, lid)
        meta.update(build_stats(log), dirty=False)
        mp.write_text(json.dumps(meta, indent=1))
        return meta
    if kind == "s3" and n > 1000 and s3_rate and n / s3_rate > s3_budget:  # 1,000 and fewer: always
        print(f"[{lid}] skipped: at the measured {s3_rate:.2f} deposits/s it would take "
              f"{n / s3_rate / 60:.0f} min (> --s3-build-budget {s3_budget:.0f} s)", flush=True)
        return {"skipped": True, "estimate_s": n / s3_rate, "rate": s3_rate}
    resume = (kind == "local" and not rebuild and meta.get("key") == cache_key(lid) and log.exists()
              and (WORK / lid).exists())
    if not resume:
        log.unlink(missing_ok=True)
        if kind == "local":
            shutil.rmtree(WORK / lid, ignore_errors=True)
        else:
            shutil.rmtree(s3_catalog_dir(lid), ignore_errors=True)
            cli = s3.client()
            try:
                cli.create_bucket(Bucket=bucket_of(lid))
            except (cli.exceptions.BucketAlreadyOwnedByYou, cli.exceptions.BucketAlreadyExists):
                raise SystemExit(f"bucket {bucket_of(lid)} already exists in this moto server") from None
    meta = {"key": cache_key(lid), "complete": False}
    mp.write_text(json.dumps(meta, indent=1))
    how = "one deposit per commit" if batch == 1 else f"{batch} deposits registered per commit (bulk)"
    print(f"[{lid}] building: {n:,} deposits, {how}" + (" (resuming)" if resume else ""), flush=True)
    t0 = time.perf_counter()
    meter = CpuMeter()
    run_child("_build", lid, str(log))
    meta.update(build_stats(log), complete=True, built_at=dt.datetime.now().isoformat(timespec="seconds"),
                wall_s=time.perf_counter() - t0, dirty=False, others_cpus=meter.others())
    if kind == "local":
        meta.update(zip(("files", "bytes"), tree_size(WORK / lid)))
        _copytree(WORK / lid, WORK / f"{lid}.pristine")
    else:
        save_s3(s3, lid)
        meta.update(zip(("files", "bytes"), tree_size(WORK / lid)))
    mp.write_text(json.dumps(meta, indent=1))
    print(f"[{lid}] built in {meta['seconds']:.0f} s of deposits: {meta['start_rate']:.2f} deposits/s "
          f"at the start, {meta['end_rate']:.2f} at the end", flush=True)
    return meta



# ----------------------------------------------------------------------------- measuring (in child processes)

PREIMPORT = "import mliplake, mliplake.query.engine, mliplake.filters, mliplake.catalogue.cards, mliplake.ml.models, duckdb, pyarrow"

COLD = r"""
import json, os, sys, time
t_start = time.perf_counter()
sys.path.insert(0, {src!r})
{preimport}
import urllib.request
from mliplake import Lake
SIGNATURE = {signature!r}

def proxy_count():
    url = os.environ.get("BENCH_PROXY")
    if not url:
        return 0
    with urllib.request.urlopen(url + "/__bench__/count", timeout=30) as r:
        return int(json.loads(r.read())["total"])

t_imp = time.perf_counter()
r0 = proxy_count()
t0 = time.perf_counter()
lake = Lake({url!r})
t_a = time.perf_counter()
lake.tables.base()  # extensions, ATTACH, the tables checked
t_b = time.perf_counter()
r_b = proxy_count()
pandas_before = "pandas" in sys.modules
lake.connection().close()  # the principal's views (what the first query makes)
t_c = time.perf_counter()
pandas_views = "pandas" in sys.modules
mliplake.filters.parse("nsites < 10")  # the filter parser (built on first use)
t_d = time.perf_counter()
result = {expr}
t1 = time.perf_counter()
r1 = proxy_count()
print("RESULT " + json.dumps({{"op_ms": (t1 - t0) * 1000, "import_ms": (t_imp - t_start) * 1000, "req": r1 - r0,
                              "lake_ms": (t_a - t0) * 1000, "connect_ms": (t_b - t_a) * 1000,
                              "views_ms": (t_c - t_b) * 1000, "parser_ms": (t_d - t_c) * 1000,
                              "query_ms": (t1 - t_d) * 1000, "connect_req": r_b - r0, "result": result,
                              "pandas_in_views": pandas_views and not pandas_before}}))
"""


def measure_cold(url: str, op: str, runs: int) -> dict[str, Any]:
    code = COLD.format(src=str(SRC), preimport=PREIMPORT, url=url, expr=OPS[op].format(ds=SEL_DATASET),
                      signature=SIGNATURE)
    op_ms, total_ms, imp_ms, reqs, results = [], [], [], [], set()
    parts: dict[str, list[float]] = {"lake_ms": [], "connect_ms": [], "views_ms": [], "parser_ms": [], "query_ms": [],
                                     "connect_req": []}
    pandas = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run([PY, "-c", code], env=child_env(), capture_output=True, text=True)
        total = (time.perf_counter() - t0) * 1000
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        if p.returncode or line is None:
            raise RuntimeError(f"new-process {op} failed: {p.stderr[-3000:]}")
        r = json.loads(line[7:])
        op_ms.append(r["op_ms"])
        imp_ms.append(r["import_ms"])
        total_ms.append(total)
        reqs.append(r["req"])
        results.add(r["result"])
        for k in parts:
            parts[k].append(r[k])
        pandas.append(r["pandas_in_views"])
    return {"op_ms": statistics.median(op_ms), "op_max_ms": max(op_ms), "total_ms": statistics.median(total_ms),
            "import_ms": statistics.median(imp_ms), "req": statistics.median(reqs), "result": sorted(results),
            "runs": runs, "pandas_in_views": all(pandas), **{k: statistics.median(v) for k, v in parts.items()}}


def warm_child(url: str, runs: int, datasets: int, out: Path) -> None:
    """One process: every operation ``runs`` times after one warm-up, interleaved; times and requests.

    ``same``: the filter on ds-7 every run, on one ``Lake`` shared by all the operations (two of
    which read every file: DuckDB's caches hold the whole lake); ``new``: another dataset every run
    (cycling through the lake's datasets), each operation on a ``Lake`` with a DuckDB instance of
    its own, so its caches have not seen the files of that dataset yet (the OS page cache has).
    ``open`` is ``Lake(url)`` as a long-lived process does it (the process's instance for that
    lake reused); ``open (new instance)`` gives that ``Lake`` a new DuckDB instance first (what
    the first ``Lake`` of a URL in a process pays, less imports)."""
    from mliplake import Lake
    from mliplake.storage.tables import TableStore

    def private(lake: Lake) -> Lake:
        lake.tables = TableStore(lake.url, lake.root, lake.local, lake.settings)
        return lake

    main = Lake(url)
    own = {op: private(Lake(url)) for op in ROTATING}  # no file another task read is cached
    tasks = [(op, "same") for op in [*OPS, *WARM_ONLY]] + [(op, "new") for op in ROTATING]
    samples: dict[tuple, list[float]] = {t: [] for t in tasks}
    reqs: dict[tuple, list[int]] = {t: [] for t in tasks}
    results: dict[tuple, set] = {t: set() for t in tasks}
    for i in range(runs + 1):
        for op, variant in tasks:
            ds = SEL_DATASET if variant == "same" else (SEL_DATASET + 1 + i) % datasets
            expr = (OPS.get(op) or WARM_ONLY[op]).format(ds=ds)
            r0 = proxy_count()
            t0 = time.perf_counter()
            if op == "open":
                lake = Lake(url)
            elif op == "open (new instance)":
                lake = private(Lake(url))
            else:
                lake = own[op] if variant == "new" else main
            res = eval(expr)  # noqa: S307 (our own expressions)
            dt_ = time.perf_counter() - t0
            r1 = proxy_count()
            if op == "open (new instance)":
                lake.tables.close()
            if i:
                samples[(op, variant)].append(dt_ * 1000)
                reqs[(op, variant)].append(r1 - r0)
                results[(op, variant)].add(res)
    outd: dict[str, dict[str, Any]] = {}
    for t in tasks:
        s = sorted(samples[t])
        outd.setdefault(t[1], {})[t[0]] = {
            "median_ms": statistics.median(s), "p90_ms": statistics.quantiles(s, n=10)[8] if len(s) > 1 else s[0],
            "req": statistics.median(reqs[t]), "req_max": max(reqs[t]), "result": sorted(results[t]), "runs": runs}
    out.write_text(json.dumps(outd))


def measure_warm(url: str, runs: int, datasets: int) -> dict[str, Any]:
    out = WORK / "warm.json"
    out.unlink(missing_ok=True)
    run_child("_warm", url, str(runs), str(datasets), str(out))
    return json.loads(out.read_text())


STATEMENTS = (  # (start of the SQL, label) for the deposit probe
    ("BEGIN", "begin"), ("COMMIT", "commit"), ("UPDATE lake.heads", "bump heads"),
    ("DELETE FROM lake.configurations", "delete old rows: configurations"),
    ("DELETE FROM lake.quarantine", "delete old rows: quarantine"),
    ("DELETE FROM lake.deposits", "delete old rows: deposits"),
    ("SELECT stored, retracted_at", "read the previous record"),
    ("CREATE OR REPLACE TEMP TABLE _dups", "duplicate check"),
    ("CALL ducklake_add_data_files", "register the data file"),
    ("INSERT INTO lake.configurations", "copy the rows in"),
    ("INSERT INTO lake.deposits", "insert the record"),
    ("SELECT 1 FROM lake.policies", "policy check"),
    ("CALL ducklake_merge_adjacent_files", "compaction: merge small files"),
    ("CALL ducklake_flush_inlined_data", "compaction: write out inlined rows"),
)
CATALOG_CHECK = "compaction check (catalog read)"


def _label(sql: str) -> str:
    text = " ".join(sql.split())
    if "__ducklake_metadata_lake" in text:  # TableStore.catalog_load: does anything need compacting?
        return CATALOG_CHECK
    return next((label for start, label in STATEMENTS if text.startswith(start)), "other SQL")


def probe_child(lid: str, count: int, out: Path) -> None:
    """``count`` more deposits into the lake from this new process, one commit each, every SQL
    statement of the library timed (the connection's cursors wrapped)."""
    import mliplake.storage.tables as T
    from mliplake import Lake

    kind, n, _ = parse_lid(lid)
    spent: dict[str, float] = collections.defaultdict(float)

    class Cursor:
        def __init__(self, cur: Any) -> None:
            self._cur = cur

        def execute(self, sql: str, *a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return self._cur.execute(sql, *a, **kw)
            finally:
                spent[_label(sql)] += time.perf_counter() - t0

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cur, name)

    class Connection(Cursor):
        def cursor(self) -> Cursor:
            return Cursor(self._cur.cursor())

    base = T.TableStore.base
    T.TableStore.base = lambda self: Connection(base(self))  # type: ignore[method-assign]
    tmp = WORK / "src" / f"{lid}-probe"
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    t_lake = time.perf_counter()
    lake = Lake(lake_url(lid))
    t_lake = time.perf_counter() - t_lake
    for k in range(n, n + count):
        path = tmp / f"d{k:05d}.extxyz"
        path.write_text(deposit_text(k))
        spent.clear()
        r0 = proxy_count()
        t0 = time.perf_counter()
        rep = lake.deposit([path], dataset=f"ds-{k % DATASETS}")
        s = time.perf_counter() - t0
        req = proxy_count() - r0
        if rep.status != "stored":
            raise SystemExit(f"probe deposit {k}: {rep.status}; {rep.error}")
        stmts = {k_: v * 1000 for k_, v in spent.items()}
        stmts["outside SQL (read, write, raw copy)"] = s * 1000 - sum(stmts.values())
        rows.append({"k": k, "ms": s * 1000, "req": req, "stmts": stmts})
    shutil.rmtree(tmp, ignore_errors=True)
    out.write_text(json.dumps({"lake_ms": t_lake * 1000, "deposits": rows}))


def measure_probe(lid: str, count: int) -> dict[str, Any]:
    out = WORK / "probe.json"
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    run_child("_probe", lid, str(count), str(out))
    res = json.loads(out.read_text())
    res["process_ms"] = (time.perf_counter() - t0) * 1000
    return res


def compact_child(url: str, out: Path) -> None:
    from mliplake import Lake

    lake = Lake(url)
    r0 = proxy_count()
    t0 = time.perf_counter()
    res = lake.maintain(retention="0 seconds")
    res["seconds"] = time.perf_counter() - t0
    res["req"] = proxy_count() - r0
    out.write_text(json.dumps(res))


def compact(url: str) -> dict[str, Any]:
    out = WORK / "compact.json"
    out.unlink(missing_ok=True)
    run_child("_compact", url, str(out))
    return json.loads(out.read_text())


class CpuMeter:
    """How many CPUs other processes kept busy since it started (the machine is shared)."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.monotonic(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def others(self) -> float:
        wall = time.monotonic() - self.t0
        return max(0.0, (self._busy() - self.busy0) - (self._own() - self.own0)) / max(wall, 1e-9)


def measure_lake(lid: str, args: Any, s3: S3Server | None, compact_too: bool = True) -> dict[str, Any]:
    """As built: warm, new process, then the deposit probe; restored; compacted; warm and new process again."""
    kind, n, _ = parse_lid(lid)
    url = lake_url(lid)
    out: dict[str, Any] = {}
    for state in (["before", "after"] if args.compact and compact_too else ["before"]):
        if state == "after":
            print(f"[{lid}] compacting: lake.maintain(retention='0 seconds')", flush=True)
            set_dirty(lid, True)
            out["compaction"] = c = compact(url)
            print(f"  {c['files_before']:,} -> {c['files_after']:,} data files in {c['seconds']:.1f} s"
                  + (f", {c['req']:,} requests" if kind == "s3" else ""), flush=True)
        meter = CpuMeter()
        print(f"[{lid}] {state} compaction: warm process, {args.runs} runs", flush=True)
        warm = measure_warm(url, args.runs, min(n, DATASETS))
        for variant, ws in warm.items():
            for op, w in ws.items():
                print(f"  warm {op:16s} {variant:4s} median {w['median_ms']:8.1f} ms  p90 {w['p90_ms']:8.1f} ms"
                      + (f"  {w['req']:.0f} requests" if kind == "s3" else "") + f"  -> {w['result'][:5]}", flush=True)
        cold = {}
        for op in OPS:
            cold[op] = c_ = measure_cold(url, op, args.cold_runs)
            print(f"  new process {op:16s} op {c_['op_ms']:8.1f} ms (Lake() {c_['lake_ms']:.0f}, connect "
                  f"{c_['connect_ms']:.0f}, views {c_['views_ms']:.0f}, parser {c_['parser_ms']:.0f}, "
                  f"query {c_['query_ms']:.0f})  process {c_['total_ms']:8.0f} ms "
                  f"(imports {c_['import_ms']:.0f} ms)" + (f"  {c_['req']:.0f} requests" if kind == "s3" else ""),
                  flush=True)
        out[state] = {"warm": warm, "cold": cold, "others_cpus": meter.others()}
        print(f"  other processes kept {out[state]['others_cpus']:.2f} CPUs busy meanwhile", flush=True)
        if state == "before" and args.probe:
            print(f"[{lid}] deposit probe: {args.probe} more deposits from a new process", flush=True)
            set_dirty(lid, True)
            out["probe"] = p = measure_probe(lid, args.probe)
            for d in p["deposits"]:
                top = sorted(d["stmts"].items(), key=lambda x: -x[1])[:4]
                print(f"  deposit {d['k']}: {d['ms']:.0f} ms" + (f", {d['req']} requests" if kind == "s3" else "")
                      + " | " + ", ".join(f"{k} {v:.0f}" for k, v in top), flush=True)
            print(f"[{lid}] restoring the lake as built", flush=True)
            restore(s3, lid)
            set_dirty(lid, False)
    return out


# ----------------------------------------------------------------------------- the report


def _ms(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**NOT met**")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def one_by_one_estimate(log: Path, n: int) -> tuple[float, float, float]:
    """Least-squares line through a one-deposit-per-commit build's seconds per deposit; the
    seconds a build of ``n`` would take if it stays linear; and the seconds per deposit at ``n``."""
    s = [r["s"] for r in map(json.loads, log.open())][1:]
    k = list(range(1, len(s) + 1))
    mk, ms_ = statistics.fmean(k), statistics.fmean(s)
    b = sum((x - mk) * (y - ms_) for x, y in zip(k, s)) / sum((x - mk) ** 2 for x in k)
    a = ms_ - b * mk
    return b, n * a + b * n * n / 2, a + b * n


def render(res: dict[str, Any], builds: dict[str, Any], plan: dict[str, list[tuple[int, str]]],
           validation: tuple[str, str] | None, mach: dict[str, str], args: Any) -> str:
    today = dt.date.today().isoformat()
    kinds = list(plan)
    ns = sorted({n for rows in plan.values() for n, _ in rows})
    load = [st["others_cpus"] for r in res.values() for s_, st in r.items() if s_ in ("before", "after")]
    bulk = [(n, lid) for rows in plan.values() for n, lid in rows if parse_lid(lid)[2] > 1]
    label = {"local": "local", "s3": "S3 (moto)"}

    def get(lid: str | None, state: str) -> dict[str, Any] | None:
        return res.get(lid, {}).get(state) if lid else None

    def lid_for(kind: str, n: int) -> str | None:
        return next((lid for m, lid in plan.get(kind, []) if m == n and lid in res), None)

    out = [
        SECTION, "",
        f"_Generated by `bench/lake.py` on {today}; do not edit by hand._", "",
        f"- Machine: {mach['cpu']}, nproc {mach['nproc']}, {mach['ram']} RAM; Python {mach['python']}. "
        f"**Timings were taken on a 2-core machine shared with other work** (other engineers' test runs): other "
        f"processes kept {min(load, default=0):.1f}-{max(load, default=0):.1f} of its 2 CPUs busy during the "
        "measurements, so every time here is inflated, by an unknown and varying factor; ratios between "
        "lakes measured back to back are more trustworthy than the absolute times",
        f"- Software: {mach['versions']}; git {mach['git']}",
        f"- Lakes: N deposits made with `lake.deposit([path], dataset=...)`, each one extxyz file of {FRAMES} frames "
        f"(2-12 atoms: the dataset's own element, O, H; periodic; energy, forces; seeded by the deposit's number), "
        f"into {DATASETS} datasets (deposit k into `ds-{{k % {DATASETS}}}`), so a filter on one dataset matches "
        "2 % of the lake. Local: a folder (its DuckLake catalog `catalog.sqlite` inside). S3: moto's server on "
        "127.0.0.1 behind a counting HTTP proxy (every request counted), the catalog a SQLite file under "
        "`MLIPLAKE_STATE_DIR`; moto runs on the same 2 cores, so S3 times include the server's own CPU time",
    ]
    if bulk:
        n_b, lid_b = bulk[0]
        b = parse_lid(lid_b)[2]
        one = lid_of("local", 1000)
        est = ""
        small = lid_for("local", ns[0])
        pkey = "probe_before" if "probe_before" in res.get(lid_b, {}) else "probe"
        if small and pkey in res.get(small, {}) and pkey in res.get(lid_b, {}):
            t0 = statistics.median(x["ms"] for x in res[small][pkey]["deposits"][1:]) / 1000
            t1 = statistics.median(x["ms"] for x in res[lid_b][pkey]["deposits"][1:]) / 1000
            est = (f" (to save time; one at a time would take ~{n_b * (t0 + t1) / 2 / 3600:.1f} h on a quiet "
                   f"machine: the deposit probe's next deposit took {t0:.2f} s into {ns[0]:,} deposits and "
                   f"{t1:.2f} s into {n_b:,}, that line's integral; the `{one}` build went from "
                   f"{builds[one]['start_rate']:.1f} to {builds[one]['end_rate']:.1f} deposits/s)")
        elif (WORK / f"{one}.deposits.jsonl").exists():
            slope, total, at_n = one_by_one_estimate(WORK / f"{one}.deposits.jsonl", n_b)
            est = (f": one commit per deposit, a deposit costs {slope * 1e6:.0f} µs more for every deposit already "
                   f"in the lake (a least-squares line through the `{one}` build's times), so {n_b:,} one at a time "
                   f"would take ~{total / 3600:.0f} h on this machine, the last ones ~{at_n:.0f} s each")
        out.append(f"- **The {n_b:,}-deposit lake is built in bulk**{est}. Each of its deposits runs the library's "
                   "deposit path up to the commit (hash and copy the raw file, parse, normalise, stage the rows as "
                   f"Parquet, the manifest); then every {b} deposits one DuckLake commit copies their staged rows "
                   "into the table (as the library's commit does) and inserts their records (the library's "
                   "`ingest._record_row`). Left out: the commit's per-deposit statements (previous version out, "
                   "duplicate check), which find nothing here (new deposit ids, no duplicate frames; the build "
                   "checks the row count), and the deposit's compaction of small files. Same rows and records, one "
                   f"data file and one snapshot per {b} deposits. "
                   + ("The same bulk build of 1,000 deposits is measured beside the one-at-a-time one (table "
                      "'Bulk against one-at-a-time') to show what that changes" if validation else ""))
    out += [
        "- Operations: `open` = `Lake(url)` + `lake.count()`; `count` = "
        f"`lake.count('dataset = \"ds-{SEL_DATASET}\" AND nsites < 10')`; `count (element)` = "
        f"`lake.count('elements HAS \"{SIGNATURE[SEL_DATASET]}\"')` (that dataset's rows again, found without "
        f"file statistics to skip by); `fetch` = `lake.search('dataset = \"ds-{SEL_DATASET}\"', "
        f"columns=[{', '.join(COLUMNS)}], limit=100)`; `fetch (any)` = the same with `nsites >= 1` (every row "
        "matches: the first 100 in lake order); in the warm process also `open (new instance)` = `Lake(url)` given "
        "a DuckDB instance of its own (extensions loaded, catalog attached, tables checked, views made) + "
        "`lake.count()`: what the first `Lake` of a URL costs a process, imports aside, `views only` = `lake.connection()` (what "
        "every query does before its SQL: the principal's scope, the views checked) and `count, plain SQL` = the "
        "count's SQL straight on the DuckLake catalog (`SELECT count(*) FROM lake.configurations WHERE ...`, no "
        "library code)",
        f"- Warm process: one interpreter; median and p90 of {args.runs} runs after a warm-up, operations "
        "interleaved. `open` makes a new `Lake` each run, as a long-lived process (an API worker, a notebook) "
        "does: it shares the process's DuckDB instance for that lake. *Same filter*: ds-7 every run, one `Lake` for all the "
        "operations (two of which read every file, so DuckDB's caches hold the whole lake: the best case). "
        "*New filter each run*: another dataset every run, on a `Lake` (a DuckDB instance) of the operation's "
        "own, so no DuckDB cache has seen that dataset's files (the OS page cache has; with 10 deposits the 10 "
        f"datasets repeat). New process: a fresh interpreter per operation, median of {args.cold_runs}; `op` is the "
        "operation inside it (`Lake(url)` included, imports of mliplake, duckdb and pyarrow excluded), `process` "
        "spawn to exit. S3 requests: the proxy's count over one operation (median)",
        "- Compaction: deposits merge a table's small files once there are more than `MLIPLAKE_COMPACT_FILES` "
        "(100) of them, so a lake built one deposit at a time holds at most about a hundred small files and a few "
        "merged ones. " + ("`lake.maintain(retention=\"0 seconds\")` (DuckLake `merge_adjacent_files`, then "
                          "snapshot expiry and file clean-up) is measured too: each lake as built and after it"
                          if args.compact else "This run measured the lakes as built (`--no-compact`)"), "",
    ]
    # ---- build
    out += ["### Building the lakes", "",
            "Deposits/s over the first and the last 10 % of each build (at most 100 deposits each; the very first "
            "deposit, which creates the lake, left out): a falling rate means a deposit costs more as the lake grows. "
            "Builds run in one long-lived process (its DuckDB caches warm), one deposit after another; they are as "
            "sensitive to other work on the machine as anything here (last column, where recorded).", "",
            "| storage | deposits | commits | build s | deposits/s at the start | at the end | ms/deposit (median) "
            "at the start | at the end | S3 requests/deposit at the start | at the end | files | MB | CPUs other "
            "work kept busy |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lids = [lid for rows in plan.values() for _, lid in rows] + ([validation[1]] if validation else [])
    for lid in lids:
        kind, n, b_ = parse_lid(lid)
        m = builds.get(lid)
        if not m:
            continue
        if m.get("skipped"):
            out.append(f"| {label[kind]} | {n:,} | - | not built: at least ~{m['estimate_s'] / 60:.0f} min at the "
                       f"{m['rate']:.2f} deposits/s measured at the end of the 1,000-deposit build (more, as a "
                       "deposit's cost grows with the lake), over `--s3-build-budget` "
                       "| | | | | | | | | |")
            continue
        req = f"{m['start_req']:.0f} | {m['end_req']:.0f}" if "start_req" in m else "- | -"
        out.append(f"| {label[kind]} | {n:,} | {'one per deposit' if b_ == 1 else f'bulk, {b_} deposits each'} | "
                   f"{m['seconds']:,.0f} | {m['start_rate']:.2f} | {m['end_rate']:.2f} | {m['start_ms']:.0f} | "
                   f"{m['end_ms']:.0f} | {req} | {m.get('files', 0):,} | {m.get('bytes', 0) / 1e6:,.1f} | "
                   + (f"{m['others_cpus']:.2f}" if "others_cpus" in m else "not recorded") + " |")
    out.append("")
    for lid in lids:
        m = builds.get(lid)
        if m and not m.get("skipped") and parse_lid(lid)[1] >= 1000:
            out.append(f"Deposits/s along the `{lid}` build, per 10 %: "
                       + ", ".join(f"{i:,}: {r:.2f}" for i, r in m["profile"]) + "  ")
    out.append("")
    # ---- deposit probe
    probes = [(lid, res[lid]["probe"]) for lid in lids if "probe" in res.get(lid, {})]
    if probes:
        meta = res.get("_probe", {})
        earlier = any("probe_before" in res.get(lid, {}) for lid, _ in probes)
        count = meta.get("count", args.probe)
        out += ["### A deposit into a lake of N deposits", "",
                f"After the as-built measurements, {count} more deposits into each lake from a new process "
                "(like `mliplake deposit`), one commit each, every SQL statement the library runs timed; then the "
                "lake is restored as built. The first deposit pays for the connection (extensions, ATTACH) and "
                "cold caches; `next` is the median of the others. The first deposit may also merge small files "
                "(the deposit's own compaction, `MLIPLAKE_COMPACT_FILES`: more than 100 small files of a table "
                "are merged; its column below: a lake built in bulk or by an older library holds many); the next "
                "ones deposit into a lake as compaction keeps it."]
        if meta:
            out[-1] += (f" **Re-measured on {meta['date']} (git {meta['git']}) with `--probe-only`**: the deposit "
                        "tables of this section only; every other table is from the run described at the top "
                        f"(git {meta.get('base_git', '?')})" + (", and `next, before` is that run's probe, with "
                        "the library of then (no compaction, every commit deleting the previous version)"
                        if earlier else "") + f". Other work kept {meta['others_cpus']:.1f} of the 2 CPUs busy "
                        "during the re-measurement.")
        out += ["", "| lake | deposits | first deposit ms | of which compaction ms | next ms"
                + (" | next ms, before | ratio" if earlier else "") + " | S3 requests: first | next |",
                "| --- | ---: | ---: | ---: | ---:" + (" | ---: | ---:" if earlier else "") + " | ---: | ---: |"]
        comp_labels = [lab for _, lab in STATEMENTS if lab.startswith("compaction")]
        for lid, p in probes:
            d = p["deposits"]
            nxt = d[1:] or d
            reqs = (f"{d[0]['req']} | {statistics.median(x['req'] for x in nxt):.0f}"
                    if lid.startswith("s3") else "- | -")
            comp_ms = sum(d[0]["stmts"].get(lab, 0.0) for lab in comp_labels)
            now = statistics.median(x["ms"] for x in nxt)
            before = ""
            if earlier:
                pb = res[lid].get("probe_before")
                if pb:
                    b = statistics.median(x["ms"] for x in (pb["deposits"][1:] or pb["deposits"]))
                    before = f" | {b:,.0f} | {_ratio(now, b)}"
                else:
                    before = " | - | -"
            out.append(f"| `{lid}` | {parse_lid(lid)[1]:,} | {d[0]['ms']:,.0f} | {comp_ms:,.0f} | "
                       f"{now:,.0f}{before} | {reqs} |")
        base = next((lid for lid, _ in probes if parse_lid(lid)[1] == min(parse_lid(x)[1] for x, _ in probes)), None)
        if base:
            b0 = statistics.median(x["ms"] for x in (res[base]["probe"]["deposits"][1:] or res[base]["probe"]["deposits"]))
            out += ["", f"Growth of a (next) deposit, against `{base}`: " + ", ".join(
                f"`{lid}` {_ratio(statistics.median(x['ms'] for x in (p['deposits'][1:] or p['deposits'])), b0)}"
                for lid, p in probes if lid != base and lid.split('-')[0] == base.split('-')[0]) + "."]
            s3s = [lid for lid, _ in probes if lid.startswith("s3")]
            if s3s and not base.startswith("s3"):
                s0 = min(s3s, key=lambda x: parse_lid(x)[1])
                b1 = statistics.median(x["ms"] for x in (res[s0]["probe"]["deposits"][1:] or res[s0]["probe"]["deposits"]))
                out[-1] += f" On S3, against `{s0}`: " + ", ".join(
                    f"`{lid}` {_ratio(statistics.median(x['ms'] for x in (res[lid]['probe']['deposits'][1:] or res[lid]['probe']['deposits'])), b1)}"
                    for lid in s3s if lid != s0) + "."
        out += ["", "Where a (next) deposit's time goes, ms (median over the probe's deposits after the first):", "",
                "| statement | " + " | ".join(f"`{lid}`" for lid, _ in probes) + " |",
                "| --- |" + " ---: |" * len(probes)]
        labels = [lab for _, lab in STATEMENTS] + [CATALOG_CHECK, "other SQL", "outside SQL (read, write, raw copy)"]
        for lab in labels:
            cells = []
            for _, p in probes:
                nxt = p["deposits"][1:] or p["deposits"]
                cells.append(_ms(statistics.median(x["stmts"].get(lab, 0.0) for x in nxt)))
            if any(c not in ("0.0",) for c in cells):
                out.append(f"| {lab} | " + " | ".join(cells) + " |")
        out.append("")
    # ---- compaction
    comp = [(lid, res[lid]["compaction"]) for lid in lids if "compaction" in res.get(lid, {})]
    if comp:
        out += ["### Compaction", "", "| lake | data files before | after | seconds | S3 requests |",
                "| --- | ---: | ---: | ---: | ---: |"]
        for lid, c in comp:
            out.append(f"| `{lid}` | {c['files_before']:,} | {c['files_after']:,} | {c['seconds']:.1f} | "
                       + (f"{c['req']:,}" if lid.startswith("s3") else "-") + " |")
        out.append("")
    # ---- times
    for kind in kinds:
        for state in ("before", "after"):
            rows = [(n, lid, res[lid][state]) for n, lid in plan[kind] if get(lid, state)]
            if not rows:
                continue
            out += [f"### {label[kind].capitalize() if kind == 'local' else label[kind]}, "
                    f"{'as built' if state == 'before' else 'after compaction'}", ""]
            head = ("| deposits | operation | rows/count | warm, same filter: median ms | p90 ms | warm, new filter "
                    "each run: median ms | p90 ms | new process: op ms | process ms |")
            sep = "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            if kind == "s3":
                head += " requests: warm, same filter | warm, new filter | new process |"
                sep += " ---: | ---: | ---: |"
            out += [head, sep]
            for n, lid, st in rows:
                for op in [*OPS, *WARM_ONLY]:
                    w, c = st["warm"]["same"].get(op), st["cold"].get(op)
                    if w is None:
                        continue
                    nw = st["warm"].get("new", {}).get(op)
                    new_cells = f"{_ms(nw['median_ms'])} | {_ms(nw['p90_ms'])}" if nw else "- | -"
                    cold_cells = f"{_ms(c['op_ms'])} | {c['total_ms']:,.0f}" if c else "- | -"
                    result = "/".join(f"{x:,}" for x in w["result"] if x is not None) or "-"
                    line = (f"| {n:,}{'*' if parse_lid(lid)[2] > 1 else ''} | {op} | {result} | {_ms(w['median_ms'])} | "
                            f"{_ms(w['p90_ms'])} | {new_cells} | {cold_cells} |")
                    if kind == "s3":
                        line += (f" {w['req']:.0f} | {format(nw['req'], '.0f') if nw else '-'} | "
                                 f"{format(c['req'], '.0f') if c else '-'} |")
                    out.append(line)
            if any(parse_lid(lid)[2] > 1 for _, lid, _ in rows):
                out.append("")
                out.append("\\* built in bulk (see above).")
            out.append("")
    # ---- where a new process's time goes
    out += ["### Where a new process's time goes", "",
            "Medians, ms, in each kind's largest lake as built. `imports`: mliplake, duckdb, pyarrow (not part of "
            "`op`); `Lake()`: the constructor; `connect`: a DuckDB instance, the DuckLake / SQLite (/ httpfs) "
            "extensions loaded, the catalog attached, the tables checked; `views`: the principal's views made "
            "(the first query's job)"
            + ("; DuckDB's Python binding imports pandas inside it, on the first parameterised statement"
               if any(c.get("pandas_in_views") for r in res.values() for c in r.get("before", {}).get("cold", {}).values())
               else "")
            + "; `parser`: the filter grammar built on first use; `query`: the operation itself after all that.", "",
            "| lake | operation | process | imports | Lake() | connect | views | parser | query | op |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind in kinds:
        lid = next((lid for n, lid in reversed(plan[kind]) if get(lid, "before")), None)
        if lid is None:
            continue
        for op in OPS:
            c = res[lid]["before"]["cold"][op]
            out.append(f"| `{lid}` | {op} | {c['total_ms']:,.0f} | {c['import_ms']:,.0f} | {c['lake_ms']:,.0f} | "
                       f"{c['connect_ms']:,.0f} | {c['views_ms']:,.0f} | {c['parser_ms']:,.0f} | {c['query_ms']:,.0f} | "
                       f"{c['op_ms']:,.0f} |")
    out.append("")
    # ---- growth
    base_n = ns[0]
    out += ["### Growth with the number of deposits", "",
            f"Time at N deposits / time at {base_n:,}. Growth at most logarithmic in deposits allows "
            + ", ".join(f"{math.log(n) / math.log(base_n):.1f}x at {n:,}" for n in ns[1:])
            + " (a cost proportional to log N); a linear cost would give "
            + ", ".join(f"{n / base_n:,.0f}x" for n in ns[1:]) + ".", "",
            "| storage | state | operation | measured as | " + " | ".join(f"{n:,} deposits" for n in ns[1:]) + " |",
            "| --- | --- | --- | --- |" + " ---: |" * len(ns[1:])]

    def pick(st: dict[str, Any] | None, op: str, how: str) -> float | None:
        if st is None:
            return None
        if how == "new process":
            return st["cold"][op]["op_ms"] if op in st["cold"] else None
        w = st["warm"].get("new" if how == "warm, new filter" else "same", {}).get(op)
        return w["median_ms"] if w else None

    for kind in kinds:
        for state in ("before", "after"):
            base = get(lid_for(kind, base_n), state)
            if not base:
                continue
            for op in [*OPS, *WARM_ONLY]:
                for how in ("warm, same filter", "warm, new filter", "new process"):
                    b = pick(base, op, how)
                    if b is None:
                        continue
                    cells = []
                    for n in ns[1:]:
                        v = pick(get(lid_for(kind, n), state), op, how)
                        cells.append(_ratio(v, b) if v is not None else "-")
                    out.append(f"| {label[kind]} | {'as built' if state == 'before' else 'compacted'} | {op} | {how} | "
                               + " | ".join(cells) + " |")
    out.append("")
    # ---- validation
    if validation and all(get(v, "before") for v in validation):
        one, bat = validation
        out += ["### Bulk against one-at-a-time", "",
                f"The same 1,000 deposits, committed one per commit (`{one}`, over {builds[one]['deposits']:,} "
                f"snapshots) and in bulk, {parse_lid(bat)[2]} per commit (`{bat}`), both as built; ratio bulk / "
                "one-at-a-time (on this noisy machine, ratios within about 0.7-1.5x are noise).",
                "", "| operation | measured as | one at a time ms | bulk ms | ratio |", "| --- | --- | ---: | ---: | ---: |"]
        for op in [*OPS, *WARM_ONLY]:
            for how in ("warm, same filter", "warm, new filter", "new process"):
                a, b = pick(get(one, "before"), op, how), pick(get(bat, "before"), op, how)
                if a is not None and b is not None:
                    out.append(f"| {op} | {how} | {_ms(a)} | {_ms(b)} | {_ratio(b, a)} |")
        if "probe" in res[one] and "probe" in res[bat]:
            a = statistics.median(x["ms"] for x in res[one]["probe"]["deposits"][1:])
            b = statistics.median(x["ms"] for x in res[bat]["probe"]["deposits"][1:])
            out.append(f"| a deposit (next) | new process | {_ms(a)} | {_ms(b)} | {_ratio(b, a)} |")
        out.append("")
    # ---- targets
    out += ["### Targets", "",
            "Warm targets are judged on the new-filter-each-run figure where there is one (a dataset whose files "
            "no DuckDB cache has seen yet); the same-filter figure in brackets. After compaction these small lakes "
            "are one data file, which a `Lake` caches on its first query, so there every warm query (and its S3 "
            "requests: none) is a cached read; a lake of many compacted files of DuckLake's target size would not "
            "be held whole.", "",
            "| target | lake | as built | met | after compaction | met |", "| --- | --- | ---: | --- | ---: | --- |"]

    def warm(st: dict[str, Any], op: str) -> dict[str, Any]:
        return st["warm"].get("new", {}).get(op) or st["warm"]["same"][op]

    def warm_text(st: dict[str, Any], op: str) -> str:
        w, same = warm(st, op), st["warm"]["same"][op]
        text = f"{_ms(w['median_ms'])} ms (p90 {_ms(w['p90_ms'])})"
        return text + (f" [{_ms(same['median_ms'])}]" if w is not same else "")

    def row(target: str, lid: str | None, value: Any, ok: Any) -> None:
        cells = []
        for state in ("before", "after"):
            st = get(lid, state)
            cells.append("not measured | -" if st is None else f"{value(st, state)} | {_met(ok(st, state))}")
        out.append(f"| {target} | {f'`{lid}`' if lid else '-'} | " + " | ".join(cells) + " |")

    nl = 10_000 if lid_for("local", 10_000) else max((n for n, lid in plan.get("local", []) if lid in res), default=0)
    ll = lid_for("local", nl)
    if "local" in plan:
        for op in TARGET_OPS:
            row(f"local, warm `{op}` < {LOCAL_MS:.0f} ms at 10,000 deposits", ll,
                lambda st, s, op=op: warm_text(st, op), lambda st, s, op=op: warm(st, op)["median_ms"] < LOCAL_MS)
        for op in TARGET_OPS:
            row(f"local, new process `{op}` (no target: what it costs)", ll,
                lambda st, s, op=op: f"op {_ms(st['cold'][op]['op_ms'])} ms, process {st['cold'][op]['total_ms']:,.0f} ms",
                lambda st, s: None)
    if "s3" in plan:
        sl = lid_for("s3", 1000)
        row(f"S3, warm `count` < {S3_COUNT_MS:.0f} ms at 1,000 deposits", sl,
            lambda st, s: warm_text(st, "count"), lambda st, s: warm(st, "count")["median_ms"] < S3_COUNT_MS)
        row(f"S3, warm `count` < {S3_COUNT_REQ} requests at 1,000 deposits", sl,
            lambda st, s: f"{warm(st, 'count')['req']:.0f} requests (max {warm(st, 'count')['req_max']}) "
                          f"[{st['warm']['same']['count']['req']:.0f}]",
            lambda st, s: warm(st, "count")["req"] < S3_COUNT_REQ)
        for op in TARGET_OPS:
            row(f"S3, new process `{op}` < {S3_NEW_PROCESS_S:.0f} s (spawn to exit) at 1,000 deposits", sl,
                lambda st, s, op=op: f"{st['cold'][op]['total_ms'] / 1000:.2f} s (op {_ms(st['cold'][op]['op_ms'])} "
                                     f"ms, {st['cold'][op]['req']:.0f} requests)",
                lambda st, s, op=op: st["cold"][op]["total_ms"] < S3_NEW_PROCESS_S * 1000)
    for kind in kinds:
        nk = max((n for n, lid in plan[kind] if get(lid, "before")), default=None)
        if nk is None or nk == base_n:
            continue
        bound = math.log(nk) / math.log(base_n)
        lk, lb = lid_for(kind, nk), lid_for(kind, base_n)

        def growth(st: dict[str, Any], s: str, op: str, lb: str | None = lb) -> float | None:
            base = get(lb, s)
            return warm(st, op)["median_ms"] / warm(base, op)["median_ms"] if base else None

        for op in TARGET_OPS:
            row(f"{label[kind]}, warm `{op}`: growth {base_n:,} -> {nk:,} deposits <= {bound:.1f}x (logarithmic)", lk,
                lambda st, s, op=op, g=growth: "-" if g(st, s, op) is None else f"{g(st, s, op):.2f}x",
                lambda st, s, op=op, g=growth, b=bound: None if g(st, s, op) is None else g(st, s, op) <= b)
    out.append("")
    skipped = [lid for lid in lids if builds.get(lid, {}).get("skipped")]
    if skipped:
        out.append("Left out: " + ", ".join(f"`{lid}`" for lid in skipped) + " (too slow to build one deposit at a "
                   "time within `--s3-build-budget`; see the build table).")
        out.append("")
    out.append("Reproduce: `.venv/bin/python bench/lake.py` (lakes cached under `bench/_work/lake`, `--rebuild` to "
               "rebuild; `--deposits 10,1000,10000`, `--storage local,s3`, `--batch-above`, `--batch`, "
               "`--s3-build-budget`, `--probe`; `--render-only results.json` re-renders from an earlier `--json` run; `--probe-only results.json` measures the deposit probe alone and renders it into an earlier run's results).")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- main


def probe_only(args: Any, plan: dict[str, list[tuple[int, str]]], validation: tuple[str, str] | None,
               todo: list[tuple[str, bool]], s3: S3Server | None) -> None:
    """The deposit probe alone, on the cached lakes (as built), merged into an earlier run's results."""
    raw = json.loads(Path(args.probe_only).read_text())
    res, builds = raw["results"], raw["builds"]
    meter = CpuMeter()
    for lid, _ in todo:
        if lid not in res:
            print(f"[{lid}] not in {args.probe_only}: skipped", flush=True)
            continue
        b = ensure_built(lid, s3, False, args.s3_build_budget, None)
        if b.get("skipped") or not b.get("complete"):
            continue
        print(f"[{lid}] deposit probe: {args.probe} more deposits from a new process", flush=True)
        set_dirty(lid, True)
        p = measure_probe(lid, args.probe)
        for d in p["deposits"]:
            top = sorted(d["stmts"].items(), key=lambda x: -x[1])[:4]
            print(f"  deposit {d['k']}: {d['ms']:.0f} ms" + (f", {d['req']} requests" if lid.startswith("s3") else "")
                  + " | " + ", ".join(f"{k} {v:.0f}" for k, v in top), flush=True)
        res[lid].setdefault("probe_before", res[lid].get("probe"))
        res[lid]["probe"] = p
        print(f"[{lid}] restoring the lake as built", flush=True)
        restore(s3, lid)
        set_dirty(lid, False)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    res["_probe"] = {"date": dt.date.today().isoformat(), "git": git, "count": args.probe,
                     "base_git": raw.get("machine", {}).get("git", "?"), "others_cpus": meter.others()}
    section = render(res, builds, plan, validation, raw["machine"], args)
    print("\n" + section)
    if args.json:
        Path(args.json).write_text(json.dumps({"builds": builds, "results": res, "machine": raw["machine"]},
                                              indent=1, default=str))
    if not args.no_doc:
        write_section(DOC, SECTION, section)
        print(f"wrote the {SECTION} section of {DOC.relative_to(ROOT)}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        sys.path.insert(0, str(SRC))
        cmd, rest = sys.argv[1], sys.argv[2:]
        if cmd == "_build":
            return build_child(rest[0], Path(rest[1]))
        if cmd == "_warm":
            return warm_child(rest[0], int(rest[1]), int(rest[2]), Path(rest[3]))
        if cmd == "_compact":
            return compact_child(rest[0], Path(rest[1]))
        if cmd == "_probe":
            return probe_child(rest[0], int(rest[1]), Path(rest[2]))
        raise SystemExit(f"unknown {cmd}")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deposits", default="10,1000,10000", help="lake sizes in deposits, comma-separated")
    ap.add_argument("--storage", default="local,s3", help="local, s3 or both (comma-separated)")
    ap.add_argument("--runs", type=int, default=20, help="warm-process runs per operation (after one warm-up)")
    ap.add_argument("--cold-runs", type=int, default=5, help="new processes per operation")
    ap.add_argument("--probe", type=int, default=3, help="deposits of the deposit probe (0: none)")
    ap.add_argument("--no-compact", dest="compact", action="store_false", help="skip the after-compaction measurements")
    ap.add_argument("--batch-above", type=int, default=1000,
                    help="local lakes of more deposits than this are built in bulk, --batch deposits per commit")
    ap.add_argument("--batch", type=int, default=100, help="deposits per commit of a bulk build")
    ap.add_argument("--no-validate", dest="validate", action="store_false",
                    help="do not build and measure a bulk-built lake of 1,000 beside the one-at-a-time one")
    ap.add_argument("--s3-build-budget", type=float, default=900.0,
                    help="skip an S3 lake of more than 1,000 deposits whose build would take longer than this (s), "
                         "judged by the rate at the end of the previous S3 build")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the lakes")
    ap.add_argument("--build-only", action="store_true", help="build (and cache) the lakes, measure nothing")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    ap.add_argument("--json", default="", help="also write the raw results here")
    ap.add_argument("--probe-only", default="", metavar="JSON",
                    help="measure only the deposit probe (on the cached lakes) and render the section from the raw "
                         "results of an earlier --json run, its probes replaced (the earlier ones kept beside them)")
    ap.add_argument("--render-only", default="", metavar="JSON",
                    help="measure nothing: render (and write) the section from the raw results of an earlier --json run")
    args = ap.parse_args()
    ns = sorted(int(x.replace("_", "")) for x in args.deposits.split(","))
    kinds = [k for k in ("local", "s3") if k in args.storage.split(",")]
    plan = {kind: [(n, lid_of(kind, n, args.batch if kind == "local" and n > args.batch_above else 1)) for n in ns]
            for kind in kinds}
    validation = None
    if args.validate and "local" in kinds and 1000 in ns and any(n > args.batch_above for n in ns) \
            and args.batch_above >= 1000:
        validation = (lid_of("local", 1000), lid_of("local", 1000, args.batch))
    if args.render_only:
        raw = json.loads(Path(args.render_only).read_text())
        section = render(raw["results"], raw["builds"], plan, validation, raw["machine"], args)
        print(section)
        if not args.no_doc:
            write_section(DOC, SECTION, section)
            print(f"wrote the {SECTION} section of {DOC.relative_to(ROOT)}")
        return
    WORK.mkdir(parents=True, exist_ok=True)
    os.environ["MLIPLAKE_STATE_DIR"] = str(WORK / "state")
    s3 = S3Server(WORK / "moto.log") if "s3" in kinds else None
    builds: dict[str, Any] = {}
    res: dict[str, Any] = {}

    def dump() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps({"builds": builds, "results": res}, indent=1, default=str))

    try:
        todo = [(lid, True) for kind in kinds for _, lid in plan[kind]]
        if validation:
            todo.insert(todo.index((validation[0], True)) + 1, (validation[1], False))
        rate: dict[str, float] = {}
        if args.probe_only:
            return probe_only(args, plan, validation, todo, s3)
        for lid, full in todo:
            kind = parse_lid(lid)[0]
            b = ensure_built(lid, s3, args.rebuild, args.s3_build_budget, rate.get(kind))
            builds[lid] = b
            if b.get("skipped"):
                continue
            if parse_lid(lid)[2] == 1:
                rate[kind] = b["end_rate"]
            if not args.build_only:
                res[lid] = measure_lake(lid, args, s3, compact_too=full)
                dump()
    finally:
        if s3:
            s3.stop()
    if args.build_only:
        return
    mach = perfdoc.machine(("mliplake", "duckdb", "pyarrow", "moto", "numpy"))
    section = render(res, builds, plan, validation, mach, args)
    print("\n" + section)
    if args.json:
        Path(args.json).write_text(json.dumps({"builds": builds, "results": res, "machine": mach}, indent=1,
                                              default=str))
    if not args.no_doc:
        if ns[-1] < 1000:
            print("(not writing docs/performance.md: a small run)")
        else:
            write_section(DOC, SECTION, section)
            print(f"wrote the {SECTION} section of {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    main()
