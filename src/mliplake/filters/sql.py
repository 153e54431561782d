"""The filter tree compiled to DuckDB SQL over the ``configurations`` view.

User values only ever travel as bound parameters; field names come from the
registry in :mod:`mliplake.filters`; JSON keys have passed the grammar's
identifier rule (letters, digits, ``_`` and ``+``), so they are quoted into paths.
"""
from __future__ import annotations

import operator

from mliplake.core.chemistry import Z_OF, element_mask
from mliplake.core.sql import quote
from mliplake.filters import (
    And,
    Compare,
    Everything,
    Field,
    Fuzzy,
    Has,
    Known,
    Length,
    Node,
    Not,
    Or,
    Value,
    value_kind,
)

SQL_OP = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_OPERATOR = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
             ">=": operator.ge}
_U64 = (1 << 64) - 1
INT64 = (-(1 << 63), (1 << 63) - 1)


def literal(value: object) -> str | None:
    """A typed SQL literal equal to what DuckDB binds for ``value`` as a parameter, or None where
    there is none (then it stays a parameter).  Why: DuckDB's Python binding imports pandas on a
    process's first parameterised statement, a third of a new process's first query."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return f"CAST({value} AS BIGINT)" if INT64[0] <= value <= INT64[1] else None
    if isinstance(value, float):
        return f"CAST('{float(value)!r}' AS DOUBLE)"  # repr round-trips; 'inf' and 'nan' cast too
    if isinstance(value, str) and "\0" not in value and len(value) <= 100_000:
        return f"CAST({quote(value)} AS VARCHAR)"
    return None


class Compiler:
    """One compilation: collects parameters in order."""

    def __init__(self) -> None:
        self.params: list = []

    def p(self, value: object) -> str:
        lit = literal(value)
        if lit is not None:
            return lit
        self.params.append(value)
        return "?"

    def compile(self, node: Node) -> str:
        match node:
            case Everything():
                return "TRUE"
            case And(items):
                return "(" + " AND ".join(self.compile(i) for i in items) + ")"
            case Or(items):
                return "(" + " OR ".join(self.compile(i) for i in items) + ")"
            case Not(item):
                return f"(NOT {self.compile(item)})"
            case Compare():
                return self.compare(node)
            case Known(field, known):
                return self.known(field, known)
            case Fuzzy(field, kind, value):
                fn = {"contains": "contains", "starts": "starts_with", "ends": "ends_with"}[kind]
                return f"{fn}({self.string_expr(field)}, {self.p(value)})"
            case Has():
                return self.has(node)
            case Length(field, op, n):
                return self.compare_number(self.length_expr(field), op, n, integer=True)
        raise TypeError(f"cannot compile {node!r}")  # pragma: no cover

    # ---- expressions for a field, typed; NULL where the frame has no value of that type

    @staticmethod
    def path(field: Field) -> str:
        return "'$." + ".".join(f'"{k}"' for k in field.path) + "'"

    def typed(self, field: Field, json_types: str, cast: str) -> str:
        col, path = field.root, self.path(field)
        return f"(CASE WHEN json_type({col}, {path}) IN {json_types} THEN CAST(json_extract({col}, {path}) AS {cast}) END)"

    def string_expr(self, field: Field) -> str:
        if field.spec:
            return field.spec.column
        col, path = field.root, self.path(field)
        return f"(CASE WHEN json_type({col}, {path}) = 'VARCHAR' THEN json_extract_string({col}, {path}) END)"

    def value_expr(self, field: Field, value: object) -> str:
        if field.spec:
            return field.spec.column
        if isinstance(value, bool):
            return self.typed(field, "('BOOLEAN')", "BOOLEAN")
        if isinstance(value, (int, float)):
            return self.number_expr(field)
        return self.string_expr(field)

    def number_expr(self, field: Field) -> str:
        # One JSON parse per row instead of two (json_type, then json_extract): the value's JSON text
        # casts to DOUBLE exactly when it is a JSON number (strings keep their quotes; true, null,
        # arrays and objects do not cast). Half the time of the CASE form on broad info.* filters.
        col, path = field.root, self.path(field)
        return _finite(f"TRY_CAST(CAST(json_extract({col}, {path}) AS VARCHAR) AS DOUBLE)")

    def compare(self, node: Compare) -> str:
        f, op, value = node.field, node.op, node.value
        if value_kind(value) == "number":
            expr = f.spec.column if f.spec else self.number_expr(f)
            return self.compare_number(expr, op, value, integer=f.kind == "integer")
        return f"({self.value_expr(f, value)} {SQL_OP[op]} {self.p(value)})"

    def compare_number(self, expr: str, op: str, value: int | float, integer: bool) -> str:
        """``expr op value``: integer columns compare exactly, everything else as DOUBLE (JSON numbers too)."""
        if not integer:
            return f"({expr} {SQL_OP[op]} {self.p(float(value))})"  # the parser keeps ints within double range
        if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
            # DuckDB cannot bind integers beyond 128 bits; beyond int64 the sign alone decides, as 0 vs value
            return f"(CASE WHEN {expr} IS NOT NULL THEN {str(_OPERATOR[op](0, value)).upper()} END)"
        return f"({expr} {SQL_OP[op]} {self.p(value)})"

    def known(self, field: Field, known: bool) -> str:
        if field.spec:
            if field.kind in ("elements", "list_number"):
                return "TRUE" if known else "FALSE"
            return f"({field.spec.column} IS {'NOT ' if known else ''}NULL)"
        expr = f"coalesce(json_type({field.root}, {self.path(field)}), 'NULL')"
        return f"({expr} {'<>' if known else '='} 'NULL')"

    def length_expr(self, field: Field) -> str:
        if field.kind == "elements":
            return "nelements"
        if field.spec:
            return f"len({field.spec.column})"
        col, path = field.root, self.path(field)
        return f"(CASE WHEN json_type({col}, {path}) = 'ARRAY' THEN json_array_length({col}, {path}) END)"

    def list_items(self, field: Field, kind: str) -> str:
        """A JSON list's items of one kind (string | number | bool), NULL in the place of any other
        item, so that ``[1, "a", [2]]`` compares like the index's typed item fields (search._list);
        NULL where the key does not hold a list."""
        col, path = field.root, self.path(field)
        items = f"(CASE WHEN json_type({col}, {path}) = 'ARRAY' THEN CAST(json_extract({col}, {path}) AS JSON[]) END)"
        if kind == "number":  # the JSON text casts to DOUBLE only for numbers, as in number_expr
            doubles = f"list_transform({items}, lambda x: TRY_CAST(CAST(x AS VARCHAR) AS DOUBLE))"
            return f"list_transform({doubles}, lambda d: CASE WHEN isfinite(d) THEN d END)"
        if kind == "string":
            return f"list_transform({items}, lambda x: CASE WHEN json_type(x) = 'VARCHAR' THEN x ->> '$' END)"
        return (f"list_transform({items}, lambda x: "
                "CASE WHEN json_type(x) = 'BOOLEAN' THEN CAST(CAST(x AS VARCHAR) AS BOOLEAN) END)")

    def has(self, node: Has) -> str:
        f = node.field
        if f.kind == "elements" and node.op == "=":
            return self.has_elements(node.mode, [str(v) for v in node.values])
        kind = value_kind(node.values[0])
        values: list[Value] = [float(v) if kind == "number" else v for v in node.values]
        lst = f.spec.column if f.spec else self.list_items(f, kind)
        if node.mode == "one" and node.op != "=":
            return f"(len(list_filter({lst}, lambda x: x {SQL_OP[node.op]} {self.p(values[0])})) > 0)"
        items = "[" + ", ".join(self.p(v) for v in values) + "]"
        if node.mode in ("one", "all"):
            return f"list_has_all({lst}, {items})"
        if node.mode == "any":
            return f"list_has_any({lst}, {items})"
        # only: no item outside the values, items of another kind (NULL here) included; unknown without a list
        return f"(len(list_filter({lst}, lambda x: x IS NULL OR NOT list_contains({items}, x))) = 0)"

    @staticmethod
    def has_elements(mode: str, symbols: list[str]) -> str:
        lo = hi = 0
        for s in symbols:
            a, b = element_mask(Z_OF[s])
            lo |= a
            hi |= b
        L, H = f"{lo}::UBIGINT", f"{hi}::UBIGINT"
        if mode in ("one", "all"):
            return f"((element_mask_lo & {L}) = {L} AND (element_mask_hi & {H}) = {H})"
        if mode == "any":
            return f"((element_mask_lo & {L}) <> 0 OR (element_mask_hi & {H}) <> 0)"
        return (f"((element_mask_lo & {_U64 ^ lo}::UBIGINT) = 0 AND "
                f"(element_mask_hi & {_U64 ^ hi}::UBIGINT) = 0)")  # only


def _finite(expr: str) -> str:
    """``expr`` (a DOUBLE) where finite, else NULL: a JSON number beyond double range (``1e400``)
    reads as inf, which the index leaves out as no usable number (search._kind).  The lambda
    evaluates ``expr`` once, where a CASE would parse the JSON twice."""
    return f"list_transform([{expr}], lambda d: CASE WHEN isfinite(d) THEN d END)[1]"


def where(node: Node) -> tuple[str, list]:
    """``(sql, params)`` for a WHERE clause over the ``configurations`` view."""
    from mliplake.filters import FilterError

    c = Compiler()
    try:
        return c.compile(node), c.params
    except RecursionError:
        raise FilterError("filter: nested too deeply") from None
