"""OPTIMADE under /optimade, served for real (uvicorn in its own process) over a lake holding the
mlearn and rmd17 samples and a private dataset of alice's.

The optimade-python-tools validator walks the implementation; the other tests check what a user
relies on: filters that agree with the REST API, paging that visits every entry once, private data
that stays invisible, and errors that are OPTIMADE error documents.
"""
from __future__ import annotations

import random

import httpx
import pytest
from support import deposit_sample, start_api, stop
from support import tiny_frames as frames

import mliplake
from mliplake.accounts import Accounts, accounts_url
from mliplake.server.optimade import compile_filter

PRIVATE = "secret-cu"
TWINS = ("twin-a", "twin-b")  # the same three frames deposited in both


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("optimade")
    lake = mliplake.Lake(tmp / "lake")
    deposit_sample(lake, "mlearn")
    deposit_sample(lake, "rmd17")
    alice = lake.as_principal(mliplake.access.Principal.user("alice", roles=["depositor"]))
    alice.deposit([frames(tmp / "priv.xyz", "Cu", 5)], manifest={"dataset": PRIVATE, "visibility": "private"})
    twin = frames(tmp / "twin.xyz", "Ar", 3)
    for name in TWINS:
        lake.deposit([twin], manifest={"dataset": name})
    acc = Accounts(accounts_url(lake.settings, lake))
    acc.add_user("alice", roles=["depositor"], actor="test")
    token = acc.create_token("alice", actor="test")[1]
    acc.close()
    private_ids = [f"{PRIVATE}:{r[0]}" for r in lake.sql(
        f"SELECT config_id FROM configurations WHERE dataset = '{PRIVATE}'").fetchall()]
    proc, url = start_api(tmp / "lake", {"MLIPLAKE_API_RATE": "100000", "MLIPLAKE_API_BURST": "100000"})
    with httpx.Client(base_url=url, timeout=60) as http:
        yield {"url": url, "http": http, "token": token, "private_ids": private_ids}
    stop(proc)


def get(world, path: str, token: str | None = None, **params) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return world["http"].get(path, params=params, headers=headers)


def structures(world, token: str | None = None, **params) -> dict:
    r = get(world, "/optimade/v1/structures", token, **params)
    assert r.status_code == 200, r.text
    return r.json()


def rest_count(world, filter: str) -> int:
    r = get(world, "/api/v1/count", filter=filter)
    assert r.status_code == 200, r.text
    return r.json()["data"]["count"]


def walk(world, first: str) -> list[str]:
    """Every id, following links.next from the first page (a full URL each time)."""
    ids, url, pages = [], first, 0
    while url:
        assert url.startswith("http://"), url
        body = world["http"].get(url).json()
        ids += [e["id"] for e in body["data"]]
        url = body["links"]["next"]
        assert body["meta"]["more_data_available"] == bool(url)
        pages += 1
        assert pages < 200
    return ids


# ---------------------------------------------------------------- the validator


@pytest.mark.slow  # about 20 s: some 150 requests
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic 2.11 about optimade's models
def test_the_optimade_validator_passes(world):
    from optimade.validator import ImplementationValidator

    random.seed(0)  # it picks entries and fields at random: the same ones each run
    v = ImplementationValidator(base_url=world["url"] + "/optimade", verbosity=-1, read_timeout=60)
    v.validate_implementation()
    r = v.results
    failures = [*r.failure_messages, *r.internal_failure_messages, *r.optional_failure_messages]
    assert v.valid and not failures, "\n".join(f"{summary}: {message}" for summary, message in failures)
    assert r.success_count >= 35

    versioned = ImplementationValidator(base_url=world["url"] + "/optimade/v1", verbosity=-1, minimal=True)
    versioned.validate_implementation()  # also: no /versions under /v1
    failures = [*versioned.results.failure_messages, *versioned.results.internal_failure_messages]
    assert versioned.valid and not failures, failures


# ---------------------------------------------------------------- what users rely on


def test_versions_info_and_links(world):
    r = get(world, "/optimade/versions")
    assert r.status_code == 200 and r.text == "version\n1\n"
    assert r.headers["content-type"].startswith("text/csv") and "header=present" in r.headers["content-type"]
    info = get(world, "/optimade/v1/info").json()
    assert info["meta"]["api_version"] == "1.2.0" and info["meta"]["provider"]["prefix"] == "mliplake"
    assert info["data"]["attributes"]["available_api_versions"][0]["url"] == world["url"] + "/optimade/v1/"
    props = get(world, "/optimade/v1/info/structures").json()["data"]["properties"]
    assert props["_mliplake_energy"]["unit"] == "eV" and props["_mliplake_forces"]["type"] == "list"
    assert {"id", "type", "structure_features", "species", "last_modified"} <= set(props)
    links = get(world, "/optimade/v1/links").json()["data"]
    assert [(x["attributes"]["link_type"], x["attributes"]["base_url"]) for x in links] == [
        ("root", world["url"] + "/optimade")]
    assert get(world, "/optimade/v2/info").status_code == 553
    assert get(world, "/optimade/info").json()["data"] == info["data"]  # the unversioned base serves the same


def test_elements_has_si_is_the_mlearn_structures_and_agrees_with_rest(world):
    body = structures(world, filter='elements HAS "Si"', page_limit=5)
    assert body["meta"]["data_returned"] == rest_count(world, 'elements HAS "Si"') == 239
    assert body["meta"]["data_available"] > 239 and body["meta"]["more_data_available"]
    for e in body["data"]:
        a = e["attributes"]
        assert e["type"] == "structures" and a["elements"] == ["Si"] and a["_mliplake_dataset"] == "mlearn-si"
        assert a["species_at_sites"] == ["Si"] * a["nsites"] == [s["name"] for s in a["species"]] * a["nsites"]
        assert len(a["cartesian_site_positions"]) == a["nsites"] == len(a["_mliplake_forces"])
        assert a["structure_features"] == [] and a["last_modified"].endswith("Z")


def test_own_fields_filter_like_the_rest_api(world):
    body = structures(world, filter="_mliplake_energy < 0", page_limit=1)
    assert body["meta"]["data_returned"] == rest_count(world, "energy < 0") > 0
    assert body["data"][0]["attributes"]["_mliplake_energy"] < 0
    assert structures(world, filter='_mliplake_dataset = "rmd17-ethanol" AND nsites = 9 AND elements HAS ALL '
                                    '"C", "H", "O"', page_limit=1)["meta"]["data_returned"] == 2000
    key_filter = '_mliplake_info.config_type IS KNOWN'
    assert structures(world, filter=key_filter, page_limit=1)["meta"]["data_returned"] == rest_count(
        world, "info.config_type IS KNOWN")
    descriptive = structures(world, filter='chemical_formula_descriptive = "C2H6O"', page_limit=1)
    assert descriptive["meta"]["data_returned"] == 2000
    only = structures(world, filter="species_at_sites LENGTH 9", response_fields="nsites,_mliplake_energy")
    assert set(only["data"][0]["attributes"]) == {"nsites", "_mliplake_energy"}
    assert only["meta"]["data_returned"] == 2000


def test_fields_of_other_providers_are_unknown_not_errors(world):
    none = structures(world, filter="_exmpl_bandgap > 1")
    assert none["meta"]["data_returned"] == 0 and "_exmpl_bandgap" in none["meta"]["warnings"][0]["detail"]
    everything = structures(world, filter="_exmpl_bandgap IS UNKNOWN AND immutable_id IS UNKNOWN", page_limit=1)
    assert everything["meta"]["data_returned"] == everything["meta"]["data_available"]


def test_links_next_visits_every_structure_once(world):
    ids = walk(world, world["url"] + '/optimade/v1/structures?filter=elements HAS "Si"&page_limit=17'
                                     "&response_fields=nsites")
    assert len(ids) == len(set(ids)) == 239
    rest = get(world, "/api/v1/search", filter='elements HAS "Si"', columns="dataset,config_id", limit=1000).json()
    assert set(ids) == {f"{r['dataset']}:{r['config_id']}" for r in rest["data"]}
    # offset paging, as most OPTIMADE clients page, with a sort
    by_offset = walk(world, world["url"] + '/optimade/v1/structures?filter=elements HAS "Si"&page_limit=50'
                                           "&page_offset=0&sort=-nsites&response_fields=nsites")
    assert sorted(by_offset) == sorted(ids)
    everything = walk(world, world["url"] + "/optimade/v1/structures?page_limit=1000&response_fields=nsites")
    assert len(everything) == len(set(everything)) == structures(world)["meta"]["data_available"]


def test_sort_orders_the_entries(world):
    body = structures(world, sort="-_mliplake_energy", page_limit=30, response_fields="_mliplake_energy")
    energies = [e["attributes"]["_mliplake_energy"] for e in body["data"]]
    assert energies == sorted(energies, reverse=True)
    newest = structures(world, sort="-last_modified", page_limit=30, response_fields="last_modified")
    stamps = [e["attributes"]["last_modified"] for e in newest["data"]]
    assert stamps == sorted(stamps, reverse=True) and all(s.endswith("Z") for s in stamps)


def test_private_datasets_are_invisible_without_their_token(world):
    anonymous = structures(world, filter=f'_mliplake_dataset = "{PRIVATE}"')
    assert anonymous["meta"]["data_returned"] == 0
    assert anonymous["meta"]["data_available"] == 239 + 2000 + 2 * 3
    assert structures(world, filter='elements HAS "Cu"')["meta"]["data_returned"] == 0
    every = walk(world, world["url"] + "/optimade/v1/structures?page_limit=1000&response_fields=nsites")
    assert not set(world["private_ids"]) & set(every)
    for entry_id in world["private_ids"][:2]:
        r = get(world, f"/optimade/v1/structures/{entry_id}")
        assert r.status_code == 404 and r.json()["errors"][0]["status"] == "404"
    # alice, its owner, sees it with her token
    mine = structures(world, world["token"], filter=f'_mliplake_dataset = "{PRIVATE}"')
    assert mine["meta"]["data_returned"] == len(world["private_ids"]) == 5
    one = get(world, f"/optimade/v1/structures/{world['private_ids'][0]}", world["token"])
    assert one.status_code == 200 and one.json()["data"]["attributes"]["elements"] == ["Cu"]


def test_single_structure(world):
    first = structures(world, page_limit=1)["data"][0]
    r = get(world, f"/optimade/v1/structures/{first['id']}")
    assert r.status_code == 200 and r.json()["data"] == first
    assert r.json()["meta"]["more_data_available"] is False
    dataset, config_id = first["id"].split(":")
    assert (dataset, config_id) == (first["attributes"]["_mliplake_dataset"], first["attributes"]["_mliplake_config_id"])
    for missing in (config_id, f"nowhere:{config_id}", f"{dataset}:{'0' * len(config_id)}", f"{dataset}:"):
        r = get(world, f"/optimade/v1/structures/{missing}")
        assert r.status_code == 404 and r.json()["errors"][0]["status"] == "404", missing


def test_the_same_frame_in_two_datasets_is_two_entries_with_their_own_ids(world):
    twins = structures(world, filter='elements HAS "Ar"', page_limit=100, response_fields="_mliplake_config_id")
    assert twins["meta"]["data_returned"] == 6
    ids = [e["id"] for e in twins["data"]]
    hashes = [e["attributes"]["_mliplake_config_id"] for e in twins["data"]]
    assert len(set(ids)) == 6 and len(set(hashes)) == 3  # each frame twice, under two ids
    one_hash = hashes[0]
    pair = [i for i, h in zip(ids, hashes) if h == one_hash]
    assert sorted(pair) == [f"{name}:{one_hash}" for name in TWINS]
    for entry_id, name in zip(sorted(pair), TWINS):
        r = get(world, f"/optimade/v1/structures/{entry_id}")
        assert r.status_code == 200, r.text
        body = r.json()["data"]
        assert body["id"] == entry_id and body["attributes"]["_mliplake_dataset"] == name
        assert body["attributes"]["_mliplake_config_id"] == one_hash
        found = structures(world, filter=f'id = "{entry_id}"')
        assert found["meta"]["data_returned"] == 1 and [e["id"] for e in found["data"]] == [entry_id]
    # the content hash finds the frame in both datasets; the other operators on id see the joined text
    both = structures(world, filter=f'_mliplake_config_id = "{one_hash}"', response_fields="nsites")
    assert sorted(e["id"] for e in both["data"]) == sorted(pair)
    assert structures(world, filter=f'id != "{pair[0]}" AND elements HAS "Ar"')["meta"]["data_returned"] == 5
    assert structures(world, filter='id STARTS WITH "twin-b:"')["meta"]["data_returned"] == 3
    assert structures(world, filter=f'id ENDS WITH ":{one_hash}"')["meta"]["data_returned"] == 2
    assert structures(world, filter=f'id = "{one_hash}"')["meta"]["data_returned"] == 0
    by_id = structures(world, filter='elements HAS "Ar"', sort="-id", response_fields="nsites")
    assert [e["id"] for e in by_id["data"]] == sorted(ids, reverse=True)


@pytest.mark.parametrize(("params", "status"), [
    ({"page_limit": 100_000}, 403),
    ({"filter": "nsites >"}, 400),
    ({"filter": "crazyfield = 2"}, 400),
    ({"filter": "_mliplake_nonsense = 2"}, 400),
    ({"filter": 'nsites = "nine"'}, 400),
    ({"filter": "lattice_vectors LENGTH 3"}, 501),
    ({"page_limit": "many"}, 400),
    ({"page_above": "not-a-cursor"}, 400),
    ({"sort": "elements"}, 400),
])
def test_errors_are_optimade_error_documents(world, params, status):
    r = get(world, "/optimade/v1/structures", **params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/vnd.api+json"
    body = r.json()
    assert body["errors"][0]["status"] == str(status) and body["errors"][0]["detail"]
    assert body["meta"]["api_version"] == "1.2.0" and body["meta"]["more_data_available"] is False


def test_a_bad_token_is_a_401_document(world):
    r = get(world, "/optimade/v1/structures", "mlk_not-a-token")
    assert r.status_code == 401 and r.json()["errors"][0]["status"] == "401"


# ---------------------------------------------------------------- the filter translation (no server)


def test_filter_errors_point_at_what_the_caller_wrote():
    from mliplake.server.optimade import OptimadeError

    with pytest.raises(OptimadeError) as e:
        compile_filter('_mliplake_energy = "x"')
    first, text, caret = e.value.detail.split("\n")
    assert first.startswith("filter: _mliplake_energy is a number") and text.strip() == '_mliplake_energy = "x"'
    assert text.index("=") == caret.index("^")
    with pytest.raises(OptimadeError) as e:
        compile_filter('last_modified > "2020" AND nsites >')
    assert e.value.detail.split("\n")[1].strip() == 'last_modified > "2020" AND nsites >'
    with pytest.raises(OptimadeError, match="keywords are upper case"):
        compile_filter('nsites = 2 and _mliplake_energy < 0')


def test_documents_carry_no_nan_or_infinity():
    from mliplake.server.optimade import render

    assert render({"a": float("nan"), "b": [1.5, float("-inf")], "c": "Å"}) == '{"a":null,"b":[1.5,null],"c":"Å"}'.encode()
    assert render({"a": [0.1, 2]}) == b'{"a":[0.1,2]}'


def test_names_in_strings_are_not_translated():
    c = compile_filter('_mliplake_dataset = "_mliplake_energy" AND chemical_formula_descriptive CONTAINS "type"')
    # the values stay values: bound, or written as typed string literals, never read as names
    bound = c.params + [m for m in ("'_mliplake_energy'", "'type'") if m in c.clause]
    assert len(bound) == 2 and "dataset" in c.clause and "energy" not in c.clause.replace("'_mliplake_energy'", "")
    assert not c.warnings


def test_optimade_get_fetches_every_page_of_a_filter(world, tmp_path):
    """optimade-python-tools' own client (optimade-get) follows links.next to the end."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("optimade-get")
    out = tmp_path / "si.json"
    run = subprocess.run([str(exe), "--filter", 'elements HAS "Si"', "--output-file", str(out), "--silent",
                          "--no-async", "--max-results-per-provider", "0", world["url"] + "/optimade"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    (result,) = json.loads(out.read_text())["structures"]['elements HAS "Si"'].values()
    ids = [e["id"] for e in result["data"]]
    assert not result["errors"] and len(ids) == len(set(ids)) == 239
