"""The filter language (docs/query.md) against an independent reference.

The three bundled samples are deposited into one lake.  The same frames are read again
*without* mliplake (``ase.io`` for extxyz, ``json`` for the mlearn records, ``yaml`` for the
manifests) into small :class:`Frame` records, and every filter of ``FILTERS`` comes with a
hand-written predicate over such a record that implements the documented semantics,
including SQL's three-valued logic: a comparison with a missing value, or with a value of
another type, is *unknown* (``None``), ``NOT`` of unknown is unknown, and a frame matches
only when the whole filter is ``True``.
"""
from __future__ import annotations

import json
import math

import pytest
from support.filter_cases import FILTERS, KEY_COLUMNS, RECORDS, cmp, has, has_any, info, length, reference

from mliplake import filters
from mliplake.filters import FilterError


def keys(table) -> set[tuple[str, str, int]]:
    return set(zip(*(table.column(c).to_pylist() for c in KEY_COLUMNS)))


def test_reference_matches_the_lake(samples_lake):
    """The reference reads the same frames the lake stores (no duplicates, nothing quarantined)."""
    assert keys(samples_lake.configurations(columns=KEY_COLUMNS)) == {r.key for r in RECORDS}
    assert len(RECORDS) == len({r.key for r in RECORDS})


def test_filter_table_is_selective():
    """Most filters pick a proper, non-empty subset: the table tests something."""
    sizes = {p.id: len(reference(p.values[1])) for p in FILTERS}
    proper = [i for i, n in sizes.items() if 0 < n < len(RECORDS)]
    assert len(FILTERS) >= 55
    assert len(proper) >= 0.7 * len(FILTERS), sizes


@pytest.mark.parametrize("filter_, predicate", FILTERS)
def test_filter(samples_lake, filter_, predicate):
    expected = reference(predicate)
    got = samples_lake.search(filter_, columns=KEY_COLUMNS)
    assert got.column_names == KEY_COLUMNS
    assert got.num_rows == len(keys(got))
    assert keys(got) == expected
    assert samples_lake.count(filter_) == len(expected)


def test_search_limit_and_columns(samples_lake):
    assert samples_lake.search('dataset = "rmd17-ethanol"', limit=7).num_rows == 7
    assert samples_lake.search('source_file = "iso_atoms.xyz"').num_rows == 4
    columns = ["config_id", "info", "chemical_formula_hill"]
    table = samples_lake.search('source_file = "iso_atoms.xyz"', columns=columns)
    assert table.column_names == columns
    assert sorted(table.column("chemical_formula_hill").to_pylist()) == ["C", "H", "N", "O"]
    assert all(json.loads(v) == {"config_type": "IsolatedAtom"} for v in table.column("info").to_pylist())


# ---------------------------------------------------------------- errors

BAD_FILTERS = [
    pytest.param("(nsites < 5", ["ends too early", "')'"], id="unbalanced-open"),
    pytest.param("nsites < 5)", ["column 11"], id="unbalanced-close"),
    pytest.param("nsites <", ["ends too early", "a number"], id="missing-value"),
    pytest.param("nsites < 5 AND", ["ends too early", "a field"], id="dangling-and"),
    pytest.param("OR nsites < 5", ["column 1"], id="leading-or"),
    pytest.param("elements HAS ALL", ["ends too early", "a string"], id="has-all-without-values"),
    pytest.param('elements HAS ALL "Cu" "Ni"', ["column 23", '"Ni"'], id="values-without-comma"),
    pytest.param('elements HAS ANY "C",', ["ends too early", "a string"], id="trailing-comma"),
    pytest.param('dataset = "3bpa', ["column 11", "never closed"], id="unterminated-string"),
    pytest.param("nsites < 5 nelements = 1", ["column 12", "nelements"], id="two-comparisons-without-and"),
    pytest.param("dataset = '3bpa'", ["column 11"], id="single-quotes"),
    pytest.param("nsites = = 5", ["column 10"], id="two-operators"),
    pytest.param("nsites = nelements", ["two fields"], id="field-vs-field"),
    pytest.param("5 < 6", ["two values"], id="value-vs-value"),
    pytest.param("nsites LENGTH", ["ends too early", "a number"], id="length-without-value"),
    pytest.param('elements LENGTH "three"', ["column 17"], id="length-of-string"),
    pytest.param("nsite < 10", ["unknown field 'nsite'", "did you mean nsites"], id="unknown-field"),
    pytest.param("energy_per_atm < 10", ["energy_per_atm", "energy_per_atom"], id="unknown-field-suggestion"),
    pytest.param("Nsites < 10", ["column 1"], id="upper-case-field"),
    pytest.param('nsites < "ten"', ["nsites is a number", '"ten"'], id="number-vs-string"),
    pytest.param("chemical_formula_reduced > 5", ["chemical_formula_reduced", "string"], id="string-vs-number"),
    pytest.param("has_stress = 3", ["has_stress is a boolean", "not 3"], id="boolean-vs-number"),
    pytest.param('elements HAS "Xx"', ["unknown element 'Xx'"], id="unknown-element"),
    pytest.param('elements HAS ALL "C","Qq"', ["unknown element 'Qq'"], id="unknown-element-in-list"),
    pytest.param("nsites LENGTH 3", ["LENGTH works on lists", "nsites is a number"], id="length-on-scalar"),
    pytest.param('nsites CONTAINS "1"', ["nsites is a number", "CONTAINS"], id="contains-on-number"),
    pytest.param("nsites < 5 and nelements = 1", ["keywords are upper case", "AND, not and"], id="lower-case-keyword"),
    pytest.param("nsites < 5 or nelements = 1", ["keywords are upper case", "OR, not or"], id="lower-case-or"),
    pytest.param("info.x'y = 1", ["column 7"], id="quote-in-field-name"),
    pytest.param("nsites; DROP TABLE configurations < 5", ["column 7"], id="semicolon-in-field-name"),
    pytest.param('info.a"b = 1', ["column 7"], id="double-quote-in-field-name"),
    pytest.param("info.x-- < 5", ["column 7"], id="sql-comment-in-field-name"),
    pytest.param("info.x HAS < TRUE", ["booleans compare only with = and !=", "column 12"], id="has-boolean-order"),
    pytest.param('info.x HAS ALL 1, "a"', ["all strings, all numbers or all booleans"], id="has-all-mixed-kinds"),
    pytest.param("info.x HAS ANY TRUE, 1", ["all strings, all numbers or all booleans"], id="has-any-bool-and-number"),
]


@pytest.mark.parametrize("filter_, needles", BAD_FILTERS)
def test_bad_filter(samples_lake, filter_, needles):
    with pytest.raises(FilterError) as err:
        samples_lake.search(filter_, columns=KEY_COLUMNS)
    for needle in needles:
        assert needle in str(err.value), str(err.value)
    with pytest.raises(FilterError):
        samples_lake.count(filter_)


# ---------------------------------------------------------------- numbers beyond every range

BIG = 10**40  # beyond DuckDB's 128-bit integers
ENORMOUS = 10**5000  # beyond Python's int() of a string (4,300 digits)
E = "1" + "0" * 5000  # ENORMOUS as text (str() of it raises)

NUMBER_FILTERS = [
    pytest.param(f"nsites < {BIG}", lambda r: cmp(r.nsites, "<", BIG), id="int-beyond-128-bits"),
    pytest.param(f"nsites > {BIG}", lambda r: cmp(r.nsites, ">", BIG), id="int-beyond-128-bits-none"),
    pytest.param(f"nsites != -1{'0' * 5000}", lambda r: cmp(r.nsites, "!=", -ENORMOUS), id="int-beyond-int-limit"),
    pytest.param(f"{E} > nsites", lambda r: cmp(r.nsites, "<", ENORMOUS), id="int-beyond-int-limit-first"),
    pytest.param("nsites = 9223372036854775808", lambda r: cmp(r.nsites, "=", 2**63), id="int64-max-plus-one"),
    pytest.param("nsites > -9223372036854775809", lambda r: cmp(r.nsites, ">", -(2**63) - 1), id="int64-min-minus-one"),
    pytest.param(f"nsites < {'0' * 400}9", lambda r: cmp(r.nsites, "<", 9), id="leading-zeros"),
    pytest.param(f"energy > -1{'0' * 400}", lambda r: cmp(r.energy, ">", -(10**400)), id="beyond-double"),
    pytest.param(f"info.md17_index < {BIG}", lambda r: cmp(info(r, "md17_index"), "<", BIG), id="info-beyond-128-bits"),
    pytest.param(f"info.md17_index >= -{E}", lambda r: cmp(info(r, "md17_index"), ">=", -ENORMOUS),
                 id="info-beyond-int-limit"),
    pytest.param(f"info.dihedrals HAS < {E}", lambda r: has(info(r, "dihedrals"), "<", ENORMOUS),
                 id="has-beyond-int-limit"),
    pytest.param(f"elements_ratios HAS ANY 1, {BIG}", lambda r: has_any(r.elements_ratios, 1, BIG), id="ratios-big"),
    pytest.param(f"info.dihedrals LENGTH < {E}", lambda r: length(info(r, "dihedrals"), "<", ENORMOUS),
                 id="length-beyond-int-limit"),
    pytest.param(f"elements LENGTH != {BIG}", lambda r: length(r.elements, "!=", BIG), id="elements-length-big"),
]


@pytest.mark.parametrize("filter_, predicate", NUMBER_FILTERS)
def test_numbers_beyond_every_range(samples_lake, filter_, predicate):
    """Integers past int64, DuckDB's HUGEINT and Python's int() limit compare as their value would."""
    assert samples_lake.count(filter_) == len(reference(predicate))


def test_number_literals():
    assert filters.number("007") == 7 and filters.number("-0") == 0 and filters.number("+5") == 5
    assert filters.number("0" * 400 + "1") == 1
    assert filters.number("1" + "0" * 307) == 10**307
    assert filters.number("1" + "0" * 308) == math.inf and filters.number("-1" + "0" * 5000) == -math.inf
    assert filters.number("1e400") == math.inf and filters.number("-.5") == -0.5
    assert filters.parse("info.x HAS ALL 1, 2.5").values == (1, 2.5)  # ints and floats are all numbers


@pytest.mark.parametrize("name", ["nsites IS KNOWN OR nsites", "a OR b", "", " nsites", "info.x = 1", "nsite"])
def test_field_names_are_names_not_filters(name):
    with pytest.raises(FilterError):
        filters.field_named(name)


def test_field_named():
    assert filters.field_named("info.config_type").path == ("config_type",)
    assert filters.field_named("nsites").spec is filters.FIELDS["nsites"]


def test_filter_error_is_a_value_error():
    assert issubclass(FilterError, ValueError)


@pytest.mark.parametrize("opening", ["(", "NOT ("], ids=["parentheses", "not"])
def test_deep_nesting_is_an_answer_or_a_filter_error(samples_lake, opening):
    """300 levels (an even number of NOTs), well under the length limit: an answer or a FilterError."""
    deep = opening * 300 + "nsites > 1" + ")" * 300
    try:
        n = samples_lake.count(deep)
    except FilterError:
        return
    assert n == len(reference(lambda r: cmp(r.nsites, ">", 1)))


@pytest.mark.parametrize("filter_", [
    pytest.param('dataset = "x\'; DROP TABLE configurations; --"', id="drop-table"),
    pytest.param('info.config_type = "\' OR 1=1 --"', id="or-1-1"),
    pytest.param(r'dataset = "3bpa\" OR \"1\"=\"1"', id="escaped-quote-or"),
    pytest.param('info.description CONTAINS "%\' OR \'1\'=\'1"', id="like-quote"),
    pytest.param('info.config_type STARTS WITH "\'\')) OR TRUE --"', id="parenthesis-break-out"),
])
def test_string_values_are_data_not_sql(samples_lake, filter_):
    assert samples_lake.count(filter_) == 0
    assert samples_lake.search(filter_, columns=KEY_COLUMNS).num_rows == 0
    assert samples_lake.count("nsites >= 1") == len(RECORDS)
    assert samples_lake.configurations(columns=["dataset"]).num_rows == len(RECORDS)
