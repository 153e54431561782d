"""Readers: one small function per format behind one interface.

Each reader takes a path and yields, in file order, either a :class:`RawFrame`
(structure plus every key the file carried, under the file's own names and in
the file's own units) or a :class:`FrameError` for a frame it could not read.
A file that cannot be read at all raises :class:`ReaderError`.  Key mapping,
unit conversion and validation happen later, in :mod:`mliplake.normalise`,
over whole batches at once.

Formats: ``extxyz`` (libAtoms' C parser, the fast path), ``json`` (lists of
dicts / JSON Lines, plain or pymatgen ``Structure`` records) and ``ase``
(everything :func:`ase.io.iread` reads: POSCAR, OUTCAR, vasprun.xml, CIF, ASE
db, trajectories, ...).
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(slots=True)
class RawFrame:
    index: int
    positions: np.ndarray
    symbols: np.ndarray | None = None  # strings; or ``numbers``
    numbers: np.ndarray | None = None
    cell: np.ndarray | None = None  # (3, 3), lattice vectors as rows
    pbc: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    units: dict[str, str] | None = None  # per-record unit overrides (JSON records)
    provenance: dict[str, Any] | None = None
    offset: int | None = None  # bytes of the file read so far, for progress


@dataclass(slots=True)
class FrameError:
    index: int | None  # None: the rest of the file from an unknown frame on
    reason: str


class ReaderError(Exception):
    """The whole file cannot be read."""


Item = RawFrame | FrameError
Reader = Callable[[Path], Iterator[Item]]
READERS: dict[str, Reader] = {}


def reader(name: str) -> Callable[[Reader], Reader]:
    def register(fn: Reader) -> Reader:
        READERS[name] = fn
        return fn

    return register


# ---------------------------------------------------------------- extxyz


def _decode_json_values(info: dict[str, Any]) -> None:
    # extxyz writes non-scalar info values as `key="_JSON <json>"`; ASE decodes them, so do we.
    for k, v in info.items():
        if isinstance(v, str) and v.startswith("_JSON "):
            try:
                info[k] = json.loads(v[6:])
            except json.JSONDecodeError:
                pass  # keep the string as written


def _extxyz_frame(index: int, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> RawFrame:
    lattice = info.pop("Lattice", None)
    pbc = info.pop("pbc", None)
    info.pop("Properties", None)
    if lattice is not None:
        lattice = np.asarray(lattice, dtype=float)
        # The parser gives the lattice with vectors as columns (see extxyz.Frame).
        if lattice.shape == (3,):
            cell = np.diag(lattice)
        elif lattice.shape == (9,):
            cell = lattice.reshape(3, 3, order="F").T
        else:
            cell = lattice.T
    else:
        cell = None
    if pbc is None:
        pbc = np.full(3, lattice is not None)  # ASE's rule: periodic iff a Lattice is given
    _decode_json_values(info)
    symbols = arrays.pop("species", None)
    numbers = arrays.pop("Z", None)
    positions = arrays.pop("pos", None)
    if positions is None:
        positions = arrays.pop("positions", None)
    return RawFrame(index, positions, symbols, numbers, cell, np.asarray(pbc, dtype=bool), info, arrays)


_DEFAULT_PROPERTIES = "Properties=species:S:1:pos:R:3"


def _comment_line(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        f.readline()
        return f.readline().decode("utf-8", "replace").strip()


def _read_frame(fp: Any, path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The next frame from the C parser at ``fp`` (an open ``path``).

    Shared by the fast path and recovery, so both read plain xyz the same way.
    """
    from extxyz import cextxyz

    start = cextxyz.cftell(fp)
    try:
        _, info, arrays = cextxyz.read_frame_dicts(fp, use_cleri=False)
    except cextxyz.ExtXYZError as e:
        if not str(e).startswith("Failed to parse string"):
            raise
        # a free-text comment line (plain xyz): keep it as info["comment"], as written
        cextxyz.cfseek(fp, start, 0)
        _, info, arrays = cextxyz.read_frame_dicts(fp, comment=_DEFAULT_PROPERTIES, use_cleri=False)
        info["comment"] = _comment_line(path, start)
    return info, arrays


@reader("extxyz")
def read_extxyz(path: Path) -> Iterator[Item]:
    """The libAtoms C parser; on the first broken frame, frame-by-frame recovery.

    A frame is yielded only once the next one has parsed (or the file has ended
    cleanly): a header that promised too few atoms shows only in the lines after
    its frame, and recovery must then judge that frame again.
    """
    from extxyz import cextxyz

    fp = cextxyz.cfopen(str(path), "r")
    if not fp:
        raise ReaderError(f"cannot open {path}")
    pending: RawFrame | None = None
    end = 0  # byte offset after the last frame parsed
    try:
        while True:
            try:
                info, arrays = _read_frame(fp, path)
            except EOFError:
                # The parser also ends quietly on a last frame cut at a line boundary.
                if _has_data_after(path, end):
                    break
                if pending is not None:
                    yield pending
                return
            except (cextxyz.ExtXYZError, UnicodeDecodeError, ValueError):
                break
            if pending is not None:
                yield pending
            pending = _extxyz_frame(0 if pending is None else pending.index + 1, info, arrays)
            end = pending.offset = cextxyz.cftell(fp)
    finally:
        cextxyz.cfclose(fp)
    yield from _recover_extxyz(path, skip=0 if pending is None else pending.index)


def _has_data_after(path: Path, offset: int) -> bool:
    """Whether anything but whitespace follows byte ``offset`` of the file."""
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(1 << 20):
            if chunk.strip():
                return True
    return False


def _is_count(line: bytes) -> bool:
    s = line.strip()
    return s.isdigit()


def _split_frames(data: bytes) -> Iterator[tuple[int, list[bytes] | None, str]]:
    """Split an (x)yz file into frames by their atom-count lines, tolerating damage.

    Yields ``(first_line_number, lines, "")`` for a frame that looks whole, or
    ``(first_line_number, None, reason)`` for one that does not.
    """
    lines = data.splitlines(keepends=True)
    i, n_lines = 0, len(lines)
    while i < n_lines:
        if not lines[i].strip():
            i += 1
            continue
        if not _is_count(lines[i]):
            start = i
            i += 1
            while i < n_lines and not (_is_count(lines[i]) and i + 1 < n_lines):
                i += 1
            text = lines[start][:60].decode("utf-8", "replace").strip()
            yield start + 1, None, f"line {start + 1}: expected an atom count, found {text!r}"
            continue
        natoms = int(lines[i].strip())
        body = lines[i + 2 : i + 2 + natoms]
        # A count line inside the atom lines means the header promised too many atoms.
        early = next((k for k, ln in enumerate(body) if _is_count(ln)), None)
        if early is not None and i + 2 + early + 1 < n_lines:
            yield i + 1, None, (
                f"line {i + 1}: header says {natoms} atoms but the next frame starts after {early}"
            )
            i = i + 2 + early
            continue
        if i + 1 >= n_lines or len(body) < natoms:
            got = max(0, len(body))
            yield i + 1, None, f"line {i + 1}: truncated: header says {natoms} atoms, file ends after {got}"
            return
        if _cut_mid_line(body):
            yield i + 1, None, f"line {i + 2 + natoms}: truncated: the file ends in the middle of an atom line"
            return
        extra = _extra_atom_lines(lines, i + 2 + natoms, body)
        if extra:
            yield i + 1, None, f"line {i + 1}: header says {natoms} atoms but {natoms + extra} atom lines follow"
            i += 2 + natoms + extra
            continue
        yield i + 1, lines[i : i + 2 + natoms], ""
        i += 2 + natoms


def _fields(line: bytes) -> int:
    return len(line.split())


def _cut_mid_line(body: list[bytes]) -> bool:
    """A last atom line without its newline and short of fields: the file was cut inside it."""
    return len(body) > 1 and not body[-1].endswith(b"\n") and _fields(body[-1]) < _fields(body[0])


def _extra_atom_lines(lines: list[bytes], start: int, body: list[bytes]) -> int:
    """How many atom lines follow a frame's last one: its header promised too few atoms.

    Atom lines of a frame all have one field per property column; stray lines
    of another width are not atoms, and are reported as a block of their own.
    """
    if not body:
        return 0
    width, k = _fields(body[0]), start
    while k < len(lines) and lines[k].strip() and not _is_count(lines[k]) and _fields(lines[k]) == width:
        k += 1
    return k - start


def _parse_chunk(chunk: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from extxyz import cextxyz

    chunk.decode("utf-8")  # the C parser's errors on bad bytes are less clear
    fd, name = tempfile.mkstemp(suffix=".xyz")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(chunk)
        fp = cextxyz.cfopen(name, "r")
        try:
            info, arrays = _read_frame(fp, Path(name))
        finally:
            cextxyz.cfclose(fp)
    finally:
        os.unlink(name)
    return info, arrays


_ATOM_LINE = re.compile(r" on atom line (\d+)")
_BAD_FIELD = re.compile(r"invalid field '([^']*)' for property '([^']*)'")
_PROPERTY_NAMES = {"pos": "positions"}


def _is_non_finite(token: str) -> bool:
    try:
        return not math.isfinite(float(token))
    except ValueError:
        return False


def _parser_error(message: str, line_no: int) -> str:
    """The C parser's message on the frame at ``line_no``, with the file line it means.

    The parser numbers atom lines from 0 within the frame.  A NaN or inf it will
    not parse (ASE writes them) is reported as normalisation reports non-finite labels.
    """
    msg = message.removeprefix("ERROR: ").strip()
    m = _ATOM_LINE.search(msg)
    if m is None:
        return f"line {line_no}: {msg}"
    atom = int(m.group(1))
    msg = msg[: m.start()] + msg[m.end():]
    bad = _BAD_FIELD.fullmatch(msg)
    if bad and _is_non_finite(bad.group(1)):
        msg = f"non-finite {_PROPERTY_NAMES.get(bad.group(2), bad.group(2))} (NaN or inf)"
    return f"line {line_no + 2 + atom}, atom {atom + 1}: {msg}"


def _not_utf8(chunk: bytes, line_no: int, e: UnicodeDecodeError) -> str:
    line = line_no + chunk.count(b"\n", 0, e.start)
    column = e.start - chunk.rfind(b"\n", 0, e.start)
    return f"line {line}: not UTF-8 text: byte {chunk[e.start]:#04x} at column {column} ({e.reason})"


def _recover_extxyz(path: Path, skip: int) -> Iterator[Item]:
    """The slow path for damaged files: parse frame by frame, report each bad one."""
    data = path.read_bytes()
    if skip == 0 and not any(_is_count(line) for line in data.splitlines()):
        # nothing in it looks like a frame: one error for the file, not a frame 0 that never was
        first = data.lstrip().split(b"\n", 1)[0][:60].decode("utf-8", "replace").strip()
        raise ReaderError(f"not an (ext)xyz file: no line holds an atom count; it starts with {first!r}")
    for index, (line_no, lines, reason) in enumerate(_split_frames(data)):
        if index < skip:
            continue
        if lines is None:
            yield FrameError(index, reason)
            continue
        chunk = b"".join(lines)
        try:
            info, arrays = _parse_chunk(chunk)
        except UnicodeDecodeError as e:
            yield FrameError(index, _not_utf8(chunk, line_no, e))
            continue
        except Exception as e:  # the parser's own message is the useful part
            yield FrameError(index, _parser_error(str(e), line_no))
            continue
        yield _extxyz_frame(index, info, arrays)


# ---------------------------------------------------------------- JSON records


def _is_pymatgen(rec: dict[str, Any]) -> bool:
    s = rec.get("structure", rec)
    return isinstance(s, dict) and "lattice" in s and "sites" in s


def _from_pymatgen(index: int, rec: dict[str, Any]) -> RawFrame:
    s = rec.get("structure", rec)
    sites = s["sites"]
    symbols = np.array([site["species"][0]["element"] for site in sites])
    for site in sites:
        if len(site["species"]) != 1 or site["species"][0].get("occu", 1) != 1:
            raise ValueError("disordered site (partial occupancy) cannot be a training configuration")
    positions = np.array([site["xyz"] for site in sites], dtype=float)
    cell = np.array(s["lattice"]["matrix"], dtype=float)
    pbc = np.array(s["lattice"].get("pbc", (True, True, True)), dtype=bool)
    info: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    outputs = rec.get("outputs") or {}
    for k, v in {**rec, **outputs}.items():
        if k in ("structure", "outputs", "@module", "@class", "lattice", "sites", "charge", "units", "provenance"):
            continue
        if k == "forces":
            arrays[k] = np.asarray(v, dtype=float)
        else:
            info[k] = v
    site_props = [site.get("properties") or {} for site in sites]
    for key in set().union(*site_props):
        arrays[key] = np.array([p.get(key) for p in site_props])
    return RawFrame(index, positions, symbols, None, cell, pbc, info, arrays,
                    rec.get("units"), rec.get("provenance"))


_PLAIN_STRUCTURE_KEYS = {"symbols", "numbers", "elements", "positions", "cell", "pbc", "info", "arrays",
                         "units", "provenance"}
_PER_ATOM_LABELS = {"forces", "force", "REF_forces", "DFT_forces", "charges", "magmoms"}


def _from_record(index: int, rec: dict[str, Any]) -> RawFrame:
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object per configuration, got {type(rec).__name__}")
    if _is_pymatgen(rec):
        return _from_pymatgen(index, rec)
    species = rec.get("symbols", rec.get("elements"))
    numbers = rec.get("numbers")
    if species is None and numbers is None:
        raise ValueError("no 'symbols', 'numbers' or 'elements'")
    if "positions" not in rec:
        raise ValueError("no 'positions'")
    positions = np.asarray(rec["positions"], dtype=float)
    cell = np.asarray(rec["cell"], dtype=float) if rec.get("cell") is not None else None
    if cell is not None and cell.shape == (3,):
        cell = np.diag(cell)
    if cell is not None and cell.shape == (9,):
        cell = cell.reshape(3, 3)
    pbc = rec.get("pbc")
    if pbc is None:
        pbc = cell is not None and bool(np.any(cell))
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    info = dict(rec.get("info") or {})
    arrays = {k: np.asarray(v) for k, v in (rec.get("arrays") or {}).items()}
    for k, v in rec.items():
        if k in _PLAIN_STRUCTURE_KEYS:
            continue
        if k in _PER_ATOM_LABELS:
            arrays[k] = np.asarray(v, dtype=float)
        else:
            info[k] = v
    return RawFrame(
        index, positions,
        np.asarray(species) if species is not None else None,
        np.asarray(numbers) if numbers is not None else None,
        cell, pbc, info, arrays, rec.get("units"), rec.get("provenance"),
    )


def _records(path: Path) -> Iterator[tuple[int, Any] | FrameError]:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if not head:
        raise ReaderError("empty file")
    if head[:1] in (b"[", b"{"):
        try:
            doc = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ReaderError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            if head[:1] == b"{" and b"\n{" in path.read_bytes():
                yield from _json_lines(path)
                return
            raise ReaderError(_json_error(e, "file")) from None
        if isinstance(doc, dict):
            for key in ("frames", "configurations", "data", "structures"):
                if isinstance(doc.get(key), list):
                    doc = doc[key]
                    break
            else:
                doc = [doc]
        if not isinstance(doc, list):
            raise ReaderError("expected a list of configurations")
        yield from enumerate(doc)
        return
    yield from _json_lines(path)


def _json_error(e: json.JSONDecodeError, text: str) -> str:
    """Where the JSON of a ``text`` ("file", "line") broke; at its very end it was cut short."""
    if e.pos >= len(e.doc.rstrip()):  # rstrip: a JSON line's newline is not where it broke
        return f"not valid JSON: {e.msg} at the end of the {text} (cut short?)"
    where = f"line {e.lineno} column {e.colno}" if e.lineno > 1 else f"column {e.colno}"
    return f"not valid JSON: {e.msg} at {where}"


def _json_lines(path: Path) -> Iterator[tuple[int, Any] | FrameError]:
    index = 0
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield index, json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as e:
                yield FrameError(index, f"line {line_no}: not UTF-8 text ({e.reason} at byte {e.start})")
            except json.JSONDecodeError as e:
                yield FrameError(index, f"line {line_no}: {_json_error(e, 'line')}")
            index += 1


@reader("json")
def read_json(path: Path) -> Iterator[Item]:
    """A list of dicts, ``{"frames": [...]}`` or JSON Lines; plain or pymatgen records."""
    for item in _records(path):
        if isinstance(item, FrameError):
            yield item
            continue
        index, rec = item
        try:
            yield _from_record(index, rec)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            yield FrameError(index, f"bad record: {e.__class__.__name__}: {e}")


# ---------------------------------------------------------------- anything ASE reads


def atoms_to_frame(index: int, atoms: Any) -> RawFrame:
    info = dict(atoms.info)
    arrays = {k: v for k, v in atoms.arrays.items() if k not in ("numbers", "positions")}
    if atoms.calc is not None:
        for k, v in getattr(atoms.calc, "results", {}).items():
            per_atom = isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == len(atoms) and k != "stress"
            (arrays if per_atom else info)[k] = v
    return RawFrame(index, atoms.positions.copy(), None, atoms.numbers.copy(),
                    np.asarray(atoms.cell), atoms.pbc.copy(), info, arrays)


@reader("ase")
def read_ase(path: Path, format: str | None = None) -> Iterator[Item]:
    import ase.io

    index = 0
    try:
        for atoms in ase.io.iread(str(path), index=":", format=format):
            yield atoms_to_frame(index, atoms)
            index += 1
    except Exception as e:  # ASE's readers raise anything; say where it stopped
        if index == 0:
            raise ReaderError(f"ASE cannot read it as {_ase_format(path, format)!r}: {_describe(e)}") from None
        yield FrameError(index, f"ASE stopped reading here: {_describe(e)}")


def _ase_format(path: Path, format: str | None) -> str:
    """The format ASE took the file for: a wrong guess from the name is often the whole story."""
    if format:
        return format
    from ase.io.formats import filetype

    try:
        return filetype(str(path))
    except Exception:
        return "unknown"


def _describe(e: Exception) -> str:
    # some ASE readers fail on bad input with a bare assert: then the class name is all there is
    text = str(e).strip()
    return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__


# ---------------------------------------------------------------- dispatch

_EXTENSIONS = {".xyz": "extxyz", ".extxyz": "extxyz", ".json": "json", ".jsonl": "json", ".ndjson": "json"}


def _is_ase_json_db(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(2048)
    return head.lstrip().startswith(b"{") and b'"nextid"' in path.read_bytes()[-4096:]


def detect_format(path: Path) -> str:
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt == "json" and _is_ase_json_db(path):
        return "ase"
    return fmt or "ase"


def read_frames(path: Path, format: str | None = None) -> Iterator[Item]:
    """Frames of one file; ``format`` is ours (extxyz/json/ase) or any ASE format name."""
    path = Path(path)
    if not path.is_file():
        raise ReaderError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ReaderError("empty file")
    fmt = format or detect_format(path)
    if fmt in READERS:
        if fmt == "ase":
            return read_ase(path)
        return READERS[fmt](path)
    return read_ase(path, format=fmt)


def read_extxyz_range(path: Path, offset: int, start_index: int, nframes: int) -> Iterator[RawFrame]:
    """``nframes`` frames from byte ``offset`` (where a frame starts), numbered from ``start_index``.

    For worker processes over chunks of a large file: it stops at the first frame
    it cannot parse, and the caller falls back to :func:`read_extxyz`.
    """
    from extxyz import cextxyz

    fp = cextxyz.cfopen(str(path), "r")
    if not fp:
        return
    try:
        cextxyz.cfseek(fp, offset, 0)
        for i in range(nframes):
            try:
                info, arrays = _read_frame(fp, path)
            except (EOFError, cextxyz.ExtXYZError, UnicodeDecodeError, ValueError):
                return
            yield _extxyz_frame(start_index + i, info, arrays)
    finally:
        cextxyz.cfclose(fp)
