"""The OpenSearch engine against a real OpenSearch-API server, never a mock.

osmem-server (from PyPI) runs in its own process on 127.0.0.1, or ``$MLIPLAKE_TEST_OPENSEARCH_URL``
names a real OpenSearch.  The three samples are deposited into one lake and indexed; every filter
of test_filters.FILTERS must select exactly the same configurations through OpenSearch as
through DuckDB.
"""
from __future__ import annotations

import math
import os
import threading
import urllib.error
import urllib.request
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opensearchpy.exceptions import RequestError
from support import deposit_sample, start_osmem
from support.filter_cases import FILTERS, KEY_COLUMNS

import mliplake
from mliplake import filters, search
from mliplake.filters import FilterError
from mliplake.filters.sql import where

KEY = ["dataset", "config_id"]


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory):
    """Two samples (743 frames) for the index-management tests: osmem indexes about 1,000 documents a second."""
    lake = mliplake.Lake(tmp_path_factory.mktemp("small") / "lake")
    for name in ("3bpa", "mlearn"):
        deposit_sample(lake, name)
    return lake


@pytest.fixture(scope="module")
def client(opensearch_url):
    return search.connect(opensearch_url)


def drop(client, alias: str) -> None:
    """Remove a test's indices (they matter on an external server; osmem forgets them anyway)."""
    client.indices.delete(index=f"{alias}-v*", allow_no_indices=True, ignore_unavailable=True)


@pytest.fixture
def alias(client):
    """A fresh alias, so tests never see each other's indices."""
    name = f"mliplake-test-{uuid.uuid4().hex[:10]}"
    yield name
    drop(client, name)


@pytest.fixture(scope="module")
def engines(samples_lake, client):
    name = f"mliplake-test-{uuid.uuid4().hex[:10]}"
    report = search.index_lake(samples_lake, client, alias=name)
    assert report.indexed == samples_lake.count()
    yield search.DuckDBEngine(samples_lake), search.OpenSearchEngine(samples_lake, client, name)
    drop(client, name)


def keys(table) -> set[tuple[str, str]]:
    return set(zip(*(table.column(c).to_pylist() for c in KEY), strict=True))


def lake_docs(lake) -> dict[str, str]:
    return search.lake_fingerprints(lake)


def index_docs(client, alias: str) -> dict[str, str]:
    return search.index_fingerprints(client, search.current_index(client, alias))


# ---------------------------------------------------------------- the filter language

EXTRA_FILTERS = [  # DSL paths the reference table does not reach
    "nsites < 9.5", "nsites = 9.0", "nsites = 9.5", "nsites != 9.5", "nsites > 8.5", "nsites >= 8.5",
    "nsites <= 100000000000000000000000000000", "nsites > -100000000000000000000000000000",
    "frame_index < 1e400", "energy > -1e400", "energy < -1e400", "energy_per_atom != -5",
    "elements_ratios LENGTH 2", "elements_ratios LENGTH >= 2", "dimension_types LENGTH 3",
    "dimension_types LENGTH > 3", "NOT dimension_types LENGTH 3", "dimension_types HAS ALL 0, 1",
    "elements_ratios HAS ONLY 1", "elements_ratios HAS ANY 0.5, 1", "elements HAS <= \"C\"",
    'elements HAS ONLY "Si"', 'elements HAS ONLY "C","H","N","O"', 'NOT elements HAS ONLY "C","H","O"',
    "info.dihedrals HAS ALL 185.28, 176.69", "info.dihedrals HAS ANY 185.28, 27.92, 209.44",
    "info.dihedrals HAS ONLY 185.28, 176.69, 27.92", "NOT info.dihedrals HAS ANY 185.28, 27.92",
    "info.dihedrals HAS < 10", "info.dihedrals LENGTH > 2", "info.dihedrals LENGTH < 3",
    "info.dihedrals IS KNOWN", "info.num_atoms HAS 64", "NOT info.num_atoms HAS 64",
    'info.config_type HAS "rmd17"', 'info.description CONTAINS "*"', 'info.description CONTAINS "?"',
    'info.description STARTS WITH "Si 2x2x2"', 'info.config_type ENDS WITH "Atom"',
    'NOT info.config_type ENDS WITH "Atom"', 'method.functional STARTS WITH "wB"', 'method.code < "P"',
    'method.basis >= "def"', "info.md17_index IS KNOWN AND NOT info.md17_index > 200000",
    "info.md17_index >= 26369.5", "info.md17_index != 26369", "info.num_atoms = TRUE",
    "has_forces = TRUE AND NOT has_virial = TRUE", "has_energy != FALSE", 'chemical_formula_reduced ENDS WITH "O"',
    'structure_hash < "8"', 'deposit_id > "dep-5"', "info.config_type.sub IS UNKNOWN", "info.missing IS KNOWN",
    'NOT (NOT (info.group = "Surface" OR energy > -100) AND NOT nsites < 5)', "",
    "info.dihedrals HAS < 1e400", "info.dihedrals HAS 1e400", "NOT info.dihedrals HAS ONLY 1e400",
    "elements_ratios HAS > -1e400", "info.md17_index < 1e400", "NOT info.md17_index = 1e400",
    # every HAS operator on every kind of list
    'elements HAS != "Si"', "elements_ratios HAS != 1", "dimension_types HAS != 1", "info.dihedrals HAS != 185.28",
    "NOT info.num_atoms HAS != 64", 'info.config_type HAS != "x"', "info.dihedrals HAS >= 209.44",
    "info.dihedrals HAS ANY 27.92, 1000", 'elements HAS >= "O"',
    # numbers beyond int64, DuckDB's HUGEINT and Python's int() limit; signed zeros
    f"nsites < 1{'0' * 40}", f"info.md17_index > -1{'0' * 5000}", f"energy_per_atom < 1{'0' * 400}",
    f"info.dihedrals LENGTH < 1{'0' * 40}", "nsites != 9223372036854775808", "energy = 0", "max_force >= -0",
    "info.md17_index != -0.0", "info.dihedrals HAS > -0.0",
    # the empty string as a bound
    'dataset < ""', 'dataset <= ""', 'NOT info.config_type > ""', 'chemical_formula_reduced <= ""',
]


@pytest.mark.parametrize("filter_, predicate", FILTERS)
def test_filter_table_same_answer(engines, filter_, predicate):
    duck, opensearch = engines
    want = duck.search(filter_, columns=KEY)
    got = opensearch.search(filter_, columns=KEY)
    assert keys(got) == keys(want)
    assert got.num_rows == want.num_rows
    assert opensearch.count(filter_) == duck.count(filter_) == want.num_rows


@pytest.mark.parametrize("filter_", EXTRA_FILTERS)
def test_more_filters_same_answer(engines, filter_):
    duck, opensearch = engines
    assert keys(opensearch.search(filter_, columns=KEY)) == keys(duck.search(filter_, columns=KEY))
    assert opensearch.count(filter_) == duck.count(filter_)


@pytest.mark.parametrize("op", filters.OPS)
@pytest.mark.parametrize("field, value", [("elements", '"Si"'), ("elements_ratios", "0.5"), ("dimension_types", "1"),
                                          ("info.x", "1"), ("info.x", '"a"'), ("info.x", "TRUE")])
def test_every_has_operator_compiles_for_both_engines(field, value, op):
    """No KeyError for HAS != and friends: what DuckDB runs, the DSL compiler compiles, and the other way round."""
    text = f"{field} HAS {op} {value}"
    if value == "TRUE" and op not in ("=", "!="):
        with pytest.raises(FilterError, match="booleans compare only with = and !="):
            filters.parse(text)
        return
    node = filters.parse(text)
    assert search.compile_query(node)["bool"]["filter"]
    assert where(node)[0]


def test_the_extra_filters_select_something(engines):
    """Most pick a proper subset, so the comparison tests something (the rest are deliberate edge cases)."""
    duck, _ = engines
    total = duck.count(None)
    proper = [f for f in EXTRA_FILTERS if 0 < duck.count(f) < total]
    assert len(proper) >= 0.5 * len(EXTRA_FILTERS)


@pytest.mark.parametrize("filter_, limit", [
    ('dataset = "rmd17-ethanol"', 7), ("nsites > 5", 600), (None, 3), ("nsites > 1000", 5), ("nsites > 1", 0)])
def test_same_rows_and_values(engines, filter_, limit):
    """Same rows in the same order with the same values, heavy columns included, with and without a limit."""
    duck, opensearch = engines
    columns = [*KEY_COLUMNS, "config_id", "energy", "forces", "positions", "info", "method", "elements"]
    for lim in (limit, None):
        want = duck.search(filter_, columns=columns, limit=lim)
        got = opensearch.search(filter_, columns=columns, limit=lim)
        assert got.equals(want)


def test_limit_pages_in_the_lakes_order(engines, monkeypatch):
    duck, opensearch = engines
    monkeypatch.setattr(search, "PAGE_SIZE", 100)  # several search_after pages
    want = duck.search("nsites > 5", columns=KEY_COLUMNS, limit=450)
    assert opensearch.search("nsites > 5", columns=KEY_COLUMNS, limit=450).equals(want)


def test_default_columns_and_errors(engines):
    duck, opensearch = engines
    assert opensearch.search("nsites = 9", limit=3).equals(duck.search("nsites = 9", limit=3))
    with pytest.raises(FilterError, match="unknown column"):
        opensearch.search("nsites = 9", columns=["nope"])
    with pytest.raises(FilterError, match="unknown field 'nsite'"):
        opensearch.count("nsite < 10")


def test_string_values_stay_literal(engines):
    """Wildcard characters, quotes and backslashes in user strings are data, never patterns."""
    _, opensearch = engines
    assert search.wildcard_escape(r"a*b?c\d") == r"a\*b\?c\\d"
    for f in ['dataset CONTAINS "*"', 'dataset ENDS WITH "?"', r'info.description CONTAINS "\\*"',
              'dataset STARTS WITH "*"', 'info.config_type = "\' OR 1=1 --"']:
        assert opensearch.count(f) == 0, f


# ---------------------------------------------------------------- aggregations


@pytest.mark.parametrize("filter_", [None, 'dataset = "3bpa"', "has_stress = TRUE", "nsites > 1000"])
@pytest.mark.parametrize("field", ["energy", "energy_per_atom", "max_force", "nsites", "info.md17_index"])
def test_stats_match_duckdb(engines, filter_, field):
    duck, opensearch = engines
    want, got = duck.stats(filter_, field), opensearch.stats(filter_, field)
    assert got["count"] == want["count"]
    assert got["min"] == want["min"] and got["max"] == want["max"]  # float64, exactly
    assert type(got["min"]) is type(want["min"])
    if want["count"]:
        assert math.isclose(got["mean"], want["mean"], rel_tol=1e-12, abs_tol=0)
    else:
        assert got["mean"] is want["mean"] is None


def test_stats_of_energies_are_exact(engines, samples_lake):
    _, opensearch = engines
    for field in ("energy", "energy_per_atom"):
        values = samples_lake.sql(f"SELECT {field} FROM configurations WHERE {field} IS NOT NULL").fetchnumpy()[field]
        s = opensearch.stats(None, field)
        assert (s["min"], s["max"], s["count"]) == (float(values.min()), float(values.max()), len(values))
        assert math.isclose(s["mean"], math.fsum(values) / len(values), rel_tol=1e-12)


def test_facets(engines, samples_lake):
    duck, opensearch = engines
    fields = ["dataset", "elements", "has_stress", "nelements", "info.config_type", "method.functional"]
    for f in (None, "nsites > 5", 'elements HAS "O"'):
        assert opensearch.facets(f, fields) == duck.facets(f, fields)
    got = opensearch.facets(None, ["dataset", "elements"])
    assert got["dataset"] == [("rmd17-ethanol", 2000), ("3bpa", 504), ("mlearn-si", 239)]
    rows = samples_lake.sql("SELECT elements FROM configurations").fetchall()
    per_element = Counter(e for (els,) in rows for e in els)
    assert dict(got["elements"]) == dict(per_element)
    assert [n for _, n in got["elements"]] == sorted(per_element.values(), reverse=True)
    assert opensearch.facets(None, ["elements"], size=2) == duck.facets(None, ["elements"], size=2)


def test_facet_and_stats_fields_are_checked(engines):
    _, opensearch = engines
    with pytest.raises(FilterError, match="stats"):
        opensearch.stats(None, "dataset")
    with pytest.raises(FilterError, match="facets"):
        opensearch.facets(None, ["energy"])
    with pytest.raises(FilterError):
        opensearch.facets(None, ["nsites IS KNOWN OR dataset"])


def test_engine_for(samples_lake, opensearch_url, monkeypatch):
    from mliplake.settings import Settings

    monkeypatch.delenv("MLIPLAKE_OPENSEARCH_URL", raising=False)
    assert isinstance(search.engine_for(samples_lake), search.DuckDBEngine)
    monkeypatch.setenv("MLIPLAKE_OPENSEARCH_URL", opensearch_url)  # read when settings are made
    lake = mliplake.Lake(samples_lake.url, settings=Settings())
    engine = search.engine_for(lake)
    assert isinstance(engine, search.OpenSearchEngine) and isinstance(engine, search.Engine)


# ---------------------------------------------------------------- the index: layout, rebuild, deletes, repair


def test_mapping_is_strict_and_holds_no_arrays(client, engines):
    _, opensearch = engines
    mapping = client.indices.get_mapping(index=opensearch.alias)
    props = next(iter(mapping.values()))["mappings"]
    assert props["dynamic"] == "strict"
    fields = props["properties"]
    assert not {"positions", "forces", "cell", "numbers", "stress", "arrays"} & set(fields)
    assert fields["energy"]["type"] == "double" and fields["nsites"]["type"] == "long"
    assert fields["elements"]["type"] == "keyword" and fields["has_stress"]["type"] == "boolean"
    assert fields["info"]["properties"]["num"]["properties"]["md17_index"]["type"] == "double"
    assert fields["info"]["properties"]["str"]["properties"]["config_type"]["type"] == "keyword"
    with pytest.raises(RequestError, match="strict"):
        client.index(index=opensearch.alias, id="x", body={"unexpected": 1})


def test_json_document_is_typed():
    doc = search.json_document('{"a": "x", "n": 3, "f": 2.5, "b": true, "z": null, "l": [1, "s", [2], true], '
                               '"o": {"p": 1, "q": {}}, "bad key": 1, "e": []}')
    assert doc["str"] == {"a": "x"} and doc["num"] == {"n": 3.0, "f": 2.5, "o/p": 1.0}
    assert doc["bool"] == {"b": True}
    assert doc["nums"] == {"l": [1.0]} and doc["strs"] == {"l": ["s"]} and doc["bools"] == {"l": [True]}
    assert doc["len"] == {"l": 4, "e": 0}
    assert set(doc["keys"]) == {"a", "n", "f", "b", "l", "o", "o/p", "o/q", "e"}
    assert set(doc["list_items"]) == {"l:number", "l:string", "l:bool", "l:other"}


def test_rebuild_swaps_the_alias_atomically(small_lake, client, alias):
    first = search.index_lake(small_lake, client, alias=alias)
    n = small_lake.count()
    seen = []

    def during(indexed: int) -> None:
        # readers keep the whole old index while the new one fills
        seen.append((indexed, sorted(client.indices.get_alias(name=alias)), client.count(index=alias)["count"]))

    second = search.index_lake(small_lake, client, alias=alias, chunk_size=300, on_progress=during)
    assert first.index == f"{alias}-v1" and second.index == f"{alias}-v2"
    assert [i for i, _, _ in seen] == [300, 600, n]
    assert all(names == [first.index] and count == n for _, names, count in seen)
    assert sorted(client.indices.get_alias(name=alias)) == [second.index]
    assert second.removed == [first.index] and not client.indices.exists(index=first.index)
    assert index_docs(client, alias) == lake_docs(small_lake)


def test_delete_deposit_then_reconcile(small_lake, client, alias):
    search.index_lake(small_lake, client, alias=alias)
    dep = small_lake.sql("SELECT DISTINCT deposit_id FROM configurations WHERE dataset = '3bpa'").fetchall()[0][0]
    lake = lake_docs(small_lake)
    of_dep = {k for k, fp in lake.items() if fp == search.fingerprint(dep)}
    assert len(of_dep) == 504
    assert search.delete_deposit(client, dep, alias=alias) == 504
    assert index_docs(client, alias).keys() == lake.keys() - of_dep
    assert search.delete_deposit(client, dep, alias=alias) == 0
    found = search.reconcile(small_lake, client, alias=alias)
    assert set(found.missing) == of_dep and not found.stale and not found.extra and not found.created
    assert index_docs(client, alias) == lake
    assert search.reconcile(small_lake, client, alias=alias).clean


def test_reconcile_repairs_missing_stale_and_extra(small_lake, client, alias):
    search.index_lake(small_lake, client, alias=alias)
    index = search.current_index(client, alias)
    lake = lake_docs(small_lake)
    ids = sorted(lake)
    gone, old = ids[:5], ids[100:103]
    for i in gone:
        client.delete(index=index, id=i)
    for i in old:
        client.update(index=index, id=i, body={"doc": {"fingerprint": "v0:dep-old"}})
    extra = "nowhere/" + "0" * 32
    client.index(index=index, id=extra, body={"config_id": "0" * 32, "dataset": "nowhere", "nsites": 1})
    client.indices.refresh(index=index)
    found = search.reconcile(small_lake, client, alias=alias)
    assert (found.missing, found.stale, found.extra) == (gone, old, [extra])
    assert found.checked == len(lake)
    assert index_docs(client, alias) == lake
    engine = search.OpenSearchEngine(small_lake, client, alias)
    assert engine.count("nsites >= 1") == len(lake)


def test_index_deposit_adds_one_deposit(small_lake, client, alias):
    dep = small_lake.sql("SELECT DISTINCT deposit_id FROM configurations WHERE dataset = 'mlearn-si'").fetchall()[0][0]
    with pytest.raises(search.SearchError, match="no index"):
        search.index_deposit(small_lake, client, dep, alias=alias)
    search.reconcile(small_lake, client, alias=alias)  # creates the index and alias
    assert search.delete_deposit(client, dep, alias=alias) == 239
    assert search.index_deposit(small_lake, client, dep, alias=alias) == 239
    assert index_docs(client, alias) == lake_docs(small_lake)


@pytest.mark.skipif(bool(os.environ.get("MLIPLAKE_TEST_OPENSEARCH_URL")),
                    reason="cannot stop an external OpenSearch")
def test_server_stopped_while_indexing(small_lake):
    """The server really goes away mid-rebuild: a clear error naming it; after a restart, reconcile repairs."""
    server = start_osmem()
    url = server.url
    port = int(url.rsplit(":", 1)[1])
    client = search.connect(url)
    stopped = []

    def stop_after_first_chunk(indexed: int) -> None:
        if not stopped:
            server.process.terminate()
            server.process.wait(10)
            stopped.append(indexed)

    try:
        with pytest.raises(search.SearchError) as err:
            search.index_lake(small_lake, client, alias="lake", chunk_size=200, on_progress=stop_after_first_chunk)
        assert stopped == [200]
        message = str(err.value)
        assert url in message and "unreachable" in message and "indexing" in message, message
        assert "urllib3" not in message and "object at 0x" not in message, message
        assert err.value.url == url and err.value.__cause__ is None

        server = start_osmem(port)  # same address, empty: the in-memory index is gone
        found = search.reconcile(small_lake, client, alias="lake")
        assert found.created and len(found.missing) == small_lake.count() and not found.extra
        assert index_docs(client, "lake") == lake_docs(small_lake)
        engine = search.OpenSearchEngine(small_lake, client, "lake")
        assert engine.count('dataset = "3bpa"') == 504
    finally:
        server.close()


class BusyProxy(BaseHTTPRequestHandler):
    """Forwards to the real server, but answers the first bulk request with 429 (too many requests)."""

    upstream = ""
    busy = 1
    seen: list[int] = []

    def do_any(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "_bulk" in self.path and BusyProxy.busy > 0:
            BusyProxy.busy -= 1
            return self.answer(429, b'{"error": {"type": "rejected_execution_exception", "reason": "busy"}, '
                                    b'"status": 429}')
        req = urllib.request.Request(self.upstream + self.path, data=body or None, method=self.command,
                                     headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                self.answer(resp.status, resp.read())
        except urllib.error.HTTPError as e:
            self.answer(e.code, e.read())

    def answer(self, status: int, payload: bytes) -> None:
        BusyProxy.seen.append(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_any

    def log_message(self, *args) -> None:
        pass


@pytest.mark.skipif(bool(os.environ.get("MLIPLAKE_TEST_OPENSEARCH_URL")),
                    reason="fault injection in front of the local osmem-server only")
def test_bulk_backs_off_on_429(small_lake, opensearch_url, client, alias):
    BusyProxy.upstream, BusyProxy.busy, BusyProxy.seen = opensearch_url, 1, []
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), BusyProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        via_proxy = search.connect(f"http://127.0.0.1:{proxy.server_address[1]}")
        report = search.index_lake(small_lake, via_proxy, alias=alias)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert 429 in BusyProxy.seen and BusyProxy.busy == 0
    assert report.indexed == small_lake.count()
    assert index_docs(client, alias) == lake_docs(small_lake)
