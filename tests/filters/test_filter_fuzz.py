"""Generated filters against a lake of awkward user keys, on both engines.

A seeded generator writes a few thousand filters over the whole grammar (every registry field,
``info.*``/``method.*`` keys whose values change JSON type from frame to frame, every operator,
huge, tiny and odd numbers, strings with quotes and backslashes, nesting).  Each must give an
answer or a :class:`FilterError`, never another exception, and the OpenSearch compiler must
select exactly the frames DuckDB selects.  ``MLIPLAKE_FUZZ_SEED`` / ``MLIPLAKE_FUZZ_N`` replay or
widen a run; a failure prints the filters that failed, each one replayable on its own.
"""
from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import SAMPLES

import mliplake
from mliplake import filters, search
from mliplake.filters import FIELDS, FilterError, Node
from mliplake.filters.sql import where

SEED = int(os.environ.get("MLIPLAKE_FUZZ_SEED", "20240611"))
N = int(os.environ.get("MLIPLAKE_FUZZ_N", "1000"))  # more: MLIPLAKE_FUZZ_N=20000
KEY = ["dataset", "config_id"]

# ---------------------------------------------------------------- the lake

HUGE = 10**400  # beyond double range: DuckDB reads inf, the index leaves it out; both: no number

#: info of the awkward frames: every key changes JSON type between frames
INFOS: list[dict[str, Any]] = [
    {"tags": ["a", [1]], "n": 1500, "s": "1500", "b": True, "z": None, "nested": {"v": 2, "w": "x"}},
    {"tags": [1, 2, 3], "n": "1500", "s": "x", "b": False, "nested": {"v": "2", "deep": {"z": [1, "1"]}}},
    {"tags": [True, None, 3.5, "3"], "n": 3.5, "s": 'a"b\\c', "b": "true", "REF_x": 1},
    {"tags": [], "n": [1, 2], "s": 12, "b": 1, "nested": []},
    {"tags": [[1, 2], {"a": 1}], "n": True, "s": "", "big": 10**40, "nested": {"v": [2]}},
    {"tags": "str", "n": None, "s": "*?", "big": -1e300, "REF_x": "1"},
    {"tags": [1500, "1500", 1500.0], "n": -0.0, "s": "ü", "big": 2**63},
    {"tags": [-0.0, 0, False], "n": 0, "s": "\\", "big": -(2**63) - 1, "b": None},
    {"tags": [1e300, -1e300, 1e-300], "n": 1e-300, "s": "' OR 1=1 --", "big": HUGE},
    {"tags": [HUGE, 2], "n": 2**64, "s": "1e3", "big": -HUGE, "nested": {"v": None}},
    {"tags": ["a", "b", "a"], "n": "nan", "s": "Si", "b": [True]},
    {"tags": [None], "n": {"x": 1}, "s": "null", "b": False, "REF_x": [1, "1"]},
    {"tags": [2, 3], "n": 10**20 + 1, "s": "x\ny", "b": True},
    {"tags": [0.1, 0.2, 0.30000000000000004], "n": -1500, "s": "a*b", "big": 10**37},
    {"tags": [True, False], "n": 1.5e-5, "s": "aa", "b": "false"},
    {},
]
#: frames with integers of more than 38 digits, which ingest may quarantine (a limit on user keys);
#: where the lake stores them, they must not break a filter
BEYOND_38_DIGITS = [4, 8, 9]

SYMBOLS = [["O", "H"], ["O", "H", "H"], ["Si"], ["Cu", "Ni"], ["C", "H", "N", "O"], ["Si", "Si", "Cu"]]


def awkward_records() -> list[dict[str, Any]]:
    recs = []
    for k, info in enumerate(INFOS):
        symbols = SYMBOLS[k % len(SYMBOLS)]
        positions = [[0.7 * i, 0.1 * k, 0.05 * i * k] for i in range(len(symbols))]
        rec: dict[str, Any] = {"symbols": symbols, "positions": positions, "info": info,
                               "energy": -1.5 * (k + 1), "forces": [[0.1 * k, 0.0, -0.1] for _ in symbols]}
        if k % 3 == 0:
            rec["cell"] = [8.0, 8.0, 8.0]
            rec["pbc"] = [True, True, k % 2 == 0]
        recs.append(rec)
    return recs


METHOD = {"code": "VASP", "functional": "PBE", "cutoff": 520, "flags": ["a", 1, True], "kpoints": [4, 4, 4],
          "note": 'a "quoted" \\ word', "smearing": {"sigma": 0.05, "kind": "gauss"}}


@pytest.fixture(scope="module")
def fuzz_lake(tmp_path_factory) -> mliplake.Lake:
    """The awkward frames as a real deposit (JSON records and a manifest), beside mlearn's test file."""
    root: Path = tmp_path_factory.mktemp("fuzz")
    (root / "awkward.json").write_text(json.dumps(awkward_records()))
    (root / "manifest.yaml").write_text(yaml.safe_dump({
        "dataset": "awkward", "title": "awkward user keys", "license": "CC-BY-4.0", "method": METHOD,
        "labels": ["energy", "forces"]}))
    lake = mliplake.Lake(root / "lake")
    report = lake.deposit([root / "awkward.json"], manifest=root / "manifest.yaml")
    assert stored(lake) >= set(range(len(INFOS))) - set(BEYOND_38_DIGITS), report.summary()
    mlearn = lake.deposit([SAMPLES["mlearn"] / "Si_test.json"], manifest=SAMPLES["mlearn"] / "manifest.yaml")
    assert mlearn.stored > 10, mlearn.summary()
    return lake


@pytest.fixture(scope="module")
def index(fuzz_lake, opensearch_url):
    client = search.connect(opensearch_url)
    alias = f"mliplake-fuzz-{uuid.uuid4().hex[:10]}"
    assert search.index_lake(fuzz_lake, client, alias=alias).indexed == fuzz_lake.count()
    yield client, alias
    client.indices.delete(index=f"{alias}-v*", allow_no_indices=True, ignore_unavailable=True)


def stored(lake: mliplake.Lake) -> set[int]:
    """The awkward frames the lake stored (by index into INFOS)."""
    return {r[0] for r in lake.sql("SELECT frame_index FROM configurations WHERE dataset = 'awkward'").fetchall()}


def duck_ids(con: Any, node: Node) -> set[str]:
    """Document ids where the filter is true, on a connection of the lake (one for the whole run: cheaper)."""
    clause, params = where(node)
    rows = con.sql(f"SELECT dataset || '/' || config_id FROM configurations WHERE {clause}", params=params).fetchall()
    return {r[0] for r in rows}


def opensearch_ids(client, alias: str, node: Node) -> set[str]:
    body = {"query": search.compile_query(node), "size": 10_000, "_source": False}
    return {h["_id"] for h in client.search(index=alias, body=body)["hits"]["hits"]}


# ---------------------------------------------------------------- the generator

JSON_KEYS = ["info.tags", "info.n", "info.s", "info.b", "info.z", "info.big", "info.nested", "info.nested.v",
             "info.nested.w", "info.nested.deep.z", "info.REF_x", "info.missing", "info.group", "info.tags.x",
             "method.code", "method.functional", "method.cutoff", "method.flags", "method.kpoints", "method.note",
             "method.smearing.sigma", "method.smearing.kind", "method.basis"]
OPS = ["=", "!=", "<", "<=", ">", ">="]
NUMBERS = ["0", "-0", "-0.0", "1", "2", "3", "-1", "1500", "1500.0", "3.5", "0.5", "1.5e-5", "1E5", "+5", "007",
           "1.", ".5", "-.5", "0.30000000000000004", "1e300", "-1e300", "1e-300", "1e400", "-1e400", "1e-400",
           "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
           "18446744073709551616", "100000000000000000001", "1" + "0" * 38, "1" + "0" * 39, "-1" + "0" * 40,
           "1" + "0" * 307, "1" + "0" * 308, "-1" + "0" * 309, "0" * 400 + "1"]
LONG_NUMBERS = ["1" + "0" * 4300, "-1" + "0" * 4400]  # past Python's int() limit; rarer: slow to parse
STRINGS = ["a", "b", "x", "aa", "1500", "3", "1", "1e3", "", "*", "?", "*?", "a*b", "ü", "Si", "H", "O", "Cu",
           "VASP", "PBE", "gauss", "true", "null", "nan", "Vacancy", "Surface", 'a"b\\c', "\\", '"', "' OR 1=1 --",
           'a "quoted" \\ word', "x\ny", "str", "%", "_"]
SYMBOLS_IN_FILTERS = ["H", "O", "C", "N", "Si", "Cu", "Ni", "Fe", "Xx"]


def _occurring(obj: Any, path: str, out: dict[str, list[Any]]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _occurring(v, f"{path}.{k}", out)
        return
    for v in obj if isinstance(obj, list) else [obj]:
        if isinstance(v, str) or (isinstance(v, (int, float)) and abs(v) < 1e300):  # bools too
            out.setdefault(path, []).append(v)


def occurring() -> dict[str, list[Any]]:
    """key -> the strings, numbers and booleans it holds somewhere (list items included)."""
    out: dict[str, list[Any]] = {"nsites": [1, 2, 3, 4, 8, 64], "nelements": [1, 2, 3, 4], "frame_index": [0, 5, 15],
                                 "energy": [-1.5, -12.0, -300.0], "energy_per_atom": [-1.0, -5.4],
                                 "max_force": [0.1, 1.0], "volume": [300.0, 512.0], "elements_ratios": [0.5, 1.0],
                                 "dimension_types": [0, 1], "nperiodic_dimensions": [0, 2, 3],
                                 "chemical_formula_reduced": ["H2O", "Si"], "dataset": ["awkward", "mlearn-si"]}
    for info in INFOS:
        _occurring(info, "info", out)
    _occurring(METHOD, "method", out)
    return out


OCCURRING = occurring()


def quoted(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(v: Any) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    return quoted(v) if isinstance(v, str) else repr(v)


def text_kind(v: str) -> str:
    return "string" if v.startswith('"') else "bool" if v in ("TRUE", "FALSE") else "number"


class Gen:
    """Random filter text; mostly well-typed (so that most filters run), sometimes not (errors)."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def filter(self) -> str:
        return self.expr(self.r.choice([0, 1, 1, 2, 3]))

    def expr(self, depth: int) -> str:
        r = self.r
        if depth <= 0 or r.random() < 0.3:
            return self.leaf()
        form = r.choice(["and", "or", "not", "paren", "mixed"])
        if form == "not":
            return f"NOT {self.wrap(self.expr(depth - 1))}"
        if form == "paren":
            return f"({self.expr(depth - 1)})"
        items = [self.wrap(self.expr(depth - 1)) for _ in range(r.choice([2, 2, 3]))]
        if form == "mixed":  # precedence: NOT, then AND, then OR
            return f"{items[0]} AND {items[1]} OR " + " AND ".join(items[2:] or [self.leaf()])
        return f" {form.upper()} ".join(items)

    def wrap(self, text: str) -> str:
        return f"({text})" if " AND " in text or " OR " in text or self.r.random() < 0.1 else text

    def field(self) -> tuple[str, str]:
        if self.r.random() < 0.5:
            name = self.r.choice(JSON_KEYS)
            return name, "json"
        spec = self.r.choice(list(FIELDS.values()))
        return spec.name, spec.kind

    def value(self, kind: str, name: str = "") -> str:
        r = self.r
        if name in OCCURRING and r.random() < 0.5:
            return literal(r.choice(OCCURRING[name]))
        want = {"string": "string", "number": "number", "integer": "number", "bool": "bool",
                "elements": "symbol", "list_number": "number"}.get(kind)
        if want is None or r.random() < 0.03:  # user keys take anything; sometimes a type error
            want = r.choice(["string", "number", "number", "bool", "symbol"])
        if want == "number":
            return r.choice(LONG_NUMBERS if r.random() < 0.01 else NUMBERS)
        if want == "bool":
            return r.choice(["TRUE", "FALSE"])
        if want == "symbol":
            return quoted(r.choice(SYMBOLS_IN_FILTERS))
        return quoted(r.choice(STRINGS))

    def values(self, kind: str, name: str) -> str:
        """A value list, mostly of one kind (mixed kinds are an error)."""
        vs = [self.value(kind, name)]
        for _ in range(self.r.choice([0, 1, 1, 2, 3])):
            v = self.value(kind, name)
            for _retry in range(5):
                if text_kind(v) == text_kind(vs[0]) or self.r.random() < 0.05:
                    break
                v = self.value(kind, name)
            vs.append(v)
        return ", ".join(vs)

    def leaf(self) -> str:
        r = self.r
        name, kind = self.field()
        forms = {"string": ["cmp", "known", "fuzzy"], "number": ["cmp", "const-first", "known"],
                 "integer": ["cmp", "const-first", "known"], "bool": ["cmp", "known"],
                 "elements": ["has", "has-op", "has-set", "has-set", "length", "known"],
                 "list_number": ["has", "has-op", "has-set", "length", "known"],
                 "json": ["cmp", "cmp", "const-first", "has", "has-op", "has-set", "has-set", "length", "known",
                          "fuzzy"]}[kind]
        form = r.choice(forms) if r.random() > 0.04 else r.choice(["cmp", "has", "length", "fuzzy", "odd"])
        op = r.choice(OPS if kind != "bool" else ["=", "!="])
        if form == "cmp":
            return f"{name} {op} {self.value(kind, name)}"
        if form == "const-first":
            return f"{self.value(kind, name)} {op} {name}"
        if form == "has":
            return f"{name} HAS {self.value(kind, name)}"
        if form == "has-op":
            return f"{name} HAS {op} {self.value(kind, name)}"
        if form == "has-set":
            return f"{name} HAS {r.choice(['ALL', 'ANY', 'ONLY'])} {self.values(kind, name)}"
        if form == "length":
            n = r.choice(["0", "1", "2", "3", "4", "-1", "9223372036854775808", "1" + "0" * 40, "1" + "0" * 400])
            return f"{name} LENGTH {r.choice(['', *OPS])} {n}".replace("  ", " ")
        if form == "known":
            return f"{name} IS {r.choice(['KNOWN', 'UNKNOWN'])}"
        if form == "fuzzy":
            word = r.choice(["CONTAINS", "STARTS WITH", "ENDS WITH", "STARTS", "ENDS"])
            return f"{name} {word} {self.value('string') if r.random() < 0.95 else self.value('number')}"
        return r.choice([f"{name} = nsites", f"{name}:info.n HAS 1:2", f"{name} HAS ALL < 1, 2", f"{name} ="])


def generated(seed: int = SEED, n: int = N) -> list[str]:
    """``n`` distinct filters."""
    g = Gen(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        out[g.filter()] = None
    return list(out)


# ---------------------------------------------------------------- the tests


def outcome(run: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", answer) | ("error", FilterError message) | ("crash", description)."""
    try:
        return "ok", run()
    except FilterError as e:
        return "error", str(e)
    except Exception as e:  # noqa: BLE001 - the point: anything but a FilterError is a failure
        return "crash", f"{type(e).__name__}: {str(e)[:300]}"


def short(filter_: str) -> str:
    return filter_ if len(filter_) < 300 else filter_[:150] + f" ...({len(filter_)} chars)... " + filter_[-100:]


def test_generator_covers_the_grammar():
    text = "\n".join(generated())
    for needle in ["HAS ALL", "HAS ANY", "HAS ONLY", "HAS !=", "HAS <", "LENGTH", "IS KNOWN", "IS UNKNOWN",
                   "CONTAINS", "STARTS WITH", "ENDS WITH", "NOT ", " AND ", " OR ", "(", "info.tags", "method.",
                   "1" + "0" * 4300, "1e400", '\\"', "\\\\"]:
        assert needle in text, needle
    assert len(set(generated())) == N


def compared(f: str, duck: tuple[str, Any], dsl: tuple[str, Any]) -> list[str]:
    """What differs between the engines' outcomes for one filter."""
    if duck[0] != dsl[0]:
        return [f"{short(f)}\n    duckdb {duck[0]}, opensearch {dsl[0]}: {duck[1]!s:.200} / {dsl[1]!s:.200}"]
    if duck[0] == "ok" and duck[1] != dsl[1]:
        return [f"{short(f)}\n    only duckdb: {sorted(duck[1] - dsl[1])[:5]}; "
                f"only opensearch: {sorted(dsl[1] - duck[1])[:5]}"]
    return []


def test_every_generated_filter_answers_or_raises_filter_error(fuzz_lake, index):
    """Parsed once, compiled for both engines.  Every third filter also negated (the DSL's "false"
    queries; no frame may match a filter and its NOT), every 20th also through the engines' count."""
    client, alias = index
    engines = search.DuckDBEngine(fuzz_lake), search.OpenSearchEngine(fuzz_lake, client, alias)
    total = fuzz_lake.count()
    con = fuzz_lake.connection()
    crashes, disagree, answered, proper = [], [], 0, 0

    def both(text: str, node: Node) -> tuple[tuple[str, Any], tuple[str, Any]]:
        duck = outcome(lambda: duck_ids(con, node))
        dsl = outcome(lambda: opensearch_ids(client, alias, node))
        crashes.extend(f"{engine}: {short(text)}\n    {detail}"
                       for engine, (status, detail) in (("duckdb", duck), ("opensearch", dsl)) if status == "crash")
        disagree.extend(compared(text, duck, dsl))
        return duck, dsl

    for i, f in enumerate(generated()):
        parsed = outcome(lambda: filters.parse(f))  # noqa: B023 - called at once
        if parsed[0] == "crash":
            crashes.append(f"parse: {short(f)}\n    {parsed[1]}")
        if parsed[0] != "ok":
            continue
        duck, _ = both(f, parsed[1])
        if duck[0] != "ok":
            continue
        answered += 1
        proper += 0 < len(duck[1]) < total
        if i % 3 == 0:
            negated, _ = both(f"NOT ({f})", filters.Not(parsed[1]))
            if negated[0] == "ok" and duck[1] & negated[1]:
                disagree.append(f"{short(f)}\n    matches as well as its NOT: {sorted(duck[1] & negated[1])[:5]}")
        if i % 20 == 0:  # the public path: text in, a count or a FilterError out
            for engine in engines:
                status, detail = outcome(lambda: engine.count(f))  # noqa: B023
                if status != "ok" or detail != len(duck[1]):
                    disagree.append(f"{type(engine).__name__}.count({short(f)}): {status} {detail!s:.300}")
    assert not crashes, f"{len(crashes)} crashed (seed {SEED}):\n" + "\n".join(crashes[:20])
    assert not disagree, f"{len(disagree)} differ (seed {SEED}):\n" + "\n".join(disagree[:20])
    # the run tests something: most filters are valid, and many select a proper subset
    assert answered > 0.75 * N and proper > 0.15 * N, (answered, proper)


# ---------------------------------------------------------------- the awkward values, answer by answer

#: filter -> the awkward frames (indices into INFOS) where it is true; type-strict, both engines
EXPECTED = [
    ("info.tags HAS 3", {1, 12}),  # not the string "3" of frame 2
    ('info.tags HAS "3"', {2}),
    ("info.tags HAS 1", {1}),  # not [1] nested in frame 0, not TRUE
    ("info.tags HAS TRUE", {2, 14}),
    ("info.tags HAS FALSE", {7, 14}),
    ("info.tags HAS 0", {7}),  # -0.0 and 0: one zero
    ("info.tags HAS < 0", {8}),
    ("info.tags HAS > 1e299", {8}),  # 10^400 of frame 9 is no number
    ("info.tags HAS 2", {1, 9, 12}),
    ("info.tags HAS 0.30000000000000004", {13}),
    ("info.tags HAS ALL 1, 2, 3", {1}),
    ("info.tags HAS ALL 1, 2.5", set()),
    ("info.tags HAS ANY 1500, 3.5", {2, 6}),
    ("info.tags HAS ONLY 2, 3", {3, 12}),  # [] too; frame 9 has 10^400
    ("info.tags HAS ONLY 1500", {3}),  # frame 6 also holds the string "1500"
    ('info.tags HAS ONLY "a", "b"', {3, 10}),
    ("info.tags HAS != 3", {1, 2, 6, 7, 8, 9, 12, 13}),
    ('info.tags HAS != "a"', {2, 6, 10}),
    ("info.tags HAS != TRUE", {7, 14}),
    ("info.tags LENGTH 3", {1, 6, 7, 8, 10, 13}),
    ("NOT info.tags HAS 3", {0, 2, 3, 4, 6, 7, 8, 9, 10, 11, 13, 14}),  # "str" and no tags: unknown
    ("info.tags IS UNKNOWN", {15}),
    ("info.n = 1500", {0}),  # not the string "1500"
    ("info.n > 1e19", {9, 12}),
    ("info.n < 0", {13}),  # not -0.0
    ("info.n = 0", {6, 7}),
    ("info.n = TRUE", {4}),
    ("info.big > 1e39", {4}),  # 10^400 is no number
    ("info.big < -1e299", {5}),
    ("info.big IS KNOWN", {4, 5, 6, 7, 8, 9, 13}),
    ("info.big = 9223372036854775808", {6}),
    ("info.big < -9223372036854775808", {5}),  # -(2^63)-1 reads as the double -2^63
    ("info.s = 12", {3}),
    ('info.s = "1500"', {0}),
    ('info.s = ""', {4}),
    ('info.s < ""', set()),
    ('info.s <= ""', {4}),
    ('info.s = "a\\"b\\\\c"', {2}),
    ('info.s CONTAINS "*"', {5, 13}),
    ("info.b = TRUE", {0, 12}),
    ("info.b != TRUE", {1, 11}),  # the string "true", 1 and [true] are no booleans
    ("info.nested.v = 2", {0}),
    ('info.nested.v = "2"', {1}),
    ("info.nested.v HAS 2", {4}),
    ('info.nested.deep.z HAS "1"', {1}),
    ("info.nested.deep.z HAS ONLY 1", set()),
    ("info.REF_x = 1", {2}),
    ("method.flags HAS TRUE AND method.flags HAS 1", set(range(len(INFOS)))),
]


@pytest.mark.parametrize("filter_, frames", EXPECTED, ids=[f for f, _ in EXPECTED])
def test_awkward_values_on_both_engines(fuzz_lake, index, filter_, frames):
    client, alias = index
    text = f'dataset = "awkward" AND ({filter_})'
    for engine in (search.DuckDBEngine(fuzz_lake), search.OpenSearchEngine(fuzz_lake, client, alias)):
        got = engine.search(text, columns=["frame_index"]).column("frame_index").to_pylist()
        assert set(got) == frames & stored(fuzz_lake), type(engine).__name__


def test_summary_of_awkward_keys(fuzz_lake):
    """Values near the double limit, mixed types, a filter with OR: statistics, never an overflow."""
    s = fuzz_lake.summary('nsites > 0 OR info.s = "x"', keys=["info.big", "info.n", "info.tags", "info.s"])
    big = next(st for st in s.numeric if st.key == "info.big")
    bigs = [INFOS[k]["big"] for k in stored(fuzz_lake) if INFOS[k].get("big") is not None]
    values = [float(v) for v in bigs if abs(v) < 1e308]
    assert (big.count, big.min, big.max) == (len(values), min(values), max(values))  # +-10^400: no numbers
    assert big.std is not None and big.std > 1e299 and sum(c for *_, c in big.histogram) == len(values)
    assert {st.key for st in s.numeric} == {"info.big", "info.n", "info.s"}  # info.tags holds no scalar number
