"""Deposits: raw files kept byte for byte, frames normalised into shards, nothing lost."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mliplake import __version__
from mliplake.core.manifest import Manifest, ManifestError, load_manifest, manifest_from_bytes, parse_manifest
from mliplake.core.schema import CONFIGURATIONS, HASH_VERSION, LABELS, PARQUET_OPTIONS, QUARANTINE
from mliplake.core.sql import quote_list
from mliplake.ingest import parallel
from mliplake.ingest.normalise import FileContext, normalise_batch
from mliplake.readers import FrameError, RawFrame, ReaderError, detect_format, read_frames

if TYPE_CHECKING:
    from mliplake.lake import Lake

BATCH = 2000
MANIFEST_NAMES = ("manifest.yaml", "manifest.yml", "manifest.json", "mliplake.yaml")


class DepositError(Exception):
    """A deposit that could not be made at all (its raw files are still kept)."""


@dataclass
class FileReport:
    name: str
    sha256: str
    bytes: int
    format: str = ""
    frames_read: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    error: str = ""


@dataclass
class DepositReport:
    deposit_id: str
    dataset: str
    status: str = "stored"
    files: list[FileReport] = field(default_factory=list)
    frames_read: int = 0
    stored: int = 0
    duplicates: int = 0  # exact copies (same config_id) in this deposit or earlier ones of the dataset
    relabelled: int = 0  # same structure as another stored frame but different labels: kept, linked
    quarantined: int = 0
    atoms: int = 0
    reasons: Counter = field(default_factory=Counter)
    key_mapping: dict[str, int] = field(default_factory=dict)
    elements: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    bytes_written: int = 0  # the table's new data files (staged rows are copied in, compressed)
    seconds: float = 0.0
    error: str = ""
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"deposit {self.deposit_id} -> dataset {self.dataset}: {self.status}",
            f"  frames read {self.frames_read}, stored {self.stored}, duplicates {self.duplicates}, "
            f"quarantined {self.quarantined}" + (f", relabelled structures {self.relabelled}" if self.relabelled else ""),
        ]
        renamed = {k: n for k, n in self.key_mapping.items() if k.split("->")[0] != k.split("->")[1]}
        if renamed:
            lines.append("  keys mapped: " + ", ".join(f"{k} ({n})" for k, n in sorted(renamed.items())))
        for f in self.files:
            lines.append(f"  {f.name} [{f.format or '?'}]: read {f.frames_read}, stored {f.stored}, "
                         f"duplicates {f.duplicates}, quarantined {f.quarantined}" + (f" - {f.error}" if f.error else ""))
        if self.reasons:
            lines.append("  quarantine reasons:")
            for why, n in self.reasons.most_common(8):
                lines.append(f"    {n} x {why}")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        if self.error:
            lines.append(f"  error: {self.error}")
        lines.append(f"  {self.seconds:.2f} s, {self.bytes_written / 1e6:.2f} MB written")
        return "\n".join(lines)


def _expand(paths: list[Path]) -> tuple[list[tuple[str, Path]], Path | None]:
    """Files of a deposit with their names inside it, and a manifest found beside them.

    A file keeps its path relative to the folder given (``run1/OUTCAR``), or, for files given one
    by one, relative to their common folder (``a/data.xyz``, ``b/data.xyz``): two files with the
    same name never collide, and no name can climb out of the deposit."""
    files: list[tuple[str, Path]] = []
    found = None
    loose: list[Path] = []
    for p in paths:
        if p.is_dir():
            base = p.resolve()
            for q in sorted(x for x in base.rglob("*") if x.is_file() and not _hidden(x.relative_to(base))):
                if q.name in MANIFEST_NAMES and q.parent == base:
                    found = found or q
                else:
                    files.append((q.relative_to(base).as_posix(), q))
        elif p.name in MANIFEST_NAMES and p.exists():
            found = found or p
        else:
            loose.append(p)
    if loose:
        parents = [str(p.resolve().parent) for p in loose if p.exists()]
        common = Path(os.path.commonpath(parents)) if parents else Path("/")
        for p in loose:
            name = p.resolve().relative_to(common).as_posix() if p.exists() else p.name
            files.append((name, p))
    names = [n for n, _ in files]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise DepositError(f"the same file name twice in one deposit: {', '.join(clash)}")
    return files, found


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _resolve_manifest(manifest: Any, found: Path | None, dataset: str | None) -> Manifest:
    if isinstance(manifest, Manifest):
        if dataset and dataset != manifest.dataset:
            manifest.dataset = dataset
        return manifest
    if isinstance(manifest, dict):
        return parse_manifest(manifest, dataset=dataset)
    if manifest is not None:
        return load_manifest(manifest, dataset=dataset)
    if found is not None:
        return load_manifest(found, dataset=dataset)
    if not dataset:
        raise ManifestError("no manifest and no dataset name: give --dataset NAME or a manifest")
    return parse_manifest({"dataset": dataset}, dataset=dataset)


def deposit_id_for(dataset: str, files: list[tuple[str, str]]) -> str:
    """Content-addressed: the same files into the same dataset are the same deposit (re-runs replace)."""
    h = hashlib.sha256(f"mliplake/deposit/v1\n{dataset}\n".encode())
    for name, digest in sorted(files):
        h.update(f"{name}\t{digest}\n".encode())
    return "dep-" + h.hexdigest()[:16]


def _batches(items: Iterator[RawFrame | FrameError], size: int) -> Iterator[tuple[list[RawFrame], list[FrameError], int | None]]:
    frames: list[RawFrame] = []
    errors: list[FrameError] = []
    offset = None
    for it in items:
        if isinstance(it, FrameError):
            errors.append(it)
            continue
        frames.append(it)
        offset = it.offset if it.offset is not None else offset
        if len(frames) >= size:
            yield frames, errors, offset
            frames, errors = [], []
    if frames or errors:
        yield frames, errors, offset


Rejected = list[tuple[int | None, str]]


def _file_batches(path: Path, fmt: str, ctx: FileContext,
                  usage: dict[str, int]) -> Iterator[tuple[pa.Table, Rejected, int, int | None]]:
    """(canonical rows, rejected (frame, reason), frames read, bytes read so far) per batch of a file."""
    done = 0
    if parallel.wanted(path, fmt):
        try:
            for table, rejected, chunk_usage, chunk in parallel.normalise_file(path, ctx):
                for k, n in chunk_usage.items():
                    usage[k] = usage.get(k, 0) + n
                done = chunk.start_index + chunk.nframes
                yield table, [(r.frame_index, r.reason) for r in rejected], chunk.nframes, chunk.end
            return
        except parallel.ScanError:
            pass  # a damaged file: the sequential reader recovers frame by frame, from where we stopped
    for frames, errors, offset in _batches(read_frames(path, fmt), BATCH):
        if done:
            frames = [f for f in frames if f.index >= done]
            errors = [e for e in errors if e.index is None or e.index >= done]
        table, rejected = normalise_batch(frames, ctx, usage)
        yield (table, [(e.index, e.reason) for e in errors] + [(r.frame_index, r.reason) for r in rejected],
               len(frames) + len(errors), offset)


ROW_GROUP = 16_384  # measured: most of the scan speed-up of big groups, and sorted fetches stay fast


class _ShardWriter:
    """Streams tables into size-bounded Parquet shards, each published atomically.

    Batches are gathered into full row groups (what makes later scans fast), and each row group is
    encoded on a background thread (pyarrow releases the GIL), so the reading side keeps going."""

    def __init__(self, lake: Lake, directory: Callable[[], str], attempt: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.lake, self._dir, self.attempt = lake, directory, attempt
        self.paths: list[str] = []
        self.bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._ctx = None
        self._rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mliplake-shards")
        self._inflight = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= min(ROW_GROUP, self.lake.settings.shard_rows):
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        self._wait()  # one row group in flight at a time: memory stays bounded
        self._inflight = self._thread.submit(self._write_now, table)

    def _wait(self) -> None:
        if self._inflight is not None:
            self._inflight.result()  # re-raises a failed write here
            self._inflight = None

    def _write_now(self, table: pa.Table) -> None:
        if self._writer is None:
            path = f"{self._dir()}/part-{self.attempt}-{len(self.paths):05d}.parquet"
            self._ctx = self.lake.atomic_open(path, durable=False)
            f = self._ctx.__enter__()
            self._writer = pq.ParquetWriter(f, CONFIGURATIONS, **_staging_options(self.lake))
            self.paths.append(path)
            self._rows = 0
        self._writer.write_table(table, row_group_size=ROW_GROUP)
        self._rows += table.num_rows
        if self._rows >= self.lake.settings.shard_rows:
            self._close_file()

    def close(self) -> None:
        self._flush()
        self._wait()
        self._thread.shutdown()
        self._close_file()

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._ctx.__exit__(None, None, None)
            self._writer = self._ctx = None
            self.bytes += self.lake.fs.size(self.paths[-1])


def _staging_options(lake: Lake) -> dict[str, Any]:
    """Staged files are read once, by the commit, which writes the table's own compressed files:
    on local disk they are not compressed (encoding twice costs more than the bytes); on an
    object store they go over the network, so they are."""
    return dict(PARQUET_OPTIONS) if not lake.local else {"compression": "none", "use_dictionary": False}


@dataclass
class Source:
    """A file to deposit: on this machine, or already in the lake (the inbox)."""

    name: str
    fs: Any
    path: str
    size: int = 0
    sha256: str = ""

    def open(self) -> Any:
        return self.fs.open(self.path, "rb")

    def digest(self) -> str:
        h = hashlib.sha256()
        with self.open() as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        self.sha256 = h.hexdigest()
        return self.sha256


@dataclass
class Staged:
    """A deposit whose originals are in the raw zone, ready to ingest."""

    deposit_id: str
    manifest: Manifest
    files: list[FileReport]


def _store_raw(lake: Lake, deposit_id: str, sources: list[Source], manifest: Source | None,
               move: bool = False) -> None:
    raw = lake.raw_dir(deposit_id)
    for src in sources:
        dest = f"{raw}/files/{src.name}"
        if not (lake.fs.exists(dest) and lake.fs.size(dest) == src.size):  # same name, same bytes: kept
            _copy(lake, src, dest, move)
    sums = "".join(f"{s.sha256}  {s.name}\n" for s in sources)
    if manifest is not None:
        sums += f"{manifest.sha256 or manifest.digest()}  {manifest.name}\n"
        _copy(lake, manifest, f"{raw}/{manifest.name}", move)
    lake.write_bytes(f"{raw}/SHA256SUMS", sums.encode())


def _copy(lake: Lake, src: Source, dest: str, move: bool) -> None:
    if src.fs is lake.fs and (move or not lake.local):  # a rename, or a server-side copy
        lake.fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
        if move:
            lake.fs.mv(src.path, dest)
        else:
            lake.fs.copy(src.path, dest)
        return
    with src.open() as f, lake.atomic_open(dest) as out:
        if not (lake.local and _local(src) and _copy_in_kernel(f, out)):
            while chunk := f.read(1 << 22):
                out.write(chunk)


def _local(src: Source) -> bool:
    proto = src.fs.protocol
    return "file" in (proto if isinstance(proto, tuple) else (proto,))


def _copy_in_kernel(f: Any, out: Any) -> bool:
    """File to file without passing the bytes through Python (``copy_file_range``); False where the
    kernel or the file system cannot, before anything was written."""
    try:
        infd, outfd = f.fileno(), out.fileno()
        n = os.copy_file_range(infd, outfd, 1 << 30)
    except (AttributeError, OSError, ValueError):
        return False
    while n:
        n = os.copy_file_range(infd, outfd, 1 << 30)
    return True


def _quarantine_table(dataset: str, deposit_id: str, rows: list[tuple[str, int | None, str]]) -> pa.Table:
    return pa.table(
        {
            "dataset": [dataset] * len(rows),
            "deposit_id": [deposit_id] * len(rows),
            "source_file": [r[0] for r in rows],
            "frame_index": [r[1] for r in rows],
            "reason": [_short_reason(r[2]) for r in rows],
            "detail": [r[2] for r in rows],
        },
        schema=QUARANTINE,
    )


def _short_reason(detail: str) -> str:
    # reasons group by their kind: "line 12: truncated: ..." -> "truncated: ..."
    s = detail.split(": ", 1)[1] if detail.startswith("line ") and ": " in detail else detail
    return s.split(" (the manifest")[0][:120]


def deposit(lake: Lake, paths: list[Path], dataset: str | None = None, manifest: Any = None,
            progress: bool | None = False, replace: bool = False) -> DepositReport:
    """Files on this machine (and a manifest) into the lake: keep the originals, ingest, commit.

    The originals are hashed (their SHA-256 makes the deposit id) and copied into the raw zone on
    a background thread while the parsers read them where they are; rows get their deposit id as
    they arrive, and the commit waits for the copy, so a committed deposit always has its raw files.
    """
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    sources, msrc, m = _prepare(lake, paths, dataset, manifest)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mliplake-raw") as pool:
        staged = pool.submit(_identify, sources, m)  # the SHA-256 of every file, hence the deposit id
        copy = pool.submit(lambda: _store_raw(lake, staged.result().deposit_id, sources, msrc))
        report = _ingest(lake, m, staged, [(s.name, Path(s.path)) for s in sources], progress,
                         before_commit=copy.result, replace=replace)
    report.seconds = time.perf_counter() - t0
    return report


def _local_sources(paths: list[Path]) -> tuple[list[Source], Path | None]:
    files, found = _expand(paths)
    missing = [str(p) for _, p in files if not p.is_file()]
    if missing:
        raise DepositError(f"no such file: {', '.join(missing)}")
    if not files:
        raise DepositError("nothing to deposit: no data files given")
    local = fsspec.filesystem("file")
    return [Source(name, local, str(p.resolve()), p.stat().st_size) for name, p in files], found


def _prepare(lake: Lake, paths: list[Path], dataset: str | None,
             manifest: Any) -> tuple[list[Source], Source | None, Manifest]:
    sources, found = _local_sources(paths)
    manifest_path = Path(manifest) if isinstance(manifest, (str, Path)) else found
    msrc = None
    if manifest_path is not None and manifest_path.exists():
        msrc = Source(manifest_path.name, fsspec.filesystem("file"), str(manifest_path.resolve()),
                      manifest_path.stat().st_size)
    try:
        m = _resolve_manifest(manifest, found, dataset)
    except ManifestError as e:
        _reject(lake, sources, msrc, dataset, e)
    return sources, msrc, m


def stage(lake: Lake, paths: list[Path], dataset: str | None = None, manifest: Any = None) -> Staged:
    """Keep the originals in the raw zone, byte for byte, with their checksums."""
    return _stage(lake, *_prepare(lake, paths, dataset, manifest), move=False)


def stage_inbox(lake: Lake, name: str, dataset: str | None = None) -> Staged:
    """An inbox folder (``inbox/<name>/``: data files and a manifest) moved into the raw zone."""
    folder = lake.path("inbox", name)
    entries = [e for e in lake.fs.find(folder, detail=True).values() if e["type"] == "file"]
    sources, msrc = [], None
    for e in sorted(entries, key=lambda e: e["name"]):
        rel = e["name"][len(folder.rstrip("/")) + 1:]
        if _hidden(Path(rel)):
            continue
        src = Source(rel, lake.fs, e["name"], int(e.get("size") or 0))
        if rel in MANIFEST_NAMES:
            msrc = msrc or src
        else:
            sources.append(src)
    if not sources:
        raise DepositError(f"inbox/{name}: no data files")
    try:
        if msrc is None:
            if not dataset:
                raise ManifestError(f"inbox/{name}: no manifest ({' or '.join(MANIFEST_NAMES[:3])})")
            m = parse_manifest({"dataset": dataset}, dataset=dataset)
        else:
            from mliplake.core.manifest import MAX_MANIFEST_BYTES

            with msrc.open() as f:  # read no more than a manifest may hold: a huge one is refused unread
                data = f.read(MAX_MANIFEST_BYTES + 1)
            if len(data) > MAX_MANIFEST_BYTES:
                raise ManifestError(f"inbox/{name}/{msrc.name}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; "
                                    "a manifest describes the data, it does not hold it")
            m = manifest_from_bytes(data, f"inbox/{name}/{msrc.name}", dataset)
    except ManifestError as e:
        _reject(lake, sources, msrc, dataset, e)
    staged = _stage(lake, sources, msrc, m, move=True)
    if lake.fs.exists(folder):
        lake.fs.rm(folder, recursive=True)
    return staged


def _reject(lake: Lake, sources: list[Source], msrc: Source | None, dataset: str | None, e: ManifestError) -> None:
    for s in sources:
        s.sha256 or s.digest()
    name = dataset or "_rejected"
    # An id of its own: a rejected attempt must never replace a stored deposit of the same files.
    dep = deposit_id_for(f"_rejected/{name}", [(s.name, s.sha256) for s in sources])
    _store_raw(lake, dep, sources, msrc)
    report = DepositReport(dep, name, status="rejected", error=str(e),
                           files=[FileReport(s.name, s.sha256, s.size) for s in sources])
    _commit(lake, report, None, [], _quarantine_table(name, dep, []), replace=True)
    raise DepositError(f"{e} (deposit {dep} rejected; raw files kept in {lake.uri(lake.raw_dir(dep))})") from None


def _identify(sources: list[Source], m: Manifest) -> Staged:
    for s in sources:
        s.sha256 or s.digest()
    dep = deposit_id_for(m.dataset, [(s.name, s.sha256) for s in sources])
    return Staged(dep, m, [FileReport(s.name, s.sha256, s.size) for s in sources])


def _stage(lake: Lake, sources: list[Source], msrc: Source | None, m: Manifest, move: bool) -> Staged:
    staged = _identify(sources, m)
    _store_raw(lake, staged.deposit_id, sources, msrc, move=move)
    return staged


@contextmanager
def _local_raw(lake: Lake, staged: Staged) -> Iterator[list[tuple[str, Path]]]:
    """The staged originals as (name, path the parsers can open) (S3: a temporary local copy)."""
    raw = lake.raw_dir(staged.deposit_id)
    if lake.local:
        yield [(f.name, Path(f"{raw}/files/{f.name}")) for f in staged.files]
        return
    with tempfile.TemporaryDirectory(prefix="mliplake-") as tmp:
        paths = []
        for i, f in enumerate(staged.files):
            local = Path(tmp) / f"{i:06d}-{Path(f.name).name}"
            lake.fs.get_file(f"{raw}/files/{f.name}", str(local))
            paths.append((f.name, local))
        yield paths


def ingest(lake: Lake, staged: Staged, progress: bool | None = False, replace: bool = False) -> DepositReport:
    """Normalise a staged deposit into data files and quarantine, and commit it."""
    with _local_raw(lake, staged) as paths:
        done: Future[Staged] = Future()
        done.set_result(staged)
        return _ingest(lake, staged.manifest, done, paths, progress, replace=replace)


def _ingest(lake: Lake, m: Manifest, staged: Future[Staged], files: list[tuple[str, Path]],
            progress: bool | None, before_commit: Callable[[], Any] | None = None,
            replace: bool = False) -> DepositReport:
    """``staged`` may still be hashing: nothing here waits for the deposit id before the first rows.

    Duplicates within the deposit are dropped here; duplicates of other deposits of the dataset
    are found by the commit itself, against the snapshot it commits on (see :func:`_commit`)."""
    t0 = time.perf_counter()
    dep = lambda: staged.result().deposit_id  # noqa: E731
    report = DepositReport("", m.dataset)
    attempt = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
    seen: set[str] = set()
    struct_seen: set[str] = set()
    writer = _ShardWriter(lake, lambda: lake.shard_dir("configurations", m.dataset, dep()), attempt)
    quarantine: list[tuple[str, int | None, str]] = []
    elements: set[str] = set()
    labels: set[str] = set()
    deposited_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    bar = None
    if progress is not False:
        from tqdm import tqdm

        total = sum(p.stat().st_size for _, p in files)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"deposit {m.dataset}",
                   disable=None if progress is None else not progress, leave=False)
    warming = None
    for name, p in files:
        fr = FileReport(name, "", p.stat().st_size)
        report.files.append(fr)
        entry = m.file_entry(name) or m.file_entry(Path(name).name)
        fmt = (entry.format if entry else None) or detect_format(p)
        fr.format = fmt
        ctx = FileContext(m.dataset, dep() if staged.done() else "", name, m, entry.info if entry else {},
                          deposited_at)
        done = 0
        try:
            for table, rejected, nread, offset in _file_batches(p, fmt, ctx, report.key_mapping):
                if warming is None:  # after the first batch: a parallel file's workers exist by now
                    warming = _open_tables_meanwhile(lake)
                fr.frames_read += nread
                quarantine += [(name, index, reason) for index, reason in rejected]
                fr.quarantined += len(rejected)
                if ctx.deposit_id != dep() and table.num_rows:
                    i = table.schema.get_field_index("deposit_id")
                    table = table.set_column(i, table.schema.field(i), pa.array([dep()] * table.num_rows, pa.string()))
                table = _dedupe(table, seen, struct_seen, fr, report)
                if table.num_rows:
                    _collect(table, elements, labels)
                    report.atoms += int(pc.sum(table.column("nsites")).as_py())
                writer.write(table)
                if bar is not None and offset is not None:
                    bar.update(offset - done)
                    done = offset
        except ReaderError as e:
            fr.error = str(e)
            fr.quarantined += 1
            quarantine.append((name, None, f"unreadable file: {e}"))
        if bar is not None:
            bar.update(fr.bytes - done)
    writer.close()
    if bar is not None:
        bar.close()
    report.deposit_id = dep()
    for fr, sf in zip(report.files, staged.result().files):
        fr.sha256 = sf.sha256

    report.frames_read = sum(f.frames_read for f in report.files)
    report.stored = sum(f.stored for f in report.files)
    report.duplicates = sum(f.duplicates for f in report.files)
    report.quarantined = len(quarantine)
    report.reasons = Counter(_short_reason(q[2]) for q in quarantine)
    report.elements = sorted(elements)
    report.labels = sorted(labels)
    _warn_unused_keys(report, m)
    if before_commit is not None:
        before_commit()
    report.seconds = time.perf_counter() - t0
    try:
        _commit(lake, report, m, writer.paths, _quarantine_table(m.dataset, dep(), quarantine), replace)
    finally:
        _drop_staged(lake, writer.paths)
    # the deposit added a file (and catalog rows): past a limit they are merged, so that the next
    # commit's statements, which read the catalog's file lists, do not grow with the lake
    lake.tables.compact_small()
    return report


def _open_tables_meanwhile(lake: Lake) -> Any:
    """Open the lake's tables (extensions loaded, catalog attached) while the files are parsed, so
    that the commit does not wait for it.  A failure here is the commit's to report."""
    import threading

    def warm() -> None:
        try:
            with parallel.FORK_LOCK:  # loading extensions must not overlap a fork of parser workers
                lake.tables.base()
        except Exception:  # noqa: BLE001 - the commit opens them again and raises what went wrong
            pass

    thread = threading.Thread(target=warm, name="mliplake-open-tables", daemon=True)
    thread.start()
    return thread


def _drop_staged(lake: Lake, paths: list[str]) -> None:
    """The staged files were copied into the table (or the commit failed): they go.  Files of an
    attempt killed before this point are orphans that ``maintain`` deletes past the retention."""
    for p in paths:
        try:
            lake.fs.rm(p)
        except OSError:
            pass


def _warn_unused_keys(report: DepositReport, m: Manifest) -> None:
    try:
        from mliplake.core.manifest import unused_key_map
    except ImportError:  # pragma: no cover - older manifest module
        return
    report.warnings += unused_key_map(m, report.key_mapping)


def _dedupe(table: pa.Table, seen: set[str], struct_seen: set[str], fr: FileReport,
            report: DepositReport) -> pa.Table:
    ids = table.column("config_id").to_pylist()
    shs = table.column("structure_hash").to_pylist()
    keep = np.ones(len(ids), bool)
    for i, (cid, sh) in enumerate(zip(ids, shs)):
        if cid in seen:
            keep[i] = False
            continue
        seen.add(cid)
        if sh in struct_seen:
            report.relabelled += 1
        struct_seen.add(sh)
    fr.duplicates += int((~keep).sum())
    fr.stored += int(keep.sum())
    return table if keep.all() else table.filter(pa.array(keep))


def _collect(table: pa.Table, elements: set[str], labels: set[str]) -> None:
    elements.update(pc.unique(pc.list_flatten(table.column("elements"))).to_pylist())
    for name in LABELS:
        if table.column(name).null_count < table.num_rows:
            labels.add(name)


def _commit(lake: Lake, report: DepositReport, m: Manifest | None, files: list[str], quarantine: pa.Table,
            replace: bool = False) -> None:
    """One DuckLake transaction: the previous version of the deposit out, its new rows, quarantine
    and record in; retried from the start when another writer commits first, so that the
    duplicate check always runs against the snapshot the commit lands on."""
    from mliplake.access import make_policy
    from mliplake.storage.tables import arrow_rows

    dep, dataset = report.deposit_id, report.dataset
    uris = [lake.uri(p) for p in files]
    within = report.duplicates  # duplicates inside the deposit itself, found while reading
    if m is not None:
        lake.write_json(f"{lake.raw_dir(dep)}/manifest.json", m.to_dict())

    attempts = [0]

    def work(cur: Any) -> None:
        attempts[0] += 1
        prev = cur.execute("SELECT stored, retracted_at, status FROM lake.deposits WHERE deposit_id = ?",
                           [dep]).fetchone()
        _check_replace(report, prev, replace)
        cur.execute("CALL lake.set_commit_message(?, ?)", [lake.principal.name or lake.principal.kind,
                                                           f"deposit {dep} into {dataset}"])
        if prev is not None:
            # the previous version out.  Without a record there is nothing to delete: rows, quarantine
            # and record are only ever written together, by this transaction, and records are never
            # deleted but here (a retraction keeps its record).  Each DELETE reads the table's file
            # list, so a new deposit does not pay for three of them.
            for table in ("configurations", "quarantine", "deposits"):
                cur.execute(f"DELETE FROM lake.{table} WHERE deposit_id = ?", [dep])
        dups = _store_rows(cur, dataset, uris)
        report.duplicates = within + dups
        report.stored = sum(f.stored for f in report.files) - dups
        if report.stored == 0 and report.status != "rejected":
            report.status = "empty" if not report.quarantined else "quarantined"
        if quarantine.num_rows:
            cur.register("_quarantine", quarantine)
            cur.execute("INSERT INTO lake.quarantine SELECT * FROM _quarantine")
            cur.unregister("_quarantine")
        arrow_rows(cur, "deposits", [_record_row(lake, report, m)])
        if m is not None and not cur.execute("SELECT 1 FROM lake.policies WHERE dataset = ?", [dataset]).fetchone():
            who = lake.principal
            owner = who.name if who.kind in ("user", "admin") else (m.owner or m.submitter or who.name)
            policy = make_policy(dataset, m.visibility, owner,
                                 getattr(m, "groups", ()), getattr(m, "embargo_until", None),
                                 updated_by=lake.principal.name or lake.principal.kind)
            arrow_rows(cur, "policies", [policy.to_row()])

    lake.tables.transaction(work, serialise=True)
    if files:
        report.bytes_written = lake.tables.bytes_added(f"deposit {dep} into {dataset}")


def _check_replace(report: DepositReport, prev: Any, replace: bool) -> None:
    if prev is None or replace:
        return
    stored, retracted_at, status = prev
    if retracted_at:
        raise DepositError(f"deposit {report.deposit_id} was retracted ({retracted_at}); depositing the same "
                           "files again needs replace=True (--replace)")
    if report.stored == 0 and report.quarantined and stored:
        raise DepositError(f"every frame of deposit {report.deposit_id} was quarantined "
                           f"({', '.join(f'{n} x {r}' for r, n in report.reasons.most_common(3))}); the stored "
                           f"version ({stored} configurations) is kept. Pass replace=True (--replace) to replace it")


def _store_rows(cur: Any, dataset: str, uris: list[str]) -> int:
    """Copy the deposit's staged rows into the table, leaving out rows already stored in the
    dataset.  Returns how many were left out.

    A copy, not ``ducklake_add_data_files``: registering files crashed writer processes (SIGSEGV in
    DuckLake 1.5.5; it matches duckdb/ducklake#1431) when several wrote at once on S3 and locally.  The copy
    costs DuckDB one more read and write of the deposit's rows, about a third of a deposit's CPU
    time (docs/performance.md, Ingest)."""
    if not uris:
        return 0
    files = f"[{quote_list(uris)}]"
    cur.execute(f"""CREATE OR REPLACE TEMP TABLE _dups AS
                    SELECT config_id FROM read_parquet({files}, hive_partitioning = false) WHERE config_id IN
                    (SELECT config_id FROM lake.configurations WHERE dataset = ?)""", [dataset])
    dups = cur.execute("SELECT count(*) FROM _dups").fetchone()[0]
    cur.execute(f"INSERT INTO lake.configurations SELECT * FROM read_parquet({files}, hive_partitioning = false) "
                "WHERE config_id NOT IN (SELECT config_id FROM _dups)")
    cur.execute("DROP TABLE _dups")
    return int(dups)


def _record_row(lake: Lake, report: DepositReport, m: Manifest | None) -> dict[str, Any]:
    rel = lambda p: p[len(lake.root) + 1:]  # noqa: E731
    # bytes_written is known once the commit has written the table's files, after the record
    record = {k: v for k, v in asdict(report).items() if k not in ("reasons", "bytes_written")}
    created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    md = m.to_dict() if m else {}
    record.update(
        reasons=dict(report.reasons.most_common()),
        created_at=created,
        manifest=md or None,
        raw=rel(lake.raw_dir(report.deposit_id)),
        mliplake_version=__version__,
        hash_version=HASH_VERSION,
        error=report.error,
    )
    return {
        "deposit_id": report.deposit_id, "dataset": report.dataset, "status": report.status,
        "created_at": created, "submitter": (m.submitter if m else "") or lake.principal.name,
        "frames_read": report.frames_read, "stored": report.stored, "duplicates": report.duplicates,
        "relabelled": report.relabelled, "quarantined": report.quarantined, "atoms": report.atoms,
        "elements": report.elements, "labels": report.labels, "title": md.get("title", ""),
        "license": md.get("license", ""), "method": json.dumps(md.get("method", {}), sort_keys=True),
        "record": json.dumps(record, sort_keys=True, default=str),
        "retracted_at": None, "retracted_by": None, "retraction_reason": None, "purged": False,
    }
