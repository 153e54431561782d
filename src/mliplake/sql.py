"""The filter tree compiled to DuckDB SQL over the ``configurations`` view.

User values only ever travel as bound parameters; field names come from the
registry in :mod:`mliplake.filters`; JSON keys have passed the grammar's
identifier rule (letters, digits, ``_`` and ``+``), so they are quoted into paths.
"""
from __future__ import annotations

from .chemistry import Z_OF, element_mask
from .filters import And, Compare, Everything, Field, Fuzzy, Has, Known, Length, Node, Not, Or

SQL_OP = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_U64 = (1 << 64) - 1


class Compiler:
    """One compilation: collects parameters in order."""

    def __init__(self) -> None:
        self.params: list = []

    def p(self, value: object) -> str:
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
                return f"({self.length_expr(field)} {SQL_OP[op]} {int(n)})"
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
        return f"TRY_CAST(CAST(json_extract({col}, {path}) AS VARCHAR) AS DOUBLE)"

    def compare(self, node: Compare) -> str:
        value = float(node.value) if type(node.value) is int and not node.field.spec else node.value  # JSON: DOUBLE
        return f"({self.value_expr(node.field, node.value)} {SQL_OP[node.op]} {self.p(value)})"

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

    def has(self, node: Has) -> str:
        f = node.field
        if f.kind == "elements" and node.op == "=":
            return self.has_elements(node.mode, [str(v) for v in node.values])
        if f.kind == "elements":  # HAS < "N": symbols compared as strings
            return f"(len(list_filter(elements, lambda x: x {SQL_OP[node.op]} {self.p(str(node.values[0]))})) > 0)"
        if f.spec:
            lst = f.spec.column
            cast = "DOUBLE"
        else:
            numeric = not isinstance(node.values[0], str)
            cast = "DOUBLE" if numeric else "VARCHAR"
            lst = self.typed(f, "('ARRAY')", f"{cast}[]")
        values = [float(v) if cast == "DOUBLE" else v for v in node.values]
        if node.mode == "one" and node.op != "=":
            return f"(len(list_filter({lst}, lambda x: x {SQL_OP[node.op]} {self.p(values[0])})) > 0)"
        items = "[" + ", ".join(self.p(v) for v in values) + "]"
        if node.mode in ("one", "all"):
            return f"list_has_all({lst}, {items})"
        if node.mode == "any":
            return f"list_has_any({lst}, {items})"
        return f"(CASE WHEN {lst} IS NOT NULL THEN list_has_all({items}, {lst}) END)"  # only

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


def where(node: Node) -> tuple[str, list]:
    """``(sql, params)`` for a WHERE clause over the ``configurations`` view."""
    from .filters import FilterError

    c = Compiler()
    try:
        return c.compile(node), c.params
    except RecursionError:
        raise FilterError("filter: nested too deeply") from None
