"""Private data reaches nobody who may not see it, through any read path of the library.

A lake holds a public dataset, a private one (owner alice, group g1) and one embargoed until
2099 (owner alice).  Every read path is walked as anonymous, as bob (no group), as carol (in
g1), as alice and as an admin; each path is one entry of READ_PATHS, so a new path means a new
entry.  The private datasets carry a key and an element of their own, so a count, a key list
or a histogram that still included them would show it.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from support import tiny_frames

import mliplake
from mliplake.access import AccessError, Principal
from mliplake.catalogue import search as catalog_search
from mliplake.lake import NotFound
from mliplake.ml import models as ml

ANON = Principal.anonymous()
BOB = Principal.user("bob")
CAROL = Principal.user("carol", groups=["g1"])
ALICE = Principal.user("alice", roles=["depositor"])
ADMIN = Principal.admin()
SECRET_KEY = "secret_recipe"  # an info key that only the private datasets have


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    owner = mliplake.Lake(tmp / "lake")
    alice = owner.as_principal(ALICE)
    deps = {}
    deps["pub"] = owner.deposit([tiny_frames(tmp / "pub.xyz", "Si", 6)], manifest={"dataset": "pub"}).deposit_id
    bad = tmp / "priv.xyz"
    tiny_frames(bad, "Cu", 5, key=SECRET_KEY)
    with open(bad, "a") as f:  # one broken frame: a quarantine to find
        f.write("2\nenergy=1 Properties=species:S:1:pos:R:3\nCu 0 0\n")
    deps["priv"] = alice.deposit([bad], manifest={"dataset": "priv", "visibility": "private", "groups": ["g1"],
                                                  "submitter": "alice@example.org"}).deposit_id
    deps["emb"] = alice.deposit([tiny_frames(tmp / "emb.xyz", "Au", 4, key=SECRET_KEY, offset=1)],
                                manifest={"dataset": "emb", "visibility": "embargoed",
                                          "embargo_until": "2099-01-01"}).deposit_id
    from mliplake.catalogue import cards as catalogue

    catalogue.refresh(owner)
    # a model trained on private data (its card written the way ml.register writes it; training a
    # real MACE here would add minutes and nothing to what is tested: the model's row and view)
    ml._commit_row(owner, "models", ml.MODEL_ROWS,
                   {"model_id": "m-priv", "created_at": "2026-01-01T00:00:00", "datasets": ["priv", "pub"],
                    "card": json.dumps({"model_id": "m-priv", "name": "cu-private", "created_at": "2026-01-01"})},
                   "model_id = ?", ["m-priv"])
    return {"lake": owner, "deps": deps, "tmp": tmp}


def seen_datasets(lake: mliplake.Lake, deps: dict[str, str], tmp: Path) -> dict[str, set[str]]:
    """What each read path shows of the three datasets (names it lets through)."""
    out: dict[str, set[str]] = {}

    def probe(name: str, fn: Callable[[], set[str]]) -> None:
        out[name] = fn()

    names = {"pub", "priv", "emb"}
    probe("views: configurations", lambda: {r[0] for r in lake.sql("SELECT DISTINCT dataset FROM configurations").fetchall()})
    probe("views: deposits", lambda: {r[0] for r in lake.sql("SELECT dataset FROM deposits").fetchall()})
    probe("views: datasets", lambda: {r["dataset"] for r in lake.datasets()})
    probe("views: quarantine", lambda: {r[0] for r in lake.sql("SELECT dataset FROM quarantine").fetchall()})
    probe("views: keys", lambda: {d for r in lake.keys().to_pylist() if r["key"] == SECRET_KEY for d in r["datasets"]})
    probe("views: catalogue", lambda: {r[0] for r in lake.sql("SELECT dataset FROM catalogue").fetchall()})
    probe("views: key_registry", lambda: {d for k, ds in lake.sql("SELECT key, datasets FROM key_registry").fetchall()
                                          if k == SECRET_KEY for d in ds})
    probe("views: models", lambda: {"priv"} if lake.sql("SELECT count(*) FROM models").fetchone()[0] else set())
    probe("untrusted SQL: configurations", lambda: {r["dataset"] for r in lake.sql(
        "SELECT DISTINCT dataset FROM configurations", untrusted=True).to_pylist()})
    probe("untrusted SQL: deposits", lambda: {r["dataset"] for r in lake.sql(
        "SELECT dataset, submitter FROM deposits", untrusted=True).to_pylist()})
    probe("untrusted SQL: datasets", lambda: {r["dataset"] for r in lake.sql(
        "SELECT dataset FROM datasets", untrusted=True).to_pylist()})
    probe("untrusted SQL: keys", lambda: {d for r in lake.sql("SELECT key, datasets FROM keys", untrusted=True).to_pylist()
                                          if r["key"] == SECRET_KEY for d in r["datasets"]})
    probe("search", lambda: set(lake.search(None, columns=["dataset"]).column("dataset").to_pylist()))
    probe("count", lambda: {d for d in names if lake.count(f'dataset = "{d}"')})
    probe("count by element", lambda: {d for d, el in (("priv", "Cu"), ("emb", "Au"), ("pub", "Si"))
                                       if lake.count(f'elements HAS "{el}"')})
    probe("summary", lambda: {d for d, n in (lake.summary(None, keys=["dataset"]).values.get("dataset") or [])}
          if False else _summary_datasets(lake))
    probe("export", lambda: _export_datasets(lake, tmp))
    probe("atoms", lambda: {a.info.get("dataset") or "?" for d in names for a in lake.atoms(dataset=d)} and
          {d for d in names if any(True for _ in lake.atoms(dataset=d))})
    probe("records", lambda: {r["dataset"] for r in lake.records()})
    probe("record / quarantine / raw files", lambda: _by_id(lake, deps))
    probe("catalogue search", lambda: {d["dataset"] for d in catalog_search.search_cards(lake).datasets})
    probe("models", lambda: {"priv"} if ml.models(lake) else set())
    return out


def _summary_datasets(lake: mliplake.Lake) -> set[str]:
    s = lake.summary(None, keys=["dataset", f"info.{SECRET_KEY}"])
    text = json.dumps(s.to_dict() if hasattr(s, "to_dict") else str(s), default=str)
    found = {d for d in ("priv", "emb") if f'"{d}"' in text or f"'{d}'" in text}
    return found | ({"pub"} if "pub" in text else set())


def _export_datasets(lake: mliplake.Lake, tmp: Path) -> set[str]:
    import ase.io

    out = tmp / f"export-{lake.principal.kind}-{lake.principal.name}.xyz"
    n = lake.export(None, str(out))
    got = {a.get_chemical_symbols()[0] for a in ase.io.read(out, ":")} if n else set()
    return {d for d, el in (("priv", "Cu"), ("emb", "Au"), ("pub", "Si")) if el in got}


def _by_id(lake: mliplake.Lake, deps: dict[str, str]) -> set[str]:
    found = set()
    for d, dep in deps.items():
        try:
            lake.record(dep)
            lake.quarantine(dep)
            lake.raw_files(dep)
            found.add(d)
        except NotFound:
            pass
    return found


EXPECT = {
    "anonymous": ({"pub"}, ANON),
    "bob": ({"pub"}, BOB),
    "carol": ({"pub", "priv"}, CAROL),
    "alice": ({"pub", "priv", "emb"}, ALICE),
    "admin": ({"pub", "priv", "emb"}, ADMIN),
}


@pytest.mark.parametrize("who", list(EXPECT))
def test_every_read_path_shows_exactly_what_the_principal_may_see(world, who):
    allowed, principal = EXPECT[who]
    lake = world["lake"].as_principal(principal)
    seen = seen_datasets(lake, world["deps"], world["tmp"])
    leaks = {path: sorted(got - allowed) for path, got in seen.items() if got - allowed}
    assert leaks == {}
    # and the principal does see what it may (quarantine only exists for priv; keys and models only
    # tell of the private ones)
    for path, got in seen.items():
        if path in ("views: keys", "views: key_registry", "untrusted SQL: keys"):
            assert got == ({"priv", "emb"} & allowed), path
        elif path in ("views: quarantine",):
            assert got == ({"priv"} & allowed), path
        elif path in ("views: models", "models"):
            assert got == ({"priv"} & allowed), path
        else:
            assert got == allowed, path


def test_submitter_emails_are_not_shown_to_others(world):
    for who in (ANON, BOB, CAROL):
        rows = world["lake"].as_principal(who).sql("SELECT submitter FROM deposits", untrusted=True).to_pylist()
        assert all(r["submitter"] is None for r in rows)
    owner_rows = world["lake"].sql("SELECT submitter FROM deposits WHERE dataset = 'priv'").fetchall()
    assert owner_rows == [("alice@example.org",)]


def test_opensearch_engine_gets_the_dataset_restriction(world, opensearch_url):
    from mliplake import search

    client = search.connect(opensearch_url)
    alias = f"access-{world['tmp'].name.lower()}"
    search.index_lake(world["lake"], client, alias=alias)
    for principal, allowed in ((ANON, {"pub"}), (CAROL, {"pub", "priv"}), (ADMIN, {"pub", "priv", "emb"})):
        engine = search.OpenSearchEngine(world["lake"].as_principal(principal), client, alias=alias)
        got = set(engine.search(None, columns=["dataset"], limit=100).column("dataset").to_pylist())
        assert got == allowed
        assert engine.count('elements HAS "Cu"') == (5 if "priv" in allowed else 0)


def test_changing_visibility_takes_effect_at_once(world, tmp_path):
    owner = world["lake"]
    anon = owner.as_principal(ANON)
    bob = owner.as_principal(BOB)
    with pytest.raises(AccessError):
        bob.set_visibility("priv", "public")
    before = seen_datasets(anon, world["deps"], tmp_path)  # every cache of the process has seen "priv" hidden
    group = seen_datasets(owner.as_principal(CAROL), world["deps"], tmp_path)
    owner.as_principal(ALICE).set_visibility("priv", "public")
    try:
        assert anon.count('dataset = "priv"') == 5
        assert "priv" in {r["dataset"] for r in anon.sql("SELECT dataset FROM datasets", untrusted=True).to_pylist()}
        # every read path at once, cached answers included: anonymous now sees what the group sees
        assert seen_datasets(anon, world["deps"], tmp_path) == group
    finally:
        owner.set_visibility("priv", "private", groups=["g1"])
    assert anon.count('dataset = "priv"') == 0
    assert seen_datasets(anon, world["deps"], tmp_path) == before
    # an embargo that has ended is public without anyone doing anything
    owner.set_visibility("emb", "embargoed", embargo_until="2001-01-01")
    try:
        assert anon.count('dataset = "emb"') == 4
    finally:
        owner.set_visibility("emb", "embargoed", embargo_until="2099-01-01")
    assert anon.count('dataset = "emb"') == 0
