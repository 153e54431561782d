"""The OpenSearch side of the lake: index layout, indexing, reconciliation, the filter language
compiled to Query DSL, and one search interface over two engines (DuckDB and OpenSearch).

The lake stays the source of truth.  The index holds one document per configuration with the
searchable scalars only (never positions or forces) and answers *which* configurations match;
columns always come from the lake's Parquet, so both engines return the same rows and values.

Index layout: versioned indices behind an alias (``mliplake-configurations`` ->
``mliplake-configurations-v<n>``).  A rebuild fills a new index and swaps the alias in one
``update_aliases`` request, so readers see the old index or the new one, never a half-built one.

Filter semantics: the same three-valued logic as DuckDB (docs/query.md).  Every node compiles to
a pair of queries, *true* and *false*; a frame that matches neither is unknown.  ``NOT`` swaps
the pair, ``AND`` is (all true, any false), ``OR`` is (any true, all false), and a leaf's false
query is "has a value of the right type, and the comparison does not hold".  The final query is
the true one.

User keys (``info.<key>``, ``method.<key>``) are indexed by JSON type into separate sub-objects
(``info.str``, ``info.num``, ``info.bool``; list items in ``info.strs``/``nums``/``bools``, list
lengths in ``info.len``), mapped by dynamic templates.  Neither ``flattened`` (Elasticsearch
only) nor OpenSearch's ``flat_object`` would do: both index every value as a string, which loses
numeric ranges and the type strictness of the filter language (``info.md17_index = "26369"``
must not match the integer).  Splitting by type also means the first document never fixes a
key's type for the rest (a plain dynamic object would coerce, or reject, later values of another
type).  The mapping grows with the number of distinct (key, type) pairs, not with documents.
"""
from __future__ import annotations

import json
import math
import operator
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa

from mliplake import filters
from mliplake.filters import (
    FIELDS,
    KEY,
    And,
    Compare,
    Everything,
    Field,
    FilterError,
    Fuzzy,
    Has,
    Known,
    Length,
    Node,
    Not,
    Or,
)
from mliplake.filters.sql import Compiler, where
from mliplake.settings import Settings, get_settings

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from mliplake.lake import Lake

Query = dict[str, Any]

DEFAULT_ALIAS = "mliplake-configurations"
DOC_VERSION = 1  # bump when the document layout changes: reconcile then re-indexes every document
CHUNK_SIZE = 500
PAGE_SIZE = 5000  # ids per search page (below OpenSearch's default max_result_window of 10,000)
FIELDS_LIMIT = 5000  # index.mapping.total_fields.limit: room for many distinct user keys
IGNORE_ABOVE = 8191  # longer user strings are known but not comparable (Lucene's term limit is 32 KB)
SEP = "/"  # joins the parts of a nested user key; never inside a key (see filters.KEY), so no clashes
INT64 = (-(1 << 63), (1 << 63) - 1)


# ---------------------------------------------------------------- connection and errors


class SearchError(RuntimeError):
    """OpenSearch could not be reached, or refused a request; the message names the server."""

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url


def connect(url: str | None = None, timeout: float = 30.0) -> OpenSearch:
    """A client for ``url`` (default ``$MLIPLAKE_OPENSEARCH_URL``)."""
    from opensearchpy import OpenSearch

    url = url or get_settings().opensearch_url.get_secret_value()
    if not url:
        raise SearchError("no OpenSearch URL: pass one or set MLIPLAKE_OPENSEARCH_URL")
    return OpenSearch(hosts=[url], timeout=timeout, max_retries=2, retry_on_timeout=True)


def server_url(client: OpenSearch) -> str:
    """The URL of the client's (first) server, for messages."""
    try:
        return str(client.transport.connection_pool.connections[0].host)
    except (AttributeError, IndexError):  # pragma: no cover - every opensearch-py version has a pool
        hosts = getattr(client.transport, "hosts", None) or [{}]
        h = hosts[0]
        return f"{h.get('scheme', 'http')}://{h.get('host', '?')}:{h.get('port', '?')}"


def _reason(e: Exception) -> str:
    """A short reason for a transport error, without urllib3's object reprs."""
    from opensearchpy.exceptions import ConnectionTimeout

    if isinstance(e, ConnectionTimeout):
        return "timed out"
    text = str(getattr(e, "info", "") or e)
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return m.group(1).strip().lower() if m else type(getattr(e, "info", e)).__name__


def _http_reason(e: Any) -> str:
    info = e.info if isinstance(e.info, dict) else {}
    err = info.get("error", e.error)
    if isinstance(err, dict):
        cause = (err.get("root_cause") or [err])[0]
        return f"{cause.get('type', '')}: {cause.get('reason', '')}".strip(": ")
    return str(err)


@contextmanager
def talking_to(client: OpenSearch, doing: str) -> Iterator[None]:
    """Turn the client's exceptions into a :class:`SearchError` that names the server and the task."""
    from opensearchpy.exceptions import ConnectionError as Unreachable
    from opensearchpy.exceptions import TransportError
    from opensearchpy.helpers import BulkIndexError

    url = server_url(client)
    try:
        yield
    except Unreachable as e:  # also ConnectionTimeout
        raise SearchError(f"OpenSearch at {url} is unreachable ({_reason(e)}) while {doing}", url) from None
    except BulkIndexError as e:
        first = e.errors[0] if e.errors else {}
        raise SearchError(f"OpenSearch at {url} rejected {len(e.errors)} document(s) while {doing}: {first}",
                          url) from None
    except TransportError as e:
        raise SearchError(f"OpenSearch at {url} answered {e.status_code} ({_http_reason(e)}) while {doing}",
                          url) from None


# ---------------------------------------------------------------- index layout


def index_name(lake: Lake | None = None) -> str:
    """The alias readers use; ``$MLIPLAKE_OPENSEARCH_INDEX`` lets several lakes share a cluster."""
    return Settings().opensearch_index  # read at each call: several lakes may share one process


def versioned(alias: str, n: int) -> str:
    return f"{alias}-v{n}"


def _versions(client: OpenSearch, alias: str) -> dict[str, int]:
    """Every ``<alias>-v<n>`` index (current, old, or left over by a failed rebuild) -> n."""
    pattern = re.compile(re.escape(alias) + r"-v(\d+)")
    names = client.indices.get(index=f"{alias}-v*", allow_no_indices=True)
    return {name: int(m.group(1)) for name in names if (m := pattern.fullmatch(name))}


def current_index(client: OpenSearch, alias: str) -> str | None:
    """The index the alias points to, or None when there is no alias yet."""
    if not client.indices.exists_alias(name=alias):
        return None
    names = sorted(client.indices.get_alias(name=alias))
    if len(names) != 1:
        raise SearchError(f"alias {alias} points to {len(names)} indices ({', '.join(names)}); rebuild it",
                          server_url(client))
    return names[0]


_KIND_TYPE = {"string": "keyword", "integer": "long", "number": "double", "bool": "boolean",
              "elements": "keyword", "list_number": "double"}

#: typed sub-objects of a JSON column: slot -> mapping of its fields
_SLOTS: dict[str, dict[str, Any]] = {
    "str": {"type": "keyword", "ignore_above": IGNORE_ABOVE},
    "num": {"type": "double"},
    "bool": {"type": "boolean"},
    "strs": {"type": "keyword", "ignore_above": IGNORE_ABOVE},  # items of lists, by type
    "nums": {"type": "double"},
    "bools": {"type": "boolean"},
    "len": {"type": "long"},  # list lengths: LENGTH without scripts (doc values would dedupe items)
}
_SCALAR_SLOT = {"string": "str", "number": "num", "bool": "bool"}
_LIST_SLOT = {"string": "strs", "number": "nums", "bool": "bools"}
JSON_ROOTS = tuple(filters.JSON_ROOTS.values())


def mappings() -> dict[str, Any]:
    """Explicit, strict mappings: registry fields by kind, user keys through typed dynamic templates."""
    props: dict[str, Any] = {spec.column: {"type": _KIND_TYPE[spec.kind]} for spec in FIELDS.values()}
    props["fingerprint"] = {"type": "keyword"}
    for root in JSON_ROOTS:
        props[root] = {"type": "object", "properties": {
            "keys": {"type": "keyword"},  # paths with a non-null value: IS KNOWN
            "list_items": {"type": "keyword"},  # "<path>:<kind>" for the kinds of a list's items: HAS ONLY
            **{slot: {"type": "object", "dynamic": True} for slot in _SLOTS},
        }}
    templates = [{f"{root}_{slot}": {"path_match": f"{root}.{slot}.*", "mapping": mapping}}
                 for root in JSON_ROOTS for slot, mapping in _SLOTS.items()]
    return {"dynamic": "strict", "properties": props, "dynamic_templates": templates}


def index_settings(shards: int = 1, replicas: int | None = None) -> dict[str, Any]:
    index: dict[str, Any] = {"number_of_shards": shards, "mapping.total_fields.limit": FIELDS_LIMIT,
                             "refresh_interval": "-1"}  # off while loading; restored before the swap
    if replicas is not None:
        index["number_of_replicas"] = replicas
    return {"index": index}


def _create_index(client: OpenSearch, alias: str, shards: int, replicas: int | None) -> str:
    n = max(_versions(client, alias).values(), default=0) + 1
    name = versioned(alias, n)
    client.indices.create(index=name, body={"settings": index_settings(shards, replicas), "mappings": mappings()})
    return name


def _open_for_search(client: OpenSearch, index: str) -> None:
    client.indices.put_settings(index=index, body={"index": {"refresh_interval": None}})
    client.indices.refresh(index=index)


# ---------------------------------------------------------------- documents

#: the columns a document is built from (no positions, forces or other per-atom arrays)
DOC_COLUMNS = sorted({spec.column for spec in FIELDS.values()}) + list(JSON_ROOTS)


def doc_id(dataset: str, config_id: str) -> str:
    """``<dataset>/<config_id>``: config_id alone is unique only within a dataset (the same
    configuration deposited into two datasets keeps its id in both)."""
    return f"{dataset}/{config_id}"


def fingerprint(deposit_id: str) -> str:
    """What makes an indexed document current: the deposit that holds it and the document layout."""
    return f"v{DOC_VERSION}:{deposit_id}"


def _rows(lake: Lake, node: Node | None = None, ids: list[str] | None = None,
          batch_rows: int = CHUNK_SIZE) -> Iterator[pa.Table]:
    """The lake's rows for documents, batch by batch, matching a filter tree and (if given) ids."""
    clause, params = where(node or Everything())
    if ids is not None:
        clause += " AND dataset || '/' || config_id IN (SELECT unnest(?::VARCHAR[]))"
        params.append(ids)
    cols = ", ".join(f'"{c}"' for c in DOC_COLUMNS)
    # a cursor of its own, so other queries on the lake's connection cannot cut the stream short
    con = lake.connection()
    try:
        reader = con.sql(f"SELECT {cols} FROM configurations WHERE {clause}", params=params).to_arrow_reader(
            batch_rows)
        for batch in reader:
            yield pa.Table.from_batches([batch])
    finally:
        con.close()


def documents(table: pa.Table) -> Iterator[dict[str, Any]]:
    """Bulk ``index`` actions for rows of :data:`DOC_COLUMNS`."""
    for row in table.to_pylist():
        doc: dict[str, Any] = {c: v for c, v in row.items() if v is not None and c not in JSON_ROOTS}
        for root, part in (("info", json_document(row["info"])), ("method", _method_document(row["method"]))):
            if part:
                doc[root] = part
        doc["fingerprint"] = fingerprint(row["deposit_id"])
        yield {"_op_type": "index", "_id": doc_id(row["dataset"], row["config_id"]), "_source": doc}


def _kind(v: Any) -> str | None:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (int, float)) and math.isfinite(_as_float(v)):
        return "number"
    return None  # null, objects, lists, non-finite numbers: no value a comparison can use


def _as_float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:  # an integer beyond double range: as DuckDB reads it, infinite
        return math.inf if v > 0 else -math.inf


def _scalar(kind: str, v: Any) -> Any:
    return _as_float(v) if kind == "number" else v  # DuckDB compares every JSON number as DOUBLE


def json_document(text: str | None) -> dict[str, Any]:
    """A JSON column (info, method) as typed sub-objects; keys the filter grammar cannot name are left out."""
    out: dict[str, Any] = {"keys": [], "list_items": [], **{slot: {} for slot in _SLOTS}}
    value = json.loads(text) if text else None
    if isinstance(value, dict):
        _walk(value, (), out)
    return {k: v for k, v in out.items() if v}


_method_document = lru_cache(maxsize=1024)(json_document)  # one method per deposit: parse each once


def _walk(obj: dict[str, Any], prefix: tuple[str, ...], out: dict[str, Any]) -> None:
    for key, value in obj.items():
        if value is None or not KEY.match(key):
            continue  # JSON null is unknown; other keys cannot be written in a filter
        path = (*prefix, key)
        name = SEP.join(path)
        out["keys"].append(name)
        if isinstance(value, dict):
            _walk(value, path, out)
        elif isinstance(value, list):
            _list(name, value, out)
        elif (kind := _kind(value)) is not None:
            out[_SCALAR_SLOT[kind]][name] = _scalar(kind, value)


def _list(name: str, items: list[Any], out: dict[str, Any]) -> None:
    out["len"][name] = len(items)
    kinds = set()
    for item in items:
        kind = _kind(item)
        kinds.add(kind or "other")
        if kind is not None:
            out[_LIST_SLOT[kind]].setdefault(name, []).append(_scalar(kind, item))
    out["list_items"] += [f"{name}:{k}" for k in sorted(kinds)]


# ---------------------------------------------------------------- indexing


@dataclass
class IndexReport:
    index: str
    alias: str
    indexed: int
    seconds: float
    removed: list[str] = field(default_factory=list)  # indices dropped after the swap


def _bulk(client: OpenSearch, index: str, actions: Iterable[dict[str, Any]], chunk_size: int, max_retries: int,
          on_progress: Callable[[int], None] | None = None) -> int:
    """Stream actions in chunks; 429s are retried with exponential back-off; returns how many succeeded."""
    from opensearchpy.helpers import BulkIndexError, streaming_bulk

    done, errors = 0, []
    targeted = ({**a, "_index": index} for a in actions)
    for ok, item in streaming_bulk(client, targeted, chunk_size=chunk_size, max_retries=max_retries,
                                   initial_backoff=1, max_backoff=30, raise_on_error=False, request_timeout=120):
        if ok:
            done += 1
        else:
            errors.append(item)
        if on_progress is not None and (done + len(errors)) % chunk_size == 0:
            on_progress(done)  # streaming_bulk answers a chunk at a time: this is after each one
    if on_progress is not None and (done + len(errors)) % chunk_size:
        on_progress(done)  # the last, shorter chunk
    if errors:
        raise BulkIndexError(f"{len(errors)} document(s) failed", errors)
    return done


def _actions(lake: Lake, node: Node | None = None, ids: list[str] | None = None) -> Iterator[dict[str, Any]]:
    for table in _rows(lake, node, ids):
        yield from documents(table)


def index_lake(lake: Lake, client: OpenSearch, alias: str | None = None, chunk_size: int = CHUNK_SIZE,
               max_retries: int = 5, shards: int = 1, replicas: int | None = None,
               on_progress: Callable[[int], None] | None = None) -> IndexReport:
    """Rebuild: every configuration into a new versioned index, then swap the alias atomically.

    On failure the alias is untouched (readers keep the previous index), the partial index is
    dropped where the server still answers, and a :class:`SearchError` names the server.
    ``on_progress(n)`` is called after each chunk with the number indexed so far.
    """
    alias = alias or index_name(lake)
    start = time.monotonic()
    with talking_to(client, f"creating a new index for {alias}"):
        new = _create_index(client, alias, shards, replicas)
    try:
        with talking_to(client, f"indexing {lake.url} into {new}"):
            n = _bulk(client, new, _actions(lake), chunk_size, max_retries, on_progress)
            _open_for_search(client, new)
    except BaseException:
        _drop_quietly(client, new)
        raise
    with talking_to(client, f"switching {alias} to {new}"):
        removed = _swap_alias(client, alias, new)
    return IndexReport(new, alias, n, time.monotonic() - start, removed)


def _swap_alias(client: OpenSearch, alias: str, new: str) -> list[str]:
    """Point the alias at ``new`` in one request (remove + add: no moment without an index),
    then drop every other version, including leftovers of failed rebuilds."""
    current = sorted(client.indices.get_alias(name=alias)) if client.indices.exists_alias(name=alias) else []
    actions = [{"remove": {"index": name, "alias": alias}} for name in current]
    client.indices.update_aliases(body={"actions": [*actions, {"add": {"index": new, "alias": alias}}]})
    removed = sorted(name for name in _versions(client, alias) if name != new)
    for name in removed:
        client.indices.delete(index=name, ignore_unavailable=True)
    return removed


def _drop_quietly(client: OpenSearch, index: str) -> None:
    from opensearchpy.exceptions import OpenSearchException

    with suppress(OpenSearchException):  # the server is gone: the next rebuild removes the leftover
        client.indices.delete(index=index, ignore_unavailable=True)


def index_deposit(lake: Lake, client: OpenSearch, deposit_id: str, alias: str | None = None,
                  chunk_size: int = CHUNK_SIZE, max_retries: int = 5,
                  on_progress: Callable[[int], None] | None = None) -> int:
    """Add (or refresh) one deposit's documents in the current index; returns how many."""
    alias = alias or index_name(lake)
    node = Compare(Field(FIELDS["deposit_id"]), "=", deposit_id)
    with talking_to(client, f"indexing deposit {deposit_id} into {alias}"):
        index = current_index(client, alias)
        if index is None:
            raise SearchError(f"no index {alias} yet: build one with index_lake", server_url(client))
        n = _bulk(client, index, _actions(lake, node), chunk_size, max_retries, on_progress)
        client.indices.refresh(index=index)
    return n


def delete_deposit(client: OpenSearch, deposit_id: str, alias: str | None = None) -> int:
    """Remove every document of a deposit; returns how many were deleted (0 without an index)."""
    alias = alias or index_name()
    with talking_to(client, f"deleting deposit {deposit_id} from {alias}"):
        if not client.indices.exists_alias(name=alias):
            return 0
        res = client.delete_by_query(index=alias, body={"query": {"term": {"deposit_id": deposit_id}}},
                                     refresh=True, conflicts="proceed")
    if res.get("failures"):
        raise SearchError(f"deleting deposit {deposit_id} from {alias}: {res['failures'][0]}", server_url(client))
    return int(res.get("deleted", 0))


@dataclass
class Reconciliation:
    """What reconcile found (document ids, ``<dataset>/<config_id>``) and repaired."""

    index: str
    checked: int  # configurations in the lake
    missing: list[str]  # in the lake, not in the index: indexed
    stale: list[str]  # fingerprint differs: re-indexed
    extra: list[str]  # in the index, not in the lake: deleted
    created: bool = False  # there was no index: a new one was made

    @property
    def clean(self) -> bool:
        return not (self.missing or self.stale or self.extra)


def lake_fingerprints(lake: Lake) -> dict[str, str]:
    rows = lake.connection().sql("SELECT dataset, config_id, deposit_id FROM configurations").fetchall()
    return {doc_id(d, c): fingerprint(dep) for d, c, dep in rows}


def index_fingerprints(client: OpenSearch, index: str) -> dict[str, str]:
    from opensearchpy.helpers import scan

    hits = scan(client, index=index, query={"query": {"match_all": {}}}, _source=["fingerprint"], size=PAGE_SIZE)
    return {h["_id"]: (h.get("_source") or {}).get("fingerprint", "") for h in hits}


def reconcile(lake: Lake, client: OpenSearch, alias: str | None = None, chunk_size: int = CHUNK_SIZE,
              max_retries: int = 5, shards: int = 1, replicas: int | None = None) -> Reconciliation:
    """Compare ids and fingerprints of lake and index, then index what is missing or stale and
    delete what the lake no longer has.  Makes the index (and alias) when there is none."""
    alias = alias or index_name(lake)
    with talking_to(client, f"reconciling {alias} with {lake.url}"):
        index = current_index(client, alias)
        created = index is None
        if index is None:
            index = _create_index(client, alias, shards, replicas)
            _open_for_search(client, index)
            client.indices.update_aliases(body={"actions": [{"add": {"index": index, "alias": alias}}]})
        want = lake_fingerprints(lake)
        have = index_fingerprints(client, index)
        missing = sorted(want.keys() - have.keys())
        extra = sorted(have.keys() - want.keys())
        stale = sorted(k for k in want.keys() & have.keys() if want[k] != have[k])
        if missing or stale:
            _bulk(client, index, _actions(lake, ids=missing + stale), chunk_size, max_retries)
        if extra:
            _bulk(client, index, ({"_op_type": "delete", "_id": k} for k in extra), chunk_size, max_retries)
        client.indices.refresh(index=index)
    return Reconciliation(index, len(want), missing, stale, extra, created)


# ---------------------------------------------------------------- the filter tree as Query DSL

ALL: Query = {"match_all": {}}
NONE: Query = {"match_none": {}}
_RANGE = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
_OPPOSITE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}
_OPERATOR = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
             ">=": operator.ge}


@dataclass(frozen=True)
class Pair:
    """Queries for the frames where a node is definitely true and definitely false."""

    true: Query
    false: Query

    def swap(self) -> Pair:
        return Pair(self.false, self.true)


def _bool_only(q: Query, clause: str) -> list[Query] | None:
    """The clauses of a bool query that has nothing but ``clause`` (to flatten nested ANDs/ORs)."""
    b = q.get("bool")
    if not b or set(b) - {clause, "minimum_should_match"}:
        return None
    return list(b[clause])


def q_and(items: Iterable[Query]) -> Query:
    out: list[Query] = []
    for q in items:
        if q == NONE:
            return NONE
        if q != ALL:
            out += _bool_only(q, "filter") or [q]
    return ALL if not out else out[0] if len(out) == 1 else {"bool": {"filter": out}}


def q_or(items: Iterable[Query]) -> Query:
    out: list[Query] = []
    for q in items:
        if q == ALL:
            return ALL
        if q != NONE:
            out += _bool_only(q, "should") or [q]
    return NONE if not out else out[0] if len(out) == 1 else {"bool": {"should": out, "minimum_should_match": 1}}


def q_not(q: Query) -> Query:
    if q == ALL:
        return NONE
    if q == NONE:
        return ALL
    inner = _bool_only(q, "must_not")
    if inner is not None and len(inner) == 1:
        return inner[0]
    return {"bool": {"must_not": [q]}}


def _exists(name: str) -> Query:
    return {"exists": {"field": name}}


def _term(name: str, value: Any) -> Query:
    return {"term": {name: value}}


def _within(domain: Query, true: Query) -> Pair:
    """A leaf: false where the value is there (and of the right type) but the test fails."""
    return Pair(true, q_and([domain, q_not(true)]))


def _json_field(f: Field, slot: str) -> str:
    return f"{f.root}.{slot}.{SEP.join(f.path)}"


def _key_path(f: Field) -> str:
    return SEP.join(f.path)


def _value_kind(v: Any) -> str:
    return "bool" if isinstance(v, bool) else "string" if isinstance(v, str) else "number"


class DSLCompiler:
    """Filter tree -> :class:`Pair` of Query DSL dicts."""

    def compile(self, node: Node) -> Pair:
        match node:
            case Everything():
                return Pair(ALL, NONE)
            case And(items):
                pairs = [self.compile(i) for i in items]
                return Pair(q_and(p.true for p in pairs), q_or(p.false for p in pairs))
            case Or(items):
                pairs = [self.compile(i) for i in items]
                return Pair(q_or(p.true for p in pairs), q_and(p.false for p in pairs))
            case Not(item):
                return self.compile(item).swap()
            case Compare():
                return self.compare(node)
            case Known(f, known):
                pair = self.known(f)
                return pair if known else pair.swap()
            case Fuzzy():
                return self.fuzzy(node)
            case Has():
                return self.has(node)
            case Length(f, op, n):
                return self.length(f, op, n)
        raise TypeError(f"cannot compile {node!r}")  # pragma: no cover

    # ---- scalars

    @staticmethod
    def scalar_field(f: Field, value: Any) -> tuple[str, bool]:
        """(field name, integer-typed?) where the frame keeps a value of ``value``'s type."""
        if f.spec:
            return f.spec.column, f.kind == "integer"
        return _json_field(f, _SCALAR_SLOT[_value_kind(value)]), False

    def compare(self, node: Compare) -> Pair:
        name, integer = self.scalar_field(node.field, node.value)
        value = node.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _compare_number(name, node.op, value, integer)
        domain = _exists(name)
        if node.op in ("=", "!="):
            pair = _within(domain, _term(name, value))
            return pair if node.op == "=" else pair.swap()
        # strings: the opposite range is the exact complement (one value per frame)
        return Pair(_range(name, **{_RANGE[node.op]: value}), _range(name, **{_RANGE[_OPPOSITE[node.op]]: value}))

    @staticmethod
    def known(f: Field) -> Pair:
        if f.kind in ("elements", "list_number"):
            return Pair(ALL, NONE)  # every frame has these lists (as in DuckDB)
        q = _exists(f.spec.column) if f.spec else _term(f"{f.root}.keys", _key_path(f))
        return Pair(q, q_not(q))

    @staticmethod
    def fuzzy(node: Fuzzy) -> Pair:
        name = node.field.spec.column if node.field.spec else _json_field(node.field, "str")
        if node.kind == "starts":
            true: Query = {"prefix": {name: {"value": node.value}}}  # prefix values are literal
        else:
            pattern = wildcard_escape(node.value)
            pattern = f"*{pattern}*" if node.kind == "contains" else f"*{pattern}"
            true = {"wildcard": {name: {"value": pattern}}}
        return _within(_exists(name), true)

    # ---- lists

    def has(self, node: Has) -> Pair:
        f = node.field
        kind = _value_kind(node.values[0])
        values = [_scalar(kind, v) for v in node.values]
        if f.spec:
            name, domain = f.spec.column, ALL  # elements and the number lists are never missing
            other: Query = NONE
        else:
            name = _json_field(f, _LIST_SLOT[kind])
            domain = _exists(_json_field(f, "len"))  # the key holds a list
            others = [f"{_key_path(f)}:{k}" for k in ("string", "number", "bool", "other") if k != kind]
            other = {"terms": {f"{f.root}.list_items": others}}  # items of another type
        if node.mode == "one" and node.op != "=":
            true = _item_compares(name, node.op, values[0])
        elif node.mode in ("one", "all"):
            true = q_and(_item_equals(name, v) for v in values)
        elif node.mode == "any":
            true = q_or(_item_equals(name, v) for v in values)
        else:  # only: a list, with no item outside the values
            true = q_and([domain, q_not(q_or([other, _outside(name, values)]))])
        return _within(domain, true)

    def length(self, f: Field, op: str, n: int) -> Pair:
        if f.kind == "elements" or f.spec and f.spec.name == "elements_ratios":
            return _compare_number("nelements", op, n, integer=True)  # one ratio per element
        if f.spec:  # dimension_types: always three entries, one per axis
            return Pair(ALL, NONE) if _OPERATOR[op](3, n) else Pair(NONE, ALL)
        return _compare_number(_json_field(f, "len"), op, n, integer=True)


def wildcard_escape(s: str) -> str:
    """A user string as a literal inside a Lucene wildcard pattern."""
    return re.sub(r"([\\*?])", r"\\\1", s)


def _item_equals(name: str, v: Any) -> Query:
    return _equal_number(name, v, integer=False) if _value_kind(v) == "number" else _term(name, v)


def _item_compares(name: str, op: str, v: Any) -> Query:
    """Some item of a multi-valued field compares with ``v`` (any operator, as in DuckDB's list_filter)."""
    if op == "=":
        return _item_equals(name, v)
    if op == "!=":
        return _outside(name, [v])  # some item other than v
    if _value_kind(v) == "number":
        return _bound(name, op, v, integer=False, domain=_exists(name))  # copes with infinities
    return _range(name, **{_RANGE[op]: v})


def _outside(name: str, values: list[Any]) -> Query:
    """Some item of the multi-valued field lies outside ``values``: the gaps between them as ranges."""
    vs = sorted({v for v in values if _value_kind(v) != "number" or math.isfinite(v)})
    if not vs:  # only infinities, which no stored item equals: any item is outside
        return _exists(name)
    if isinstance(vs[0], bool):  # two values only: the other one
        return {"terms": {name: [b for b in (False, True) if b not in vs]}} if len(vs) == 1 else NONE
    gaps = [_range(name, lt=vs[0])]
    gaps += [_range(name, gt=a, lt=b) for a, b in zip(vs, vs[1:], strict=False)]
    gaps.append(_range(name, gt=vs[-1]))
    return q_or(gaps)


def _range(name: str, **bounds: Any) -> Query:
    """A range query whose bounds at zero hold both zeros: Lucene sorts -0.0 below 0.0 (a stored
    -0.0 would be < 0 and != 0), where DuckDB and the filter language have a single zero.  An upper
    bound of "" becomes what it means (nothing below it, only "" up to it): osmem-server reads an
    empty upper bound as none at all."""
    bounds = {k: _zero_bound(k, v) for k, v in bounds.items()}
    if bounds.get("lt") == "":
        return NONE
    if bounds.get("lte") == "":
        del bounds["lte"]
        return q_and([_term(name, ""), _range(name, **bounds) if bounds else ALL])
    return {"range": {name: bounds}}


def _zero_bound(bound: str, v: Any) -> Any:
    if not isinstance(v, float) or v != 0:
        return v
    return 0.0 if bound in ("gt", "lte") else -0.0  # gt/lte: above/up to both zeros; lt/gte: below/from both


def _compare_number(name: str, op: str, value: int | float, integer: bool) -> Pair:
    """``name op value`` for a number field; exact for integer fields whatever the value (fractions,
    values beyond int64), so the server never has to round or reject a bound."""
    domain = _exists(name)
    if op in ("=", "!="):
        eq = _equal_number(name, value, integer)
        pair = _within(domain, eq)
        return pair if op == "=" else pair.swap()
    return Pair(_bound(name, op, value, integer, domain), _bound(name, _OPPOSITE[op], value, integer, domain))


def _equal_number(name: str, value: int | float, integer: bool) -> Query:
    if integer:
        if isinstance(value, float) and not value.is_integer():
            return NONE  # no integer equals 2.5 (nor an infinity)
        v = int(value)
        return _term(name, v) if INT64[0] <= v <= INT64[1] else NONE
    f = _as_float(value)
    if f == 0:  # both zeros (see _range); two terms, as osmem-server never answers a -0.0..0.0 range
        return q_or([_term(name, 0.0), _term(name, -0.0)])
    return _term(name, f) if math.isfinite(f) else NONE


def _bound(name: str, op: str, value: int | float, integer: bool, domain: Query) -> Query:
    """``name op value`` with op one of < <= > >=, as a range, all values (domain) or none."""
    upper = op in ("<", "<=")
    if isinstance(value, float) or not integer:
        f = _as_float(value)
        if math.isinf(f):
            return domain if (f > 0) == upper else NONE  # stored numbers are finite
        if not integer:
            return _range(name, **{_RANGE[op]: f})
    # integer fields: the same set of integers with an inclusive integer bound, clamped to int64
    if upper:
        n = math.ceil(value) - 1 if op == "<" else math.floor(value)
        return domain if n >= INT64[1] else NONE if n < INT64[0] else {"range": {name: {"lte": n}}}
    n = math.floor(value) + 1 if op == ">" else math.ceil(value)
    return domain if n <= INT64[0] else NONE if n > INT64[1] else {"range": {name: {"gte": n}}}


def compile_query(filter: str | Node | None) -> Query:
    """The Query DSL for a filter: the frames where it is true, in filter context (no scoring)."""
    node = filter if filter is not None and not isinstance(filter, str) else filters.parse(filter)
    try:
        true = DSLCompiler().compile(node).true
    except RecursionError:
        raise FilterError("filter: nested too deeply") from None
    return {"bool": {"filter": [true]}}


# ---------------------------------------------------------------- one interface, two engines


@runtime_checkable
class Engine(Protocol):
    """What callers search through; DuckDB and OpenSearch answer with the same content."""

    def search(self, filter: str | None, columns: list[str] | None = None,
               limit: int | None = None) -> pa.Table: ...

    def count(self, filter: str | None) -> int: ...

    def facets(self, filter: str | None, fields: list[str], size: int = 1000) -> dict[str, list[tuple[Any, int]]]: ...

    def stats(self, filter: str | None, field: str) -> dict[str, Any]: ...


FACET_KINDS = ("string", "integer", "bool", "elements", "json")
FACETS_NEED = "a field with discrete values (a string, integer or boolean field, elements, or a user key)"
STATS_KINDS = ("number", "integer", "json")
STATS_NEED = "a number field or a user key holding numbers"


def parse_field(name: str, kinds: tuple[str, ...], use: str, need: str) -> Field:
    """A field name of the filter language (``nsites``, ``info.config_type``), checked for a use."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_+.]*", name):
        raise FilterError(f"{use}: {name!r} is not a field name")
    node = filters.parse(f"{name} IS KNOWN")  # unknown fields get the parser's message and suggestion
    assert isinstance(node, Known)
    if node.field.kind not in kinds:
        raise FilterError(f"{use}: {node.field.name} is {node.field.kind}; {use} need {need}")
    return node.field


def _order_facet(rows: Iterable[tuple[Any, int]], size: int) -> list[tuple[Any, int]]:
    # most frequent first, ties by value: the same order from both engines
    return sorted(((v, int(n)) for v, n in rows), key=lambda r: (-r[1], r[0]))[:size]


def _stats_result(f: Field, lo: Any, hi: Any, mean: Any, n: int) -> dict[str, Any]:
    if not n:
        return {"min": None, "max": None, "mean": None, "count": 0}
    cast = int if f.kind == "integer" else float
    return {"min": cast(lo), "max": cast(hi), "mean": float(mean), "count": int(n)}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBEngine:
    """The lake's own DuckDB views."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def search(self, filter: str | None, columns: list[str] | None = None, limit: int | None = None) -> pa.Table:
        return self.lake.search(filter, columns=columns, limit=limit)

    def count(self, filter: str | None) -> int:
        return self.lake.count(filter)

    def facets(self, filter: str | None, fields: list[str], size: int = 1000) -> dict[str, list[tuple[Any, int]]]:
        clause, params = where(filters.parse(filter))
        out = {}
        for name in fields:
            f = parse_field(name, FACET_KINDS, "facets", FACETS_NEED)
            if f.kind == "elements":
                sql = (f"SELECT e, count(*) FROM (SELECT unnest(elements) AS e FROM configurations WHERE {clause}) "
                       "GROUP BY 1")
            else:
                expr = f.spec.column if f.spec else Compiler().string_expr(f)
                sql = f"SELECT {expr}, count(*) FROM configurations WHERE ({clause}) AND {expr} IS NOT NULL GROUP BY 1"
            out[name] = _order_facet(self.lake.connection().sql(sql, params=params).fetchall(), size)
        return out

    def stats(self, filter: str | None, field: str) -> dict[str, Any]:
        f = parse_field(field, STATS_KINDS, "stats", STATS_NEED)
        clause, params = where(filters.parse(filter))
        expr = f.spec.column if f.spec else Compiler().value_expr(f, 0.0)
        lo, hi, mean, n = self.lake.connection().sql(
            f"SELECT min({expr}), max({expr}), avg({expr}), count({expr}) FROM configurations WHERE {clause}",
            params=params).fetchall()[0]
        return _stats_result(f, lo, hi, mean, n)


class OpenSearchEngine:
    """The index answers which configurations match (and their order); the lake gives the columns."""

    def __init__(self, lake: Lake, client: OpenSearch, alias: str | None = None) -> None:
        self.lake = lake
        self.client = client
        self.alias = alias or index_name(lake)

    def query(self, filter: str | None) -> dict[str, Any]:
        """The filter as DSL, restricted to the datasets the lake's principal may see."""
        query = compile_query(filter)
        visible = self.lake.scope().datasets
        if visible is None:
            return query
        return {"bool": {"must": [query], "filter": [{"terms": {"dataset": visible}}]}}

    def _search(self, body: dict[str, Any], doing: str) -> dict[str, Any]:
        with talking_to(self.client, doing):
            return self.client.search(index=self.alias, body=body)

    def ids(self, filter: str | None, limit: int | None = None) -> list[str]:
        """Document ids of the matches: all of them, or the first ``limit`` in the lake's order."""
        query = self.query(filter)
        if limit is None:
            from opensearchpy.helpers import scan

            with talking_to(self.client, f"searching {self.alias}"):
                return [h["_id"] for h in scan(self.client, index=self.alias, query={"query": query},
                                               _source=False, size=PAGE_SIZE)]
        # the lake's order (dataset, source_file, frame_index), config_id to break ties; pages by search_after
        sort = [{k: {"order": "asc", "missing": "_last"}}
                for k in ("dataset", "source_file", "frame_index", "config_id")]
        out: list[str] = []
        after: list[Any] | None = None
        while len(out) < limit:
            body: dict[str, Any] = {"query": query, "sort": sort, "_source": False,
                                    "size": min(PAGE_SIZE, limit - len(out)), "track_total_hits": False}
            if after is not None:
                body["search_after"] = after
            hits = self._search(body, f"searching {self.alias}")["hits"]["hits"]
            out += [h["_id"] for h in hits]
            if len(hits) < body["size"]:
                break
            after = hits[-1]["sort"]
        return out

    def search(self, filter: str | None, columns: list[str] | None = None, limit: int | None = None) -> pa.Table:
        from mliplake.query.engine import DEFAULT_COLUMNS

        cols = columns or DEFAULT_COLUMNS
        con = self.lake.connection()
        known = set(con.sql("SELECT * FROM configurations LIMIT 0").columns)
        bad = [c for c in cols if c not in known]
        if bad:
            raise FilterError(f"unknown column(s) {', '.join(bad)}; columns: {', '.join(sorted(known))}")
        ids = self.ids(filter, limit)
        # config_id is unique within a dataset; the dataset list lets the scan skip other datasets' shards
        datasets = sorted({i.rsplit("/", 1)[0] for i in ids}) or [""]
        sql = (f"SELECT {', '.join(_ident(c) for c in cols)} FROM configurations "
               f"WHERE dataset IN ({', '.join('?' * len(datasets))}) "
               "AND dataset || '/' || config_id IN (SELECT unnest(?::VARCHAR[])) "
               "ORDER BY dataset, source_file, frame_index, config_id")
        return con.sql(sql, params=[*datasets, ids]).to_arrow_table()

    def count(self, filter: str | None) -> int:
        query = self.query(filter)
        with talking_to(self.client, f"counting in {self.alias}"):
            return int(self.client.count(index=self.alias, body={"query": query})["count"])

    def facets(self, filter: str | None, fields: list[str], size: int = 1000) -> dict[str, list[tuple[Any, int]]]:
        specs = [parse_field(name, FACET_KINDS, "facets", FACETS_NEED) for name in fields]
        aggs = {f"f{i}": {"terms": {"field": _facet_field(f), "size": size}} for i, f in enumerate(specs)}
        res = self._search({"query": self.query(filter), "size": 0, "aggs": aggs}, f"faceting {self.alias}")
        out = {}
        for i, (name, f) in enumerate(zip(fields, specs, strict=True)):
            buckets = res["aggregations"][f"f{i}"]["buckets"]
            cast = bool if f.kind == "bool" else int if f.kind == "integer" else str
            out[name] = _order_facet(((cast(b["key"]), b["doc_count"]) for b in buckets), size)
        return out

    def stats(self, filter: str | None, field: str) -> dict[str, Any]:
        f = parse_field(field, STATS_KINDS, "stats", STATS_NEED)
        name = f.spec.column if f.spec else _json_field(f, "num")
        res = self._search({"query": self.query(filter), "size": 0, "aggs": {"s": {"stats": {"field": name}}}},
                           f"computing statistics in {self.alias}")
        s = res["aggregations"]["s"]
        return _stats_result(f, s["min"], s["max"], s["avg"], s["count"])


def _facet_field(f: Field) -> str:
    return f.spec.column if f.spec else _json_field(f, "str")


def engine_for(lake: Lake) -> Engine:
    """OpenSearch when ``$MLIPLAKE_OPENSEARCH_URL`` is set, the lake's DuckDB otherwise."""
    url = lake.settings.opensearch_url.get_secret_value()
    return OpenSearchEngine(lake, connect(url)) if url else DuckDBEngine(lake)
