"""Dataset catalogue search: words, authors, element selections, facets, sorting; both engines."""
from __future__ import annotations

import pytest

from mliplake import search
from mliplake.catalogue import search as catalog_search


@pytest.fixture(params=["cards", "opensearch"])
def find(request, samples_lake, monkeypatch):
    if request.param == "cards":
        return lambda **kw: catalog_search.search_cards(samples_lake, **kw)
    url = request.getfixturevalue("opensearch_url")
    alias = f"cat-{request.node.name.lower().replace('[', '-').replace(']', '')}"
    client = search.connect(url)
    catalog_search.index_catalogue(samples_lake, client, alias=alias)
    return lambda **kw: catalog_search.search_index(client, alias=alias, **kw)


def names(result):
    return [d["dataset"] for d in result.datasets]


def test_words_of_descriptions_and_titles(find):
    assert names(find(text="dihedral scan benchmark"))[0] == "3bpa"  # ranked first; mlearn is "a benchmark" too
    assert names(find(text="silicon vacancies surfaces")) == ["mlearn-si"]
    assert names(find(text="molecular dynamics ethanol"))[0] == "rmd17-ethanol"
    assert set(names(find(text="molecular dynamics"))) == {"3bpa", "rmd17-ethanol"}
    assert names(find(text="nonexistentword")) == []


def test_authors(find):
    assert set(names(find(text="Csányi"))) == {"3bpa", "mlearn-si"}
    assert names(find(text="Lilienfeld")) == ["rmd17-ethanol"]


def test_element_selection_like_a_periodic_table(find):
    assert set(names(find(elements=["C", "H"]))) == {"3bpa", "rmd17-ethanol"}  # all of
    assert set(names(find(elements=["N", "Si"], mode="any"))) == {"3bpa", "mlearn-si"}
    assert names(find(elements=["C", "H", "O"], mode="only")) == ["rmd17-ethanol"]
    assert names(find(elements=["Si"], mode="only")) == ["mlearn-si"]
    assert names(find(elements=["Cu"])) == []


def test_facets_and_filters(find):
    r = find()
    assert r.total == 3
    assert dict(r.facets["license"]) == {"MIT": 1, "CC0-1.0": 1, "BSD-3-Clause": 1}
    assert dict(r.facets["elements"])["C"] == 2 and dict(r.facets["elements"])["Si"] == 1
    assert dict(r.facets["properties"]) == {"energy": 3, "forces": 3, "stress": 1}
    assert names(find(license="MIT")) == ["3bpa"]


def test_sorting(find):
    assert names(find(sort="size")) == ["rmd17-ethanol", "3bpa", "mlearn-si"]
    assert len(names(find(sort="date"))) == 3
