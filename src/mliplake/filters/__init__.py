"""The filter language: OPTIMADE's grammar, parsed once into a small typed tree.

The ``optimade`` package's Lark grammar (v1.2) is used with two repairs (``TRUE``
and ``FALSE`` are anonymous tokens there, so the tree cannot tell them apart) and
one extension (upper-case letters in the keys after ``info.`` / ``method.``).
The tree is checked against the field registry (names, types, elements), so
every compiler (DuckDB SQL here, OpenSearch DSL in :mod:`mliplake.search`) gets
a valid tree and never sees user text except as typed values.

Semantics of unknown values: three-valued logic, as in SQL and OPTIMADE; a
frame matches only when the filter is true.  See docs/query.md.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from mliplake.core.chemistry import Z_OF

OPS = ("=", "!=", "<", "<=", ">", ">=")
FLIP = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


class FilterError(ValueError):
    """A filter that cannot be run: the message says what and where."""


# ---------------------------------------------------------------- fields


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # string | number | integer | bool | elements | list_number | json
    column: str  # column of the ``configurations`` view
    doc: str = ""


_F = FieldSpec
FIELDS: dict[str, FieldSpec] = {
    f.name: f
    for f in [
        _F("id", "string", "config_id", "configuration id (config_id)"),
        _F("config_id", "string", "config_id"),
        _F("structure_hash", "string", "structure_hash"),
        _F("dataset", "string", "dataset"),
        _F("deposit_id", "string", "deposit_id"),
        _F("source_file", "string", "source_file"),
        _F("frame_index", "integer", "frame_index"),
        _F("nsites", "integer", "nsites"),
        _F("nelements", "integer", "nelements"),
        _F("nperiodic_dimensions", "integer", "nperiodic_dimensions"),
        _F("hash_version", "integer", "hash_version"),
        _F("energy", "number", "energy", "eV"),
        _F("energy_per_atom", "number", "energy_per_atom", "eV"),
        _F("max_force", "number", "max_force", "eV/Å"),
        _F("volume", "number", "volume", "Å³"),
        _F("has_energy", "bool", "has_energy"),
        _F("has_forces", "bool", "has_forces"),
        _F("has_stress", "bool", "has_stress"),
        _F("has_virial", "bool", "has_virial"),
        _F("elements", "elements", "elements"),
        _F("elements_ratios", "list_number", "elements_ratios"),
        _F("dimension_types", "list_number", "dimension_types"),
        _F("chemical_formula_reduced", "string", "chemical_formula_reduced"),
        _F("chemical_formula_hill", "string", "chemical_formula_hill"),
        _F("chemical_formula_anonymous", "string", "chemical_formula_anonymous"),
    ]
}
JSON_ROOTS = {"info": "info", "method": "method"}  # ``root.<key>``: a key of that JSON column
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_+]*$")


@dataclass(frozen=True)
class Field:
    spec: FieldSpec | None  # None: a JSON key
    root: str = ""  # JSON column for keys
    path: tuple[str, ...] = ()
    pos: int = 0

    @property
    def kind(self) -> str:
        return self.spec.kind if self.spec else "json"

    @property
    def name(self) -> str:
        return self.spec.name if self.spec else ".".join((self.root, *self.path))


Value = str | int | float | bool


@dataclass(frozen=True)
class Compare:
    field: Field
    op: str
    value: Value


@dataclass(frozen=True)
class Known:
    field: Field
    known: bool


@dataclass(frozen=True)
class Fuzzy:
    field: Field
    kind: str  # contains | starts | ends
    value: str


@dataclass(frozen=True)
class Has:
    field: Field
    mode: str  # one | all | any | only
    values: tuple[Value, ...]
    op: str = "="  # HAS <op> value (mode one)


@dataclass(frozen=True)
class Length:
    field: Field
    op: str
    n: int | float  # a float only for integers too long to hold exactly: +-inf (see number)


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class Everything:
    """The empty filter."""


Node = Compare | Known | Fuzzy | Has | Length | And | Or | Not | Everything


# ---------------------------------------------------------------- parsing


@lru_cache(maxsize=1)
def _parser() -> Any:
    from lark import Lark

    text = (resources.files("optimade") / "grammar" / "v1.2.0.lark").read_text()
    # one expression: `a = 1 b = 2` (no AND/OR) is an error, not a silently dropped condition
    text = text.replace("filter: expression*", "filter: expression?")
    # TRUE/FALSE as named tokens, so the tree keeps which one was written
    text = text.replace('bool: ( "TRUE" | "FALSE" )', 'bool: TRUE | FALSE\nTRUE: "TRUE"\nFALSE: "FALSE"')
    # user keys may have capitals (REF_energy, MD_step): an extension, only after a dot
    text = text.replace(
        'NESTED_IDENTIFIER: ( "_" | LCASE_LETTER ) ( "_" | "+" | LCASE_LETTER | DIGIT )*',
        'NESTED_IDENTIFIER: ( "_" | LCASE_LETTER | UCASE_LETTER ) ( "_" | "+" | LCASE_LETTER | UCASE_LETTER | DIGIT )*\n'
        'UCASE_LETTER: "A".."Z"',
    )
    if "UCASE_LETTER" not in text or "TRUE:" not in text or "expression?" not in text:
        raise RuntimeError("the optimade grammar changed; mliplake.filters needs updating")
    return Lark(text, maybe_placeholders=False, propagate_positions=True)


def _unescape(token: str) -> str:
    # optimade's grammar keeps the backslashes of \" and \\ in the token
    return re.sub(r"\\(.)", r"\1", token[1:-1])


def _caret(text: str, column: int) -> str:
    return f"\n  {text}\n  {' ' * (column - 1)}^"


def parse(text: str | None) -> Node:
    """Parse and check a filter; raises :class:`FilterError` with a position on any problem."""
    if text is None or not text.strip():
        return Everything()
    if len(text) > 10_000:
        raise FilterError("filter: longer than 10,000 characters")
    return _parse(text)


@lru_cache(maxsize=1024)
def _parse(text: str) -> Node:
    # the nodes are frozen: one parse serves every request with the same filter (a portal's live count)
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

    try:
        tree = _parser().parse(text)
    except UnexpectedEOF as e:
        expected = ", ".join(sorted({_pretty(t) for t in e.expected})[:8])
        raise FilterError(f"filter: ends too early; expected one of: {expected}" + _caret(text, len(text) + 1)) from None
    except UnexpectedToken as e:
        expected = ", ".join(sorted({_pretty(t) for t in e.expected})[:8])
        got = e.token.value if e.token.type != "$END" else "the end"
        raise FilterError(f"filter: unexpected {got!r} at column {e.column}; expected one of: {expected}"
                          + _caret(text, e.column)) from None
    except UnexpectedCharacters as e:
        raise FilterError(f"filter: unexpected character {text[e.pos_in_stream]!r} at column {e.column}"
                          f"{_hint(text, e.pos_in_stream)}" + _caret(text, e.column)) from None
    except UnexpectedInput as e:  # pragma: no cover - the three above are all Lark raises here
        raise FilterError(f"filter: cannot parse at column {getattr(e, 'column', '?')}") from None
    except RecursionError:
        raise FilterError("filter: nested too deeply") from None
    try:
        return _Build(text).node(tree)
    except RecursionError:
        raise FilterError("filter: nested too deeply") from None


FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_+]*(\.[A-Za-z_][A-Za-z0-9_+]*)*")


def field_named(name: str) -> Field:
    """A field by its name in the language (``nsites``, ``info.config_type``), with the parser's
    checks and suggestions; anything but a name (``a OR b``, ``x = 1``) is a FilterError, not a filter."""
    if not FIELD_NAME.fullmatch(name):
        raise FilterError(f"{name!r} is not a field name (such as nsites or info.config_type)")
    node = parse(f"{name} IS KNOWN")
    assert isinstance(node, Known)  # a bare name parses to nothing else
    return node.field


_KEYWORDS = {"AND", "OR", "NOT", "IS", "KNOWN", "UNKNOWN", "CONTAINS", "STARTS", "ENDS", "WITH", "LENGTH",
             "HAS", "ALL", "ANY", "ONLY", "TRUE", "FALSE"}
_TOKEN_NAMES = {"_AND": "AND", "_OR": "OR", "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "COLON": "':'",
                "ESCAPED_STRING": "a string", "SIGNED_INT": "a number", "SIGNED_FLOAT": "a number",
                "IDENTIFIER": "a field", "NESTED_IDENTIFIER": "a key", "OPERATOR": "an operator", "DOT": "'.'"}


def _hint(text: str, pos: int) -> str:
    if text[pos] == '"' and text.count('"') % 2:
        return " (a string that is never closed?)"
    start = pos
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    outside = re.sub(r'"(\\.|[^"\\])*"', '""', text[:pos + 20])
    lower = [w for w in re.findall(r"[A-Za-z]+", outside) if w.upper() in _KEYWORDS and w != w.upper()]
    if lower:
        return f" (keywords are upper case: {lower[0].upper()}, not {lower[0]})"
    return ""


def _pretty(token_type: str) -> str:
    return _TOKEN_NAMES.get(token_type, token_type.strip("_"))


class _Build:
    """Lark tree -> checked :data:`Node` tree."""

    def __init__(self, text: str) -> None:
        self.text = text

    def error(self, pos: int, msg: str) -> FilterError:
        return FilterError(f"filter: {msg} at column {pos}" + _caret(self.text, pos))

    def node(self, t: Any) -> Node:
        name = t.data
        if name == "filter":
            return self.node(t.children[0]) if t.children else Everything()
        if name == "expression":
            items = tuple(self.node(c) for c in t.children)
            return items[0] if len(items) == 1 else Or(items)
        if name == "expression_clause":
            items = tuple(self.node(c) for c in t.children)
            return items[0] if len(items) == 1 else And(items)
        if name == "expression_phrase":
            negate = bool(t.children) and getattr(t.children[0], "type", None) == "NOT"
            inner = self.node(t.children[-1])
            return Not(inner) if negate else inner
        if name == "comparison":
            return self.node(t.children[0])
        if name == "property_first_comparison":
            return self.comparison(self.field(t.children[0]), t.children[1])
        if name == "constant_first_comparison":
            const, op, other = t.children
            value = self.value(const.children[0])
            target = other.children[0]
            if other.data == "not_implemented_string" or target.data != "property":
                raise self.error(const.meta.column, "compare a field with a value, not two values")
            return self.compare(self.field(target), FLIP[str(op)], value, op.column)
        raise self.error(getattr(t.meta, "column", 1), f"unsupported expression {name}")  # pragma: no cover

    # ---- pieces

    def field(self, t: Any) -> Field:
        parts = [str(tok) for tok in t.children]
        pos = t.meta.column
        head = parts[0]
        if head in JSON_ROOTS:
            if len(parts) < 2:
                raise self.error(pos, f"'{head}' needs a key: {head}.<key>")
            if not all(KEY.match(p) for p in parts[1:]):  # the grammar already ensures it
                raise self.error(pos, "invalid key")
            return Field(None, JSON_ROOTS[head], tuple(parts[1:]), pos)
        if len(parts) > 1 or head not in FIELDS:
            name = ".".join(parts)
            close = difflib.get_close_matches(name, [*FIELDS, *(f"{r}.<key>" for r in JSON_ROOTS)], n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; fields: {', '.join(FIELDS)}, info.<key>, method.<key>"
            raise self.error(pos, f"unknown field '{name}'{hint}")
        return Field(FIELDS[head], pos=pos)

    def value(self, t: Any) -> Value:
        kind = t.data
        tok = t.children[0] if t.children else None
        if kind == "value":
            return self.value(t.children[0])
        if kind == "string":
            return _unescape(str(tok))
        if kind == "number":
            return number(str(tok))
        if kind == "bool":
            return str(tok) == "TRUE"
        if kind == "property":
            raise self.error(t.meta.column, "comparing two fields is not supported; compare a field with a value")
        raise self.error(getattr(t.meta, "column", 1), f"unsupported value {kind}")  # pragma: no cover

    def comparison(self, f: Field, rhs: Any) -> Node:
        kind = rhs.data
        kids = rhs.children
        if kind == "value_op_rhs":
            op, v = kids
            return self.compare(f, str(op), self.value(v), op.column)
        if kind == "known_op_rhs":
            return Known(f, str(kids[1]) == "KNOWN")
        if kind == "fuzzy_string_op_rhs":
            word = str(kids[0]).lower()
            value = self.value(kids[-1])
            if not isinstance(value, str):
                raise self.error(kids[0].column, f"{kids[0]} needs a string")
            if f.kind not in ("string", "json"):
                raise self.error(f.pos, f"{f.name} is {_article(f.kind)}; {kids[0]} works on strings")
            return Fuzzy(f, word, value)
        if kind == "set_op_rhs":
            return self.has(f, kids)
        if kind == "length_op_rhs":
            op = str(kids[1]) if len(kids) == 3 else "="
            n = number(str(kids[-1].children[0]))  # the grammar allows integers only
            if f.kind not in ("elements", "list_number", "json"):
                raise self.error(f.pos, f"LENGTH works on lists; {f.name} is {_article(f.kind)}")
            return Length(f, op, n)
        raise self.error(f.pos, f"{kind.replace('_', ' ')} is not supported")

    def compare(self, f: Field, op: str, value: Value, pos: int) -> Compare:
        want = {"string": str, "number": (int, float), "integer": (int, float), "bool": bool}.get(f.kind)
        if f.kind in ("elements", "list_number"):
            raise self.error(f.pos, f"{f.name} is a list: use HAS, HAS ALL/ANY/ONLY or LENGTH")
        if want is not None and (not isinstance(value, want) or (want is not bool and isinstance(value, bool))):
            raise self.error(pos, f"{f.name} is {_article(f.kind)}; compare it with {_article(f.kind)}, "
                                  f"not {_show(value)}")
        if isinstance(value, bool) and op not in ("=", "!="):
            raise self.error(pos, f"booleans compare only with = and !=, not {op}")
        return Compare(f, op, value)

    def has(self, f: Field, kids: list[Any]) -> Has:
        head = str(kids[1]) if len(kids) > 1 and hasattr(kids[1], "type") else ""
        if head in ("ALL", "ANY", "ONLY"):
            vl = kids[2]
            if any(hasattr(c, "type") and c.type == "OPERATOR" for c in vl.children):
                raise self.error(f.pos, "operators inside HAS ALL/ANY/ONLY lists are not supported")
            values = tuple(self.value(c) for c in vl.children)
            mode, op = head.lower(), "="
        else:
            op = head if head in OPS else "="
            values = (self.value(kids[-1]),)
            mode = "one"
            if isinstance(values[0], bool) and op not in ("=", "!="):
                raise self.error(kids[1].column, f"booleans compare only with = and !=, not {op}")
        if f.kind not in ("elements", "list_number", "json"):
            raise self.error(f.pos, f"HAS works on lists; {f.name} is {_article(f.kind)}")
        if f.kind == "elements":
            for v in values:
                if not isinstance(v, str):
                    raise self.error(f.pos, f"elements are symbols such as \"Cu\", not {_show(v)}")
                if v not in Z_OF:
                    raise self.error(f.pos, f"unknown element {v!r}")
        if f.kind == "list_number" and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise self.error(f.pos, f"{f.name} holds numbers")
        if len({value_kind(v) for v in values}) > 1:
            raise self.error(f.pos, "HAS ALL/ANY/ONLY values must be all strings, all numbers or all booleans")
        return Has(f, mode, values, op)


#: Integer literals with more digits lie beyond every double (and every int64): as numbers they are
#: +-inf, which decides every comparison as their exact value would.  Shorter ones convert to float
#: without overflow, and Python's int() refuses over 4,300 digits anyway.
LONGEST_INT = 308


def number(text: str) -> int | float:
    """A number literal: an exact int, a float, or +-inf for integers of more than LONGEST_INT digits."""
    if not re.fullmatch(r"[+-]?\d+", text):
        return float(text)  # 1e400 overflows to inf, 1e-400 to 0.0: no error
    if len(text.lstrip("+-").lstrip("0")) > LONGEST_INT:
        return float("-inf") if text.startswith("-") else float("inf")
    return int(text)


def value_kind(v: Value) -> str:
    """string | number | bool: what a value compares with (int and float are both numbers)."""
    return "bool" if isinstance(v, bool) else "string" if isinstance(v, str) else "number"


def _article(kind: str) -> str:
    return {"string": "a string", "number": "a number", "integer": "a number", "bool": "a boolean",
            "elements": "a list of elements", "list_number": "a list of numbers", "json": "a user key"}[kind]


def _show(v: Value) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    return f'"{v}"' if isinstance(v, str) else str(v)
