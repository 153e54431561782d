"""Large extxyz files, parsed and normalised in worker processes, chunk by chunk, in file order.

The C parser holds the GIL, so threads do not help; processes do.  A cheap scan of
the atom-count lines finds frame boundaries; each worker seeks to its chunk and
returns canonical rows as Arrow IPC.  Any surprise (a damaged file the scan
cannot follow, a parser error inside a chunk) sends the whole file back to the
sequential reader, which knows how to recover frame by frame.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .normalise import FileContext, Rejection, normalise_batch

# below this, worker start-up costs more than it saves
MIN_BYTES = int(os.environ.get("MLIPLAKE_PARALLEL_MIN_BYTES", 16 << 20))
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


def workers() -> int:
    env = os.environ.get("MLIPLAKE_WORKERS")
    return int(env) if env else min(os.cpu_count() or 1, 8)


def wanted(path: Path, fmt: str) -> bool:
    return (fmt == "extxyz" and workers() > 1 and path.stat().st_size >= MIN_BYTES
            and "fork" in mp.get_all_start_methods())


def chunks(path: Path, chunk_frames: int = CHUNK_FRAMES) -> Iterator[Chunk]:
    """Frame boundaries from the atom-count lines, read window by window (memory stays flat).

    Only short lines can be counts (atom lines carry a symbol and three numbers), and only
    the lines the walk lands on are decoded: one step per frame, not per line.
    """
    size = path.stat().st_size
    skip = 0  # lines still to skip before the next count line
    index = chunk_index = chunk_start = 0
    carry = b""  # the start of a line cut by the window's end
    base = 0  # file offset of carry[0]
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
                at = base + begin
                if index - chunk_index == chunk_frames:
                    yield Chunk(chunk_index, chunk_start, index - chunk_index, at)
                    chunk_index, chunk_start = index, at
                elif index == 0:
                    chunk_start = at
                index += 1
                k += int(text) + 2
            skip = k - n_lines
            if last:
                break
            cut = int(nl[-1]) + 1 if len(nl) else 0
            carry = data[cut:]
            base += cut
    if skip > 0:
        raise ScanError("the last frame is truncated")
    if index > chunk_index:
        yield Chunk(chunk_index, chunk_start, index - chunk_index, size)


def _work(path: str, chunk: Chunk, ctx: FileContext) -> tuple[bytes, list[Rejection], dict[str, int]] | None:
    from .readers import read_extxyz_range

    usage: dict[str, int] = {}
    frames = list(read_extxyz_range(Path(path), chunk.offset, chunk.start_index, chunk.nframes))
    if len(frames) != chunk.nframes:
        return None
    table, rejected = normalise_batch(frames, ctx, usage)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes(), rejected, usage


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


def pool() -> ProcessPoolExecutor:
    """Workers forked from this process: no re-import of the caller's ``__main__`` (which spawn
    and forkserver need), and they inherit the loaded modules.  The workers only parse and
    build Arrow arrays, which needs none of the threads a fork leaves behind."""
    return ProcessPoolExecutor(max_workers=workers(), mp_context=mp.get_context("fork"),
                               initializer=_die_with_parent)


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
            inflight.append((c, ex.submit(_work, str(path), c, ctx)))

    fill()
    if scan_error is not None and not inflight:
        raise scan_error
    while inflight:
        c, fut = inflight.pop(0)
        result = fut.result()
        fill()
        if result is None:
            for _, f in inflight:
                f.cancel()
            raise ScanError(f"a chunk from frame {c.start_index} did not parse")
        data, rejected, usage = result
        table = pa.ipc.open_stream(data).read_all()
        yield table, rejected, usage, c
    if scan_error is not None:
        raise scan_error
