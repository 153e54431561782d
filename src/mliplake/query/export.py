"""Export a filtered subset, streaming: Parquet (canonical rows) or extxyz (MACE-ready or original keys)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mliplake import filters
from mliplake.core.schema import CONFIGURATIONS, PARQUET_OPTIONS
from mliplake.filters.sql import where

if TYPE_CHECKING:
    from mliplake.lake import Lake

BATCH_ROWS = 2048
ROW_GROUP_BATCHES = 8  # an exported Parquet file's row groups: 16,384 rows
#: MACE's default reference keys: plain energy/forces are renamed by MACE with a warning.
MACE_KEYS = {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress", "virial": "REF_virial",
             "dipole": "REF_dipole", "charges": "REF_charges"}


def batches(lake: Lake, filter: str | None, order: str | None = "dataset, source_file, frame_index",
            ids: list[str] | None = None, dataset: str | None = None, version: int | None = None,
            skip: int = 0) -> Iterator[pa.Table]:
    """Canonical rows matching a filter (and, if given, among ``ids`` and of one ``dataset``), batch by batch.

    ``order`` None: the order the rows are stored in, which needs no sort, so memory stays flat
    whatever the count; with ``version`` (a lake version) it is the same order every time, and
    ``skip`` leaves out the first rows (a resumed download)."""
    from mliplake.query.engine import configurations_select

    clause, params = where(filters.parse(filter))
    cols = ", ".join(f'"{f.name}"' for f in CONFIGURATIONS)
    # a cursor of its own: the registration below is this export's alone.  An export (no order
    # asked) runs on the single-threaded scan instance, whose memory does not grow with its size;
    # a selection of ids, sorted below, is as small as the request that named it
    con = lake.tables.scan_cursor() if order is None else lake.connection()
    # the view's rows, restricted row by row instead of by a semi-join, which would not keep the
    # stored order (see Scope.sql_row_predicate)
    source = f"({configurations_select(lake.scope().sql_row_predicate(), version)})"
    if dataset is not None:
        clause = f"({clause}) AND dataset = ?"
        params = [*params, dataset]
    if ids is not None:
        con.register("_selected_ids", pa.table({"config_id": pa.array(ids, pa.string())}))
        clause = f"({clause}) AND config_id IN (SELECT config_id FROM _selected_ids)"
        # a semi-join does not keep the stored order; a selection is as small as the request that
        # named it, so its rows are sorted instead (the same order every time: resumable)
        order = order or "dataset, config_id"
    sql = f"SELECT {cols} FROM {source} WHERE {clause}" + (f" ORDER BY {order}" if order else "")
    if skip:
        sql += f" OFFSET {int(skip)}"
    reader = con.sql(sql, params=params).to_arrow_reader(BATCH_ROWS)
    # DuckDB's batches vary in size from run to run: exactly BATCH_ROWS rows each (the last fewer)
    # make the same export the same bytes every time (Parquet row groups included)
    held: list[pa.RecordBatch] = []
    n = 0
    for batch in reader:
        held.append(batch)
        n += batch.num_rows
        while n >= BATCH_ROWS:
            t = pa.Table.from_batches(held)
            yield t.slice(0, BATCH_ROWS).cast(CONFIGURATIONS)
            rest = t.slice(BATCH_ROWS)
            held, n = rest.to_batches(), rest.num_rows
    if n:
        yield pa.Table.from_batches(held, reader.schema).cast(CONFIGURATIONS)


_PER_ATOM = ("forces", "charges", "magmoms")


def _info_value(v: Any) -> Any:
    # extxyz holds scalars, strings and flat arrays; anything else travels as `_JSON`, as ASE writes it
    if isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return np.array(v)
    return "_JSON " + json.dumps(v)


def _voigt(m: np.ndarray) -> np.ndarray:
    return m[[0, 4, 8, 5, 2, 1]]  # xx yy zz yz xz xy from a row-major 3x3


def frames(table: pa.Table, original_keys: bool = False) -> Iterator[Any]:
    """extxyz frames of canonical rows: labels under MACE's REF_* keys, or under the deposit's own names."""
    import extxyz

    from mliplake.core.chemistry import SYMBOLS

    cols = table.to_pydict()
    for i in range(table.num_rows):
        numbers = np.asarray(cols["numbers"][i])
        info = {k: _info_value(v) for k, v in json.loads(cols["info"][i] or "{}").items()}
        arrays: dict[str, np.ndarray] = {"species": SYMBOLS[numbers], "pos": np.asarray(cols["positions"][i], float)}
        for k, v in json.loads(cols["arrays"][i] or "{}").items():
            arrays[k] = np.asarray(v)
        names = dict(MACE_KEYS)
        if original_keys:
            names = {canon: orig for orig, canon in json.loads(cols["provenance"][i]).get("keys", {}).items()}
        for label in ("energy", "forces", "stress", "virial", "charges", "magmoms", "dipole"):
            value = cols[label][i]
            if value is None:
                continue
            key = names.get(label, label)
            if label in _PER_ATOM:
                arrays[key] = np.asarray(value, float)
            elif label in ("stress", "virial"):
                m = np.asarray(value, float)
                info[key] = _voigt(m) if not original_keys else m
            else:
                info[key] = np.asarray(value, float) if np.ndim(value) else value
        cell = np.asarray(cols["cell"][i], float).reshape(3, 3)
        yield extxyz.Frame(natoms=len(numbers), cell=cell.T, pbc=np.asarray(cols["pbc"][i]), info=info,
                           arrays=arrays)


def mace_ready(atoms: Any) -> Any:
    """An ``Atoms`` with its labels as MACE's REF_* keys (stress in Voigt order, ASE sign), no calculator."""
    if atoms.calc is not None:
        for name, value in atoms.calc.results.items():
            key = MACE_KEYS.get(name, name)
            if name in _PER_ATOM:
                atoms.new_array(key, np.asarray(value))
            else:
                atoms.info[key] = np.asarray(value) if np.ndim(value) else value
        atoms.calc = None
    return atoms


def write_manifest(lake: Lake, filter: str | None, out: Path, format: str) -> Path:
    """``<out>.manifest.yaml``: where the subset came from; depositing it again with this manifest
    gives the same config_ids (they include the method, which extxyz does not carry)."""
    import yaml

    clause, params = where(filters.parse(filter))
    rows = lake.connection().sql(
        f"SELECT dataset, any_value(method) AS method, count(*) AS n FROM configurations WHERE {clause} "
        "GROUP BY dataset ORDER BY dataset", params=params).fetchall()
    methods = {m for _, m, _ in rows}
    licences = {d["dataset"]: d.get("license", "") for d in lake.datasets()}
    manifest = {
        "dataset": rows[0][0] if len(rows) == 1 else "export",
        "description": f"Exported from {lake.url} with filter: {filter or '(everything)'}",
        "license": " AND ".join(sorted({licences.get(d, "") for d, _, _ in rows} - {""})),
        "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"},
        "sampling": {"source_datasets": {d: n for d, _, n in rows}, "filter": filter or ""},
    }
    if len(methods) == 1:
        manifest["method"] = json.loads(methods.pop() or "{}")
    path = out.with_name(out.name + ".manifest.yaml")
    path.write_text(yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True))
    return path


FULL_PRECISION = {"R": "%.17g"}  # every float written round-trips exactly


def write_extxyz(path: Path, items: Iterator[Any], bar: Any = None) -> int:
    import extxyz
    from extxyz.grammar import Properties

    fmt = dict(Properties.default_format_dict, **FULL_PRECISION)
    n = 0
    with open(path, "w") as f:
        for frame in items:
            extxyz.write_dicts(f, frame, format_dict=fmt, use_cextxyz=False)
            n += 1
            if bar is not None:
                bar.update(1)
    return n


FORMATS = ("extxyz", "parquet", "arrow")


def stream(lake: Lake, filter: str | None, format: str = "extxyz", ids: list[str] | None = None,
           version: int | None = None, skip: int = 0, original_keys: bool = False) -> Iterator[bytes]:
    """The matching configurations as a byte stream, batch by batch, in the order they are stored
    (no sort: memory stays flat whatever the count), read at one lake ``version``.

    A download that broke off is resumed with the same ``version`` and ``skip`` = the number of
    configurations already had.  extxyz frames carry ``mliplake_dataset`` and
    ``mliplake_config_id``; ``parquet`` and ``arrow`` (IPC stream) carry the canonical columns.
    :func:`export` writes the same bytes to a file."""
    for data, _ in _chunks(lake, filter, format, ids, version, skip, original_keys):
        yield data


def _chunks(lake: Lake, filter: str | None, format: str, ids: list[str] | None = None, version: int | None = None,
            skip: int = 0, original_keys: bool = False) -> Iterator[tuple[bytes, int]]:
    """(bytes, configurations in them) of an export, batch by batch."""
    import io

    import extxyz
    from extxyz.grammar import Properties

    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}: {', '.join(FORMATS)}")
    rows = batches(lake, filter, order=None, ids=ids, version=version, skip=skip)
    if format == "extxyz":
        fmt = dict(Properties.default_format_dict, **FULL_PRECISION)
        for t in rows:
            buf = io.StringIO()
            ds, cid = t.column("dataset").to_pylist(), t.column("config_id").to_pylist()
            for i, frame in enumerate(frames(t, original_keys)):
                frame.info["mliplake_dataset"], frame.info["mliplake_config_id"] = ds[i], cid[i]
                extxyz.write_dicts(buf, frame, format_dict=fmt, use_cextxyz=False)
            yield buf.getvalue().encode(), t.num_rows
        return
    sink = _Drain()
    if format == "arrow":
        writer = pa.ipc.new_stream(sink, CONFIGURATIONS)
        for t in rows:
            writer.write_table(t)
            yield sink.take(), t.num_rows
        writer.close()
        yield sink.take(), 0
        return
    # row groups of ROW_GROUP_BATCHES batches: a Parquet writer keeps every row group's metadata
    # until the footer, which grew with the export at one small group per batch
    pqw = pq.ParquetWriter(sink, CONFIGURATIONS, **PARQUET_OPTIONS)
    held: list[pa.Table] = []
    for t in rows:
        held.append(t)
        if len(held) == ROW_GROUP_BATCHES:
            yield _row_group(pqw, sink, held), sum(h.num_rows for h in held)
            held = []
    if held:
        yield _row_group(pqw, sink, held), sum(h.num_rows for h in held)
    pqw.close()
    yield sink.take(), 0


def _row_group(writer: pq.ParquetWriter, sink: _Drain, tables: list[pa.Table]) -> bytes:
    t = pa.concat_tables(tables)
    writer.write_table(t, row_group_size=t.num_rows)
    return sink.take()


class _Drain:
    """A write-only file whose bytes are taken away as they come (so a stream never holds them all)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.closed = False
        self._pos = 0

    def write(self, data: Any) -> int:
        b = bytes(data)
        self._parts.append(b)
        self._pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def export(lake: Lake, filter: str | None, out: str | Path, format: str = "extxyz", original_keys: bool = False,
           progress: bool | None = None) -> int:
    """Write the matching configurations to ``out`` (the bytes :func:`stream` gives, so a download
    from the API equals a local export); returns how many were written."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}: {', '.join(FORMATS)}")
    total = lake.count(filter)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress is not False:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="cfg", desc=f"export {out.name}", disable=None if progress is None else not progress)
    written = 0
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with open(tmp, "wb") as f:
            for data, n in _chunks(lake, filter, format, original_keys=original_keys):
                f.write(data)
                written += n
                if bar is not None:
                    bar.update(n)
        tmp.replace(out)
        write_manifest(lake, filter, out, format)
    finally:
        if tmp.exists():
            tmp.unlink()
        if bar is not None:
            bar.close()
    return written
