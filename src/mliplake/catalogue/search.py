"""Searching the dataset catalogue: free text over names, titles, descriptions, authors, methods and
sampling; facets; the element selection a periodic table sends (datasets with all of, any of, or only
these elements); sorted by relevance, size or date.

Two engines behind one function, as for configurations: OpenSearch (index ``mliplake-datasets``)
when ``MLIPLAKE_OPENSEARCH_URL`` is set, else the cards themselves, searched in Python (a catalogue
holds hundreds of datasets, not millions).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mliplake.catalogue import cards as catalogue

if TYPE_CHECKING:
    from mliplake.lake import Lake

ALIAS = "mliplake-datasets"
TEXT_FIELDS = {"dataset": 3.0, "title": 3.0, "description": 1.0, "authors": 2.0, "method": 1.0, "sampling": 1.0}
FACETS = ("license", "elements", "properties", "functional")


@dataclass
class CatalogueResult:
    total: int
    datasets: list[dict[str, Any]]
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


def _doc(card: dict[str, Any]) -> dict[str, Any]:
    method = json.loads(card.get("method") or "{}")
    return {
        "dataset": card["dataset"], "title": card["title"], "description": card["description"],
        "authors": card["authors"], "license": card["license"], "method": " ".join(str(v) for v in method.values()),
        "functional": str(method.get("functional", "")), "sampling": card["sampling"],
        "elements": card["elements"], "properties": card["properties"], "configurations": card["configurations"],
        "atoms": card["atoms"], "quality_score": card["quality_score"], "updated_at": card["updated_at"],
    }


def _element_ok(elements: list[str], wanted: list[str], mode: str) -> bool:
    have, want = set(elements), set(wanted)
    if not want:
        return True
    if mode == "any":
        return bool(have & want)
    if mode == "only":
        return have <= want
    return want <= have  # all


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _score(doc: dict[str, Any], words: list[str]) -> float:
    score = 0.0
    for name, weight in TEXT_FIELDS.items():
        value = doc.get(name)
        tokens = _tokens(" ".join(value) if isinstance(value, list) else str(value or ""))
        score += weight * sum(tokens.count(w) for w in words)
    return score


def _facets(docs: list[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    out = {}
    for f in FACETS:
        counts: dict[str, int] = {}
        for d in docs:
            values = d[f] if isinstance(d[f], list) else [d[f]]
            for v in values:
                if v:
                    counts[v] = counts.get(v, 0) + 1
        out[f] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return out


def _sort(docs: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    if sort == "size":
        return sorted(docs, key=lambda d: (-d["configurations"], d["dataset"]))
    if sort == "date":
        return sorted(docs, key=lambda d: (d["updated_at"], d["dataset"]), reverse=True)
    return sorted(docs, key=lambda d: (-d.get("_score", 0.0), d["dataset"]))


def search_cards(lake: Lake, text: str = "", elements: list[str] | None = None, mode: str = "all",
                 license: str | None = None, sort: str = "relevance") -> CatalogueResult:
    """The embedded engine: the cards, filtered and scored in Python."""
    words = _tokens(text)
    docs = []
    for card in catalogue.visible_cards(lake):
        d = _doc(card)
        if license and d["license"] != license:
            continue
        if not _element_ok(d["elements"], elements or [], mode):
            continue
        if words:
            d["_score"] = _score(d, words)
            if not d["_score"]:
                continue
        docs.append(d)
    return CatalogueResult(len(docs), _sort(docs, sort), _facets(docs))


# ---------------------------------------------------------------- OpenSearch

MAPPINGS = {
    "dynamic": "strict",
    "properties": {
        "dataset": {"type": "text", "fields": {"keyword": {"type": "keyword"}}},
        "title": {"type": "text"}, "description": {"type": "text"},
        "authors": {"type": "text", "fields": {"keyword": {"type": "keyword"}}},
        "license": {"type": "keyword"}, "method": {"type": "text"}, "functional": {"type": "keyword"},
        "sampling": {"type": "text"}, "elements": {"type": "keyword"}, "properties": {"type": "keyword"},
        "configurations": {"type": "long"}, "atoms": {"type": "long"}, "quality_score": {"type": "double"},
        "updated_at": {"type": "keyword"},
    },
}


def index_catalogue(lake: Lake, client: Any, alias: str = ALIAS) -> int:
    """Index every dataset card into a new index and swap the alias to it in one request."""
    from opensearchpy.helpers import bulk

    from mliplake.search import talking_to

    new = f"{alias}-{int(time.time() * 1000)}"
    docs = [_doc(c) for c in catalogue.cards(lake)]
    with talking_to(client, f"indexing the dataset catalogue into {new}"):
        client.indices.create(index=new, body={"mappings": MAPPINGS})
        bulk(client, ({"_index": new, "_id": d["dataset"], "_source": d} for d in docs), refresh=True)
        old = list(client.indices.get_alias(name=alias, ignore_unavailable=True) or {}) if client.indices.exists_alias(
            name=alias) else []
        actions = [{"remove": {"index": i, "alias": alias}} for i in old] + [{"add": {"index": new, "alias": alias}}]
        client.indices.update_aliases(body={"actions": actions})
        for i in old:
            client.indices.delete(index=i, ignore_unavailable=True)
    return len(docs)


def search_index(client: Any, text: str = "", elements: list[str] | None = None, mode: str = "all",
                 license: str | None = None, sort: str = "relevance", alias: str = ALIAS,
                 visible: list[str] | None = None) -> CatalogueResult:
    """``visible``: the datasets the caller may see (None: all); hits, totals and facets stay inside them."""
    from mliplake.core.chemistry import Z_OF
    from mliplake.search import talking_to

    must: list[dict[str, Any]] = []
    filt: list[dict[str, Any]] = []
    must_not: list[dict[str, Any]] = []
    if text.strip():
        must.append({"multi_match": {"query": text, "fields": [f"{k}^{w:g}" for k, w in TEXT_FIELDS.items()]}})
    wanted = list(elements or [])
    if wanted and mode == "all":
        filt += [{"term": {"elements": e}} for e in wanted]
    elif wanted and mode == "any":
        filt.append({"terms": {"elements": wanted}})
    elif wanted:  # only: nothing outside the selection
        must_not.append({"terms": {"elements": sorted(set(Z_OF) - set(wanted))}})
    if license:
        filt.append({"term": {"license": license}})
    if visible is not None:
        filt.append({"terms": {"dataset.keyword": sorted(visible)}})
    order = {"size": [{"configurations": "desc"}, {"dataset.keyword": "asc"}],
             "date": [{"updated_at": "desc"}, {"dataset.keyword": "asc"}]}.get(
        sort, ["_score", {"dataset.keyword": "asc"}])
    body = {"query": {"bool": {"must": must or [{"match_all": {}}], "filter": filt, "must_not": must_not}},
            "sort": order, "size": 1000,
            "aggs": {f: {"terms": {"field": f, "size": 200}} for f in FACETS}}
    with talking_to(client, f"searching the dataset catalogue {alias}"):
        res = client.search(index=alias, body=body)
    docs = [h["_source"] | {"_score": h.get("_score") or 0.0} for h in res["hits"]["hits"]]
    facets = {f: sorted(((b["key"], b["doc_count"]) for b in res["aggregations"][f]["buckets"]),
                        key=lambda kv: (-kv[1], kv[0])) for f in FACETS}
    return CatalogueResult(int(res["hits"]["total"]["value"]), docs, facets)


def search(lake: Lake, text: str = "", elements: list[str] | None = None, mode: str = "all",
           license: str | None = None, sort: str = "relevance") -> CatalogueResult:
    """The catalogue through whichever engine is configured."""
    url = lake.settings.opensearch_url.get_secret_value()
    if not url:
        res = search_cards(lake, text, elements, mode, license, sort)
    else:
        from mliplake.search import connect

        allowed = lake.scope().datasets
        res = search_index(connect(url), text, elements, mode, license, sort,
                           visible=None if allowed is None else sorted(allowed))
    _mark_access(lake, res.datasets)
    return res


def _mark_access(lake: Lake, docs: list[dict[str, Any]]) -> None:
    """Who may see each dataset as its policy says now (a badge for private and embargoed data)."""
    policies = lake.tables.access_inputs()[1]
    for d in docs:
        p = policies.get(d["dataset"])
        d["visibility"] = p.visibility if p else "public"
        d["embargo_until"] = str(p.embargo_until) if p and p.embargo_until else None
