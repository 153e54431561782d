"""Large extxyz files, parsed and normalised in worker processes, chunk by chunk, in file order.

The C parser holds the GIL, so threads do not help; processes do.  A cheap scan of
the atom-count lines finds frame boundaries; each worker seeks to its chunk and
returns canonical rows as Arrow IPC.  Any surprise (a damaged file the scan
cannot follow, a parser error inside a chunk, a worker that died) sends the whole
file back to the sequential reader, which knows how to recover frame by frame.
A frame of 0 atoms, which would crash the C parser, is found by the scan and
quarantined without reaching a worker.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from mliplake.core.schema import CONFIGURATIONS
from mliplake.ingest.normalise import FileContext, Rejection, normalise_batch
from mliplake.readers import MAX_ATOMS, ZERO_ATOMS, FrameError

# below this, worker start-up costs more than it saves (None: settings.parallel_min_bytes)
MIN_BYTES: int | None = None
CHUNK_FRAMES = 2500  # small: the last chunks decide how long both cores wait for the slowest
WINDOW = 16 << 20  # the first chunk can start after a short scan


class ScanError(Exception):
    """The file does not follow the count/comment/atoms structure; read it sequentially."""


@dataclass(frozen=True)
class Chunk:
    start_index: int
    offset: int  # byte offset of its first frame
    nframes: int
    end: int  # byte offset after its last frame
    line: int = 1  # line number of its first frame
    reason: str = ""  # set: one frame the parser must not see, quarantined for this reason


def workers() -> int:
    from mliplake.settings import Settings

    n = Settings().workers  # read per deposit: a long-lived process may be told another number
    return n if n else min(os.cpu_count() or 1, 8)


def wanted(path: Path, fmt: str) -> bool:
    from mliplake.settings import get_settings

    min_bytes = MIN_BYTES if MIN_BYTES is not None else get_settings().parallel_min_bytes
    return (fmt == "extxyz" and workers() > 1 and path.stat().st_size >= min_bytes
            and "fork" in mp.get_all_start_methods())


def chunks(path: Path, chunk_frames: int = CHUNK_FRAMES) -> Iterator[Chunk]:
    """Frame boundaries from the atom-count lines, read window by window (memory stays flat).

    Only short lines can be counts (atom lines carry a symbol and three numbers), and only
    the lines the walk lands on are decoded: one step per frame, not per line.  A frame of
    0 atoms becomes a chunk of its own, with the reason; a count past MAX_ATOMS is a ScanError.
    """
    size = path.stat().st_size
    skip = 0  # lines still to skip before the next count line
    index = chunk_index = chunk_start = 0
    chunk_line = 1
    empty: Chunk | None = None  # a 0-atom frame, yielded once the next frame's start (its end) is known
    carry = b""  # the start of a line cut by the window's end
    base = 0  # file offset of carry[0]
    lines_before = 0  # lines of the file before carry[0]
    with open(path, "rb") as f:
        while True:
            block = f.read(WINDOW)
            data = carry + block
            last = not block
            nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
            if last and (not len(nl) or nl[-1] != len(data) - 1) and data:
                nl = np.append(nl, len(data))  # a last line without its newline
            k, n_lines = skip, len(nl)
            while k < n_lines:
                begin, end = (int(nl[k - 1]) + 1 if k else 0), int(nl[k])
                text = data[begin:end].strip() if end - begin <= 24 else None
                if text is None or not text.isdigit():
                    if text == b"":
                        k += 1  # blank lines between frames
                        continue
                    raise ScanError(f"expected an atom count at byte {base + begin}")
                at, natoms = base + begin, int(text)
                if natoms > MAX_ATOMS:
                    raise ScanError(f"an atom count past MAX_ATOMS at byte {at}")
                if empty is not None:
                    yield replace(empty, end=at)
                    empty = None
                if natoms == 0:
                    if index > chunk_index:
                        yield Chunk(chunk_index, chunk_start, index - chunk_index, at, chunk_line)
                    line = lines_before + k + 1
                    empty = Chunk(index, at, 1, at, line, f"line {line}: {ZERO_ATOMS}")
                    index += 1
                    chunk_index = index
                    k += 2
                    continue
                if index - chunk_index == chunk_frames:
                    yield Chunk(chunk_index, chunk_start, index - chunk_index, at, chunk_line)
                    chunk_index = index
                if index == chunk_index:
                    chunk_start, chunk_line = at, lines_before + k + 1
                index += 1
                k += natoms + 2
            skip = k - n_lines
            if last:
                break
            cut = int(nl[-1]) + 1 if len(nl) else 0
            carry = data[cut:]
            base += cut
            lines_before += n_lines
    if skip > 0 and empty is None:
        raise ScanError("the last frame is truncated")
    if empty is not None:
        yield replace(empty, end=size)
    if index > chunk_index:
        yield Chunk(chunk_index, chunk_start, index - chunk_index, size, chunk_line)


def _work(path: str, chunk: Chunk, ctx: FileContext) -> tuple[bytes, list[Rejection], dict[str, int]] | None:
    from mliplake.readers import read_extxyz_range

    usage: dict[str, int] = {}
    items = list(read_extxyz_range(Path(path), chunk.offset, chunk.start_index, chunk.nframes, chunk.line))
    if len(items) != chunk.nframes:
        return None
    frames = [x for x in items if not isinstance(x, FrameError)]
    table, rejected = normalise_batch(frames, ctx, usage)
    errors = [Rejection(x.index, x.reason) for x in items if isinstance(x, FrameError)]
    if errors:
        rejected = sorted(errors + rejected, key=lambda r: r.frame_index)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes(), rejected, usage


def _rejected(chunk: Chunk) -> Future:
    """The result of a chunk whose one frame never reaches a worker."""
    fut: Future = Future()
    fut.set_result((None, [Rejection(chunk.start_index, chunk.reason)], {}))
    return fut


def _die_with_parent() -> None:
    """Linux: a worker gets SIGKILL when the process that forked it dies (even by SIGKILL), instead
    of lingering forever, blocked on a result pipe that nobody reads."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _without_pandas() -> None:
    """pyarrow imports pandas (a quarter of a second) at its first conversion, only to ask whether
    the input is a DataFrame; a worker never gets one.  pyarrow tries that import once and, when it
    fails, answers "no" from then on (an explicit pandas conversion would still import it)."""
    import sys

    if "pandas" in sys.modules:
        return  # the parent had it: the fork shares it for free

    class Refuse:
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name == "pandas" or name.startswith("pandas."):
                raise ImportError(f"{name}: not needed in a parser process")

    finder = Refuse()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
    except ImportError:
        pass
    finally:
        sys.meta_path.remove(finder)


def _init_worker() -> None:
    _die_with_parent()
    _without_pandas()


# held while workers are forked: a thread that loads shared libraries (DuckDB's extensions) takes
# it too, so that no child starts life with the dynamic loader's lock held by a thread it lacks
FORK_LOCK = threading.Lock()


def pool() -> ProcessPoolExecutor:
    """Workers forked from this process: no re-import of the caller's ``__main__`` (which spawn
    and forkserver need), and they inherit the loaded modules.  The workers only parse and
    build Arrow arrays, which needs none of the threads a fork leaves behind.  All of them are
    forked here, at once (the first task of a fork-context pool starts every worker)."""
    ex = ProcessPoolExecutor(max_workers=workers(), mp_context=mp.get_context("fork"),
                             initializer=_init_worker)
    with FORK_LOCK:
        try:
            ex.submit(int).result()
        except BaseException:
            ex.shutdown(cancel_futures=True)
            raise
    return ex


def normalise_file(path: Path, ctx: FileContext) -> Iterator[tuple[pa.Table, list[Rejection], dict[str, int], int]]:
    """(table, rejections, key usage, bytes read) per chunk, in file order; raises ScanError to fall back."""
    from extxyz import cextxyz  # noqa: F401  (imported once here, so the forked workers inherit it)

    with pool() as ex:
        yield from _run(ex, path, ctx)


def _run(ex: ProcessPoolExecutor, path: Path, ctx: FileContext) -> Iterator[tuple[pa.Table, list[Rejection], dict[str, int], Chunk]]:
    inflight: list[tuple[Chunk, Future]] = []
    limit = 3 * workers()  # bounded: memory stays flat whatever the file size
    it = chunks(path)
    scan_error: ScanError | None = None

    def fill() -> None:
        nonlocal scan_error
        while len(inflight) < limit and scan_error is None:
            try:
                c = next(it)
            except StopIteration:
                return
            except ScanError as e:
                scan_error = e
                return
            try:
                fut = _rejected(c) if c.reason else ex.submit(_work, str(path), c, ctx)
            except BrokenProcessPool:
                scan_error = ScanError(f"a parser process died before the chunk from frame {c.start_index}")
                return
            inflight.append((c, fut))

    fill()
    if scan_error is not None and not inflight:
        raise scan_error
    while inflight:
        c, fut = inflight.pop(0)
        try:
            result = fut.result()
        except BrokenProcessPool:  # a worker died (the C parser on input no check foresaw)
            result = None
        if result is None:
            for _, f in inflight:
                f.cancel()
            raise ScanError(f"a chunk from frame {c.start_index} did not parse")
        fill()
        data, rejected, usage = result
        table = pa.ipc.open_stream(data).read_all() if data is not None else CONFIGURATIONS.empty_table()
        yield table, rejected, usage, c
    if scan_error is not None:
        raise scan_error
