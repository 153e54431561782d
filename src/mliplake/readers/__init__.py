"""Readers: one small function per format behind one interface.

Each reader takes a path and yields, in file order, either a :class:`RawFrame`
(structure plus every key the file carried, under the file's own names and in
the file's own units) or a :class:`FrameError` for a frame it could not read.
A file that cannot be read at all raises :class:`ReaderError`.  Key mapping,
unit conversion and validation happen later, in :mod:`mliplake.ingest.normalise`,
over whole batches at once.

Formats: ``extxyz`` (libAtoms' C parser, the fast path), ``json`` (lists of
dicts / JSON Lines, plain or pymatgen ``Structure`` records) and ``ase``
(everything :func:`ase.io.iread` reads: POSCAR, OUTCAR, vasprun.xml, CIF, ASE
db, trajectories, ...).

Hostile input stops at the reader: the C parser is handed no frame header it
would crash or exit the process on, and JSON is read within the limits below.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mliplake.core.manifest import ALIASES
from mliplake.core.schema import LABELS

#: Limits on one frame or record; past them it is quarantined with the limit's name, instead
#: of crashing the C parser, exhausting memory or overflowing a column later.
MAX_ATOMS = 10_000_000  # atoms in one frame: far above any labelled training configuration
MAX_JSON_DEPTH = 64  # nesting of a JSON record, or of an extxyz `_JSON` value
MAX_INT_DIGITS = 38  # digits of a JSON integer: DuckDB's widest integer (HUGEINT) holds no more


@dataclass(slots=True)
class RawFrame:
    """Values as the file gave them (JSON: lists, maybe of the wrong type); normalisation checks them."""

    index: int
    positions: Any
    symbols: Any = None  # strings; or ``numbers``
    numbers: Any = None
    cell: Any = None  # (3, 3), lattice vectors as rows; JSON may give 3 or 9 numbers
    pbc: Any = None  # 3 booleans, or any spelling parse_pbc() reads
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


# ---------------------------------------------------------------- shared checks


def describe(value: Any) -> str:
    """What a value is, for a message: "a boolean", "a string ('F F F')", "a list", ..."""
    if isinstance(value, (bool, np.bool_)):
        return f"a boolean ({bool(value)})"
    if isinstance(value, (str, bytes)):
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        return f"a string ({text[:40] + '...' if len(text) > 40 else text!r})"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, np.ndarray):
        return describe(value.item()) if value.ndim == 0 else f"an array of {_KINDS.get(value.dtype.kind, value.dtype)}"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"a number ({value})"
    return type(value).__name__


_F64 = np.dtype(np.float64)
_BOOL = np.dtype(bool)
_KINDS = {"b": "booleans", "U": "strings", "S": "strings", "O": "mixed values", "f": "numbers", "i": "integers",
          "u": "integers"}
_TRUE = frozenset({"t", "true", "1"})
_FALSE = frozenset({"f", "false", "0"})


def _flag(part: Any) -> bool | None:
    if isinstance(part, (bool, np.bool_)):
        return bool(part)
    if isinstance(part, (int, np.integer)) and part in (0, 1):
        return bool(part)
    if isinstance(part, str):
        word = part.strip().lower()
        return True if word in _TRUE else False if word in _FALSE else None
    return None


def parse_pbc(value: Any) -> np.ndarray:
    """Periodicity as 3 booleans, from the usual spellings only: true/false, T/F or 1/0 (booleans,
    numbers or strings), once for all directions or once each, or ASE's "T T F".

    A non-empty string is truthy in Python, so ``"false"`` must never go through ``bool()``.
    """
    if type(value) is np.ndarray and value.dtype == np.bool_ and value.shape == (3,):
        return value
    if isinstance(value, str):
        parts: list[Any] = value.split()
    elif isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        parts = list(value)
    else:
        parts = [value]
    flags = [_flag(p) for p in parts]
    if len(flags) not in (1, 3) or None in flags:
        shown = value.tolist() if isinstance(value, np.ndarray) else value
        raise ValueError(f"pbc: {shown!r} is not a periodicity: give true/false, T/F or 1/0, "
                         "once or for each of the 3 directions (as in \"T T F\")")
    return np.array(flags * 3 if len(flags) == 1 else flags, dtype=bool)


class JSONLimitError(ValueError):
    """JSON past MAX_JSON_DEPTH or MAX_INT_DIGITS."""


@dataclass(frozen=True, slots=True)
class _LongInt:
    """Stands in for an integer past MAX_INT_DIGITS, so the rest of a document can still be read."""

    digits: int


def _long_int_reason(digits: int) -> str:
    return f"an integer with {digits:,} digits, more than the limit of {MAX_INT_DIGITS} (MAX_INT_DIGITS)"


def _depth_reason(depth: int | None) -> str:
    deep = f"{depth:,} levels" if depth else "too many levels"
    return f"nested {deep} deep, more than the limit of {MAX_JSON_DEPTH} (MAX_JSON_DEPTH)"


def _loads(text: str | bytes) -> tuple[Any, int]:
    """``json.loads``, with integers past MAX_INT_DIGITS left as :class:`_LongInt`; and how many there were.

    Python refuses to convert integers of over 4300 digits (ValueError), and DuckDB overflows
    on those over 38 later; a marker keeps the other records of the document readable.
    """
    long = 0

    def parse_int(s: str) -> Any:
        nonlocal long
        digits = len(s) - (s[0] == "-")
        if digits > MAX_INT_DIGITS:
            long += 1
            return _LongInt(digits)
        return int(s)

    return json.loads(text, parse_int=parse_int), long


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NESTING = np.zeros(256, np.int8)
_NESTING[[ord("["), ord("{")]] = 1
_NESTING[[ord("]"), ord("}")]] = -1
_DEPTH_BLOCK = 1 << 24


def _json_depth(text: bytes) -> int:
    """How deep JSON ``text`` nests (0 when it cannot pass MAX_JSON_DEPTH): vectorised, no recursion.

    Python's own parser recurses, and dies (RecursionError) on 100,000 nested ``[``.
    """
    if text.count(b"[") + text.count(b"{") <= MAX_JSON_DEPTH:
        return 0  # the common case, two memchr-speed counts
    if b'"' in text:
        text = _JSON_STRING.sub(b"", text)  # brackets inside strings do not nest
    depth = deepest = 0
    for start in range(0, len(text), _DEPTH_BLOCK):  # blocks: int32 running depths of a big file stay small
        run = np.cumsum(_NESTING[np.frombuffer(text, np.uint8, min(_DEPTH_BLOCK, len(text) - start), start)],
                        dtype=np.int32)
        if len(run):
            deepest = max(deepest, depth + int(run.max()))
            depth += int(run[-1])
    return deepest


def load_json(text: str | bytes) -> Any:
    """One JSON value within MAX_JSON_DEPTH and MAX_INT_DIGITS, or :class:`JSONLimitError` saying which."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    depth = _json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise JSONLimitError(_depth_reason(depth))
    value, long = _loads(raw)
    if long:
        raise JSONLimitError(_record_fault(value) or _long_int_reason(MAX_INT_DIGITS + 1))
    return value


def _record_fault(record: Any) -> str | None:
    """The first limit a parsed record breaks, walked without recursion."""
    stack = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, _LongInt):
            return _long_int_reason(value.digits)
        if isinstance(value, (list, dict)):
            if depth > MAX_JSON_DEPTH:
                return _depth_reason(None)
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return None


# ---------------------------------------------------------------- extxyz


def _decode_json_values(info: dict[str, Any]) -> str | None:
    """Decode ``key="_JSON <json>"`` values, as ASE does; the reason if one breaks a JSON limit."""
    for k, v in info.items():
        if isinstance(v, str) and v.startswith("_JSON "):
            try:
                info[k] = load_json(v[6:])
            except JSONLimitError as e:
                return f"info {k!r}: _JSON value {e}"
            except json.JSONDecodeError:
                pass  # keep the string as written
    return None


def _lattice(value: Any) -> np.ndarray | str:
    """The cell (vectors as rows) from the parser's Lattice, or why it is none."""
    lattice = value if type(value) is np.ndarray else np.asarray(value)
    if lattice.dtype.kind not in "iuf":
        return f"Lattice: expected 9 numbers, got {describe(value)}"
    if lattice.dtype is not _F64:
        lattice = lattice.astype(float)
    # The parser gives the lattice with vectors as columns (see extxyz.Frame).
    if lattice.shape == (3,):
        return np.diag(lattice)
    if lattice.shape == (9,):
        return lattice.reshape(3, 3, order="F").T
    if lattice.shape == (3, 3):
        return lattice.T
    return f"Lattice has {lattice.size} values, expected 9 (or 3 for a rectangular box)"


def _extxyz_frame(index: int, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> RawFrame | FrameError:
    lattice = info.pop("Lattice", None)
    pbc = info.pop("pbc", None)
    info.pop("Properties", None)
    cell = None
    if lattice is not None:
        cell = _lattice(lattice)
        if isinstance(cell, str):
            return FrameError(index, cell)
    if pbc is None:
        pbc = np.full(3, lattice is not None)  # ASE's rule: periodic iff a Lattice is given
    elif not (type(pbc) is np.ndarray and pbc.dtype is _BOOL and pbc.shape == (3,)):  # not "T T T" as usual
        try:
            pbc = parse_pbc(pbc)
        except ValueError as e:
            return FrameError(index, str(e))
    why = _decode_json_values(info)
    if why is not None:
        return FrameError(index, why)
    symbols = arrays.pop("species", None)
    numbers = arrays.pop("Z", None)
    positions = arrays.pop("pos", None)
    if positions is None:
        positions = arrays.pop("positions", None)
    return RawFrame(index, positions, symbols, numbers, cell, pbc, info, arrays)


_DEFAULT_PROPERTIES = "Properties=species:S:1:pos:R:3"


def _comment_line(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        f.readline()
        return f.readline().decode("utf-8", "replace").strip()


def _read_frame(fp: Any, path: Path, start: int | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The next frame from the C parser at ``fp`` (an open ``path``, at byte ``start`` if known).

    Shared by the fast path and recovery, so both read plain xyz the same way.
    """
    from extxyz import cextxyz

    if start is None:
        start = cextxyz.cftell(fp)
    try:
        _, info, arrays = cextxyz.read_frame_dicts(fp, use_cleri=False)
    except cextxyz.ExtXYZError as e:
        if not str(e).startswith("Failed to parse string"):
            raise
        comment = _comment_line(path, start)
        if "Properties=" in comment:  # an extxyz header gone wrong: as free text its labels would vanish
            raise cextxyz.ExtXYZError(f"the comment line names Properties but is not key=value pairs ({e})") from None
        # a free-text comment line (plain xyz): keep it as info["comment"], as written
        cextxyz.cfseek(fp, start, 0)
        _, info, arrays = cextxyz.read_frame_dicts(fp, comment=_DEFAULT_PROPERTIES, use_cleri=False)
        info["comment"] = comment
    return info, arrays


# ---- frame headers the C parser must never see.  It segfaults on a count of 0 (and on "0x2",
# "-0", "0.5", which it reads as 0), wraps counts past 2**31 (4294967298 atoms reads as 2), exits
# the whole process on an empty key (""=1, []=1, {}=1) and segfaults on a Properties value that is
# not a column list (Properties=5, Properties="T", Properties=""). These checks run on every
# frame, so they are a few C-speed string operations; the rare hit is then examined properly.

ZERO_ATOMS = "frame has 0 atoms"
_EMPTY_QUOTES = re.compile(rb'""[ \t]*=')  # a literal prefix: searched at memchr speed, unlike an alternation
_EMPTY_KEY = re.compile(rb'(?:\[\]|\{\})[ \t]*=')
_PROPERTIES = re.compile(rb'Properties["\'\]}]?[ \t]*=[ \t]*(["{]?[^\s"\'{}=:]+:[SRIL]:[0-9])?')
_COUNT_DIGITS = len(str(MAX_ATOMS))
_USUAL_PROPERTIES = b"Properties=species:S:1:"  # ASE's, and nearly everyone's: a column list as it must be


def _show(text: bytes) -> str:
    return repr(text[:60].decode("utf-8", "replace").strip())


def count_fault(line: bytes) -> str | None:
    """Why a frame's atom-count line must not reach the C parser; None if it may."""
    s = line.strip()
    if not s.isdigit():  # ASCII digits only: no sign, point, exponent or hex
        return f"expected an atom count, found {_show(s)}"
    digits = s.lstrip(b"0")
    if not digits:
        return ZERO_ATOMS
    if len(digits) > _COUNT_DIGITS or int(digits) > MAX_ATOMS:
        shown = digits.decode() if len(digits) <= 24 else f"{digits[:12].decode()}... ({len(digits):,} digits)"
        return f"header says {shown} atoms, more than the limit of {MAX_ATOMS:,} (MAX_ATOMS)"
    return None


def comment_fault(line: bytes) -> str | None:
    """Why a frame's comment line must not reach the C parser; None if it may."""
    if _EMPTY_QUOTES.search(line) or ((b"[" in line or b"{" in line) and _EMPTY_KEY.search(line)):
        return "empty key in the comment line (such as \"\"=...): it could not be addressed"
    i = line.find(b"Properties")
    while i >= 0:
        m = _PROPERTIES.match(line, i)
        if m is not None and m.group(1) is None:  # even inside another value: better refused than a crash
            value = line[m.end():].split(None, 1)[:1] or [b""]
            return f"Properties={_show(value[0])[1:-1]!r} is not a column list such as species:S:1:pos:R:3"
        i = line.find(b"Properties", i + 10)
    return None


def _after_lines(buf: Any, pos: int, k: int) -> int:
    """The byte after ``k`` lines from ``pos`` (or the end)."""
    for _ in range(k):
        nl = buf.find(b"\n", pos)
        if nl < 0:
            return len(buf)
        pos = nl + 1
    return pos


def header_fault(buf: Any, pos: int, check_count: bool = True) -> tuple[str, int] | None:
    """Why the frame at byte ``pos`` of ``buf`` must not reach the C parser, and the byte after
    the frame (-1: unknown, its count is no count); None if it may (a blank line too: the parser
    reports that, or the end of the file, itself).

    It runs on every frame: the usual header ("22", a comment line with one Properties, no empty
    quotes or brackets) passes on a few C-speed operations, the rest is examined in full.
    """
    nl = buf.find(b"\n", pos)
    end = len(buf) if nl < 0 else nl
    count = buf[pos:min(end, pos + 4096)]  # a count line is short; a "line" of gigabytes is not one
    comment_end = buf.find(b"\n", nl + 1) if nl >= 0 else -1
    comment = buf[nl + 1:len(buf) if comment_end < 0 else comment_end] if nl >= 0 else b""
    usual = count.isdigit() and count[0] != 48 and len(count) < _COUNT_DIGITS
    if usual and b'""' not in comment and b"[" not in comment and b"{" not in comment:
        i = comment.find(b"Properties")
        if i < 0 or (comment.startswith(_USUAL_PROPERTIES, i) and comment.find(b"Properties", i + 10) < 0):
            return None
    if check_count and not usual:
        if not count.strip():
            return None
        why = count_fault(count)
        if why is not None:
            return why, (_after_lines(buf, pos, 2) if why == ZERO_ATOMS else -1)
    if nl < 0:
        return None  # no comment line: the parser reports the frame cut short
    why = comment_fault(comment)
    if why is not None:
        return why, _after_lines(buf, pos, int(count) + 2)
    return None


class _LineNumbers:
    """Line numbers of byte offsets of a buffer, counted on from the last one asked (they only grow)."""

    def __init__(self, buf: Any, offset: int = 0, line: int = 1) -> None:
        self.buf, self.offset, self.line = buf, offset, line

    def at(self, offset: int) -> int:
        self.line += self.buf[self.offset:offset].count(b"\n")
        self.offset = offset
        return self.line


@reader("extxyz")
def read_extxyz(path: Path) -> Iterator[Item]:
    """The libAtoms C parser; on the first broken frame, frame-by-frame recovery.

    A frame is yielded only once the next one has parsed (or the file has ended
    cleanly): a header that promised too few atoms shows only in the lines after
    its frame, and recovery must then judge that frame again.  A header the parser
    must not see is quarantined here and skipped, when its extent is known.
    """
    from extxyz import cextxyz

    if path.stat().st_size == 0:
        raise ReaderError("empty file")
    fp = cextxyz.cfopen(str(path), "r")
    if not fp:
        raise ReaderError(f"cannot open {path}")
    pending: Item | None = None
    index = pos = 0  # the next frame, and its first byte
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            lines = _LineNumbers(buf)
            while True:
                fault = header_fault(buf, pos)
                if fault is not None:
                    why, after = fault
                    if after < 0:
                        break  # where this frame ends is unknown: recovery finds the next count line
                    if pending is not None:
                        yield pending
                        pending = None
                    yield FrameError(index, f"line {lines.at(pos)}: {why}")
                    index, pos = index + 1, after
                    cextxyz.cfseek(fp, pos, 0)
                    continue
                try:
                    info, arrays = _read_frame(fp, path, pos)
                except EOFError:
                    # The parser also ends quietly on a last frame cut at a line boundary.
                    if _has_data_after(path, pos):
                        break
                    if pending is not None:
                        yield pending
                    return
                except (cextxyz.ExtXYZError, UnicodeDecodeError, ValueError):
                    break
                if pending is not None:
                    yield pending
                pending = _extxyz_frame(index, info, arrays)
                index, pos = index + 1, cextxyz.cftell(fp)
                if isinstance(pending, RawFrame):
                    pending.offset = pos
    finally:
        cextxyz.cfclose(fp)
    yield from _recover_extxyz(path, skip=index - (pending is not None))


def _has_data_after(path: Path, offset: int) -> bool:
    """Whether anything but whitespace follows byte ``offset`` of the file."""
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(1 << 20):
            if chunk.strip():
                return True
    return False


def _is_count(line: bytes) -> bool:
    return line.strip().isdigit()


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
        why = count_fault(lines[i])
        if why == ZERO_ATOMS:
            yield i + 1, None, f"line {i + 1}: {why}"
            i += 2
            continue
        if why is not None:  # no count, or one past the limit: on to the next count line
            start = i
            i += 1
            while i < n_lines and not (_is_count(lines[i]) and i + 1 < n_lines):
                i += 1
            yield start + 1, None, f"line {start + 1}: {why}"
            continue
        natoms = int(lines[i])
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
        why = comment_fault(lines[i + 1])
        if why is not None:
            yield i + 1, None, f"line {i + 1}: {why}"
        else:
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


class BadRecord(ValueError):
    """A record whose message is complete as it stands (it names the key)."""


def _is_pymatgen(rec: dict[str, Any]) -> bool:
    s = rec.get("structure", rec)
    return isinstance(s, dict) and "lattice" in s and "sites" in s


def _from_pymatgen(index: int, rec: dict[str, Any]) -> RawFrame:
    s = rec.get("structure", rec)
    sites = s["sites"]
    symbols = [site["species"][0]["element"] for site in sites]
    for site in sites:
        if len(site["species"]) != 1 or site["species"][0].get("occu", 1) != 1:
            raise ValueError("disordered site (partial occupancy) cannot be a training configuration")
    positions = [site["xyz"] for site in sites]
    cell = s["lattice"]["matrix"]
    pbc = s["lattice"].get("pbc", (True, True, True))
    info: dict[str, Any] = {}
    arrays: dict[str, Any] = {}
    outputs = rec.get("outputs") or {}
    if not isinstance(outputs, dict):
        raise BadRecord(f"outputs: expected a mapping of label -> value, got {describe(outputs)}")
    for k, v in {**rec, **outputs}.items():
        if k in ("structure", "outputs", "@module", "@class", "lattice", "sites", "charge", "units", "provenance"):
            continue
        (arrays if k == "forces" else info)[k] = v
    site_props = [site.get("properties") or {} for site in sites]
    for key in set().union(*site_props):
        arrays[key] = np.array([p.get(key) for p in site_props])
    return RawFrame(index, positions, symbols, None, cell, pbc, info, arrays,
                    _record_units(rec), rec.get("provenance"))


_PLAIN_STRUCTURE_KEYS = {"symbols", "numbers", "elements", "positions", "cell", "pbc", "info", "arrays",
                         "units", "provenance"}
# every per-atom label's key names: a record's other keys are per-frame info
_PER_ATOM_LABELS = frozenset(k for label, keys in ALIASES.items() if LABELS[label][0] for k in keys)


def _mapping(rec: dict[str, Any], key: str) -> dict[str, Any]:
    value = rec.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRecord(f"{key}: expected a mapping of key -> value, got {describe(value)}")
    return dict(value)


def _record_units(rec: dict[str, Any]) -> dict[str, Any] | None:
    units = rec.get("units")
    if units is not None and not isinstance(units, dict):
        raise BadRecord(f"units: expected a mapping such as {{\"energy\": \"eV\"}}, got {describe(units)}")
    return units


def _periodic_cell(cell: Any) -> bool:
    """Whether a record's cell has any non-zero entry (ASE's default for a missing pbc)."""
    try:
        return cell is not None and bool(np.any(np.asarray(cell, dtype=float)))
    except (TypeError, ValueError):
        return False  # not numbers: normalisation rejects the cell, naming it


def _from_record(index: int, rec: Any) -> RawFrame:
    """A plain record; its values are passed on as given, to be type-checked by name in normalisation."""
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
    pbc = rec.get("pbc")
    if pbc is None:
        pbc = _periodic_cell(rec.get("cell"))
    info = _mapping(rec, "info")
    arrays = {k: np.asarray(v) for k, v in _mapping(rec, "arrays").items()}
    for k, v in rec.items():
        if k not in _PLAIN_STRUCTURE_KEYS:
            (arrays if k in _PER_ATOM_LABELS else info)[k] = v
    return RawFrame(index, rec["positions"], species, numbers, rec.get("cell"), pbc, info, arrays,
                    _record_units(rec), rec.get("provenance"))


def _records(path: Path) -> Iterator[tuple[int, Any] | FrameError]:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if not head:
        raise ReaderError("empty file")
    if head[:1] not in (b"[", b"{"):
        yield from _json_lines(path)
        return
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReaderError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    depth = _json_depth(data)
    try:
        doc, long = _loads(text)
    except json.JSONDecodeError as e:
        if head[:1] == b"{" and b"\n{" in data:
            yield from _json_lines(path)
            return
        raise ReaderError(_json_error(e, "file")) from None
    except RecursionError:  # nested past what Python parses: nothing of it can be read
        raise ReaderError(f"not valid JSON: {_depth_reason(depth)}") from None
    if isinstance(doc, dict):
        for key in ("frames", "configurations", "data", "structures"):
            if isinstance(doc.get(key), list):
                doc = doc[key]
                break
        else:
            doc = [doc]
    if not isinstance(doc, list):
        raise ReaderError("expected a list of configurations")
    # records are walked only when the document as a whole breaks a limit (rare)
    walk = long > 0 or depth > MAX_JSON_DEPTH
    for index, rec in enumerate(doc):
        why = _record_fault(rec) if walk else None
        yield (index, rec) if why is None else FrameError(index, f"record {index}: {why}")


def _json_error(e: json.JSONDecodeError, text: str) -> str:
    """Where the JSON of a ``text`` ("file", "line") broke; at its very end it was cut short."""
    if e.pos >= len(e.doc.rstrip()):  # rstrip: a JSON line's newline is not where it broke
        return f"not valid JSON: {e.msg} at the end of the {text} (cut short?)"
    where = f"line {e.lineno} column {e.colno}" if e.lineno > 1 else f"column {e.colno}"
    return f"not valid JSON: {e.msg} at {where}"


def _json_line(line: bytes) -> Any:
    """One JSON Lines record, or the reason it cannot be one (as a str wrapped in a FrameError later)."""
    depth = _json_depth(line)
    if depth > MAX_JSON_DEPTH:
        raise JSONLimitError(_depth_reason(depth))
    rec, long = _loads(line.decode("utf-8"))
    if long:
        raise JSONLimitError(_record_fault(rec) or _long_int_reason(MAX_INT_DIGITS + 1))
    return rec


def _json_lines(path: Path) -> Iterator[tuple[int, Any] | FrameError]:
    index = 0
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield index, _json_line(line)
            except UnicodeDecodeError as e:
                yield FrameError(index, f"line {line_no}: not UTF-8 text ({e.reason} at byte {e.start})")
            except json.JSONDecodeError as e:
                yield FrameError(index, f"line {line_no}: {_json_error(e, 'line')}")
            except JSONLimitError as e:
                yield FrameError(index, f"line {line_no}: {e}")
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
        except BadRecord as e:
            yield FrameError(index, str(e))
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


def read_extxyz_range(path: Path, offset: int, start_index: int, nframes: int,
                      first_line: int = 1) -> Iterator[Item]:
    """``nframes`` frames from byte ``offset`` (where a frame starts, on line ``first_line``),
    numbered from ``start_index``.

    For worker processes over chunks of a large file whose count lines the caller
    has checked: a frame with a comment line the parser must not see is reported
    and skipped; at the first frame it cannot parse it stops, and the caller falls
    back to :func:`read_extxyz`.
    """
    from extxyz import cextxyz

    fp = cextxyz.cfopen(str(path), "r")
    if not fp:
        return
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            lines = _LineNumbers(buf, offset, first_line)
            pos = offset
            cextxyz.cfseek(fp, pos, 0)
            for i in range(nframes):
                fault = header_fault(buf, pos, check_count=False)
                if fault is not None:
                    yield FrameError(start_index + i, f"line {lines.at(pos)}: {fault[0]}")
                    pos = fault[1]
                    cextxyz.cfseek(fp, pos, 0)
                    continue
                try:
                    info, arrays = _read_frame(fp, path, pos)
                except (EOFError, cextxyz.ExtXYZError, UnicodeDecodeError, ValueError):
                    return
                yield _extxyz_frame(start_index + i, info, arrays)
                pos = cextxyz.cftell(fp)
    finally:
        cextxyz.cfclose(fp)
