"""The REST API for real: ``mliplake serve`` (uvicorn) on 127.0.0.1, driven by mliplake.Client and httpx.

A lake holds a public dataset (mlearn Si) and a private one (owner alice, group g1).  Accounts:
alice (depositor), bob (reader), carol (reader, in g1), root (admin).  Broken connections are
caused for real by a proxy that cuts them mid-transfer (tests/support/__init__.py: CuttingProxy).
"""
from __future__ import annotations

import io
import json
import os
import re
import threading
import zipfile
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from support import CuttingProxy, deposit_sample, start_api, stop
from support import tiny_frames as frames

import mliplake
from mliplake.accounts import Accounts, accounts_url
from mliplake.client import APIError, Client

PRIVATE_KEY = "private_recipe"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    lake = mliplake.Lake(tmp / "lake")
    deposit_sample(lake, "mlearn")
    alice = lake.as_principal(mliplake.access.Principal.user("alice", roles=["depositor"]))
    priv = alice.deposit([frames(tmp / "priv.xyz", "Cu", 5, key=PRIVATE_KEY)],
                         manifest={"dataset": "secret-cu", "visibility": "private", "groups": ["g1"],
                                   "submitter": "alice@example.org"})
    emb = alice.deposit([frames(tmp / "emb.xyz", "Au", 3, key=PRIVATE_KEY)],
                        manifest={"dataset": "embargo-au", "visibility": "embargoed", "embargo_until": "2099-01-01"})
    # a model trained on the private data (its row written as ml.register writes it: training a
    # real MACE here would add minutes and nothing to what is tested, the model's visibility)
    import json as _json

    from mliplake.ml import models as ml
    ml._commit_row(lake, "models", ml.MODEL_ROWS,
                   {"model_id": "m-secret", "created_at": "2026-01-01T00:00:00", "datasets": ["secret-cu"],
                    "card": _json.dumps({"model_id": "m-secret", "name": "cu-secret", "created_at": "2026-01-01",
                                         "elements": ["Cu"], "training_set": {"name": "ts-secret", "version": 1}})},
                   "model_id = ?", ["m-secret"])
    acc = Accounts(accounts_url(lake.settings, lake))
    acc.add_group("g1", actor="test")
    acc.add_user("alice", roles=["depositor"], actor="test")
    acc.add_user("bob", actor="test")
    acc.add_user("carol", groups=["g1"], actor="test")
    acc.add_user("root", roles=["admin"], actor="test")
    tokens = {name: acc.create_token(name, scope="write", actor="test")[1] for name in ("alice", "bob", "carol", "root")}
    tokens["alice-read"] = acc.create_token("alice", scope="read", actor="test")[1]
    acc.close()
    proc, url = start_api(tmp / "lake", {"MLIPLAKE_API_BURST": "100000", "MLIPLAKE_API_RATE": "100000",
                                         "MLIPLAKE_API_MAX_BODY": str(256 << 10),
                                         "MLIPLAKE_ARCHIVE_MAX_BYTES": str(64 << 20)})
    ids = [r[0] for r in lake.sql("SELECT config_id FROM configurations WHERE dataset = 'secret-cu'").fetchall()]
    emb_ids = [r[0] for r in lake.sql("SELECT config_id FROM configurations WHERE dataset = 'embargo-au'").fetchall()]
    yield {"lake": lake, "url": url, "tokens": tokens, "tmp": tmp, "priv_deposit": priv.deposit_id,
           "priv_ids": ids, "emb_deposit": emb.deposit_id, "emb_ids": emb_ids, "proc": proc}
    stop(proc)


def client(world, who: str | None = None, **kw) -> Client:
    return Client(world["url"], token=world["tokens"][who] if who else "", progress=False, **kw)


# ------------------------------------------------------------------ access: every route, every caller


def _operations(url: str) -> list[tuple[str, str]]:
    spec = httpx.get(url + "/api/openapi.json").json()
    return [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if m in ("get", "post", "put", "patch",
                                                                                   "delete", "head", "options")]


def _fill(path: str, world, which: str = "priv") -> list[str]:
    """Concrete URLs for a route: its parameters set to a hidden dataset's names and ids."""
    name = {"priv": "secret-cu", "emb": "embargo-au"}[which]
    subs = {"{name}": name, "{deposit_id}": world[f"{which}_deposit"], "{config_id}": world[f"{which}_ids"][0],
            "{mid}": "m-secret", "{upload_id}": "0" * 32, "{path}": "priv.xyz", "{entry_id}": world[f"{which}_ids"][0]}
    out = path
    for k, v in subs.items():
        out = out.replace(k, v)
    out = re.sub(r"\{[^}]+\}", "x", out)
    extra = {"/api/v1/search": ['?filter=elements HAS ANY "Cu","Au"&columns=id,dataset,info'],
             "/api/v1/count": ['?filter=elements HAS ANY "Cu","Au"'],
             "/api/v1/export": ['?filter=elements HAS ANY "Cu","Au"'],
             "/api/v1/summary": ["?keys=info." + PRIVATE_KEY],
             "/api/v1/catalogue": ["?elements=Cu", "?elements=Au"],
             "/api/v1/configurations/{config_id}": ["?format=json", "?format=extxyz"],
             "/optimade/v1/structures": ['?filter=elements HAS ANY "Cu","Au"']}
    return [out + q for q in extra.get(path, [""])]


def _marks(world) -> list[str]:
    return ["secret-cu", "embargo-au", world["priv_deposit"], world["emb_deposit"], PRIVATE_KEY, "alice@example.org",
            "m-secret", "cu-secret", *world["priv_ids"], *world["emb_ids"]]


def _leaks(text: str, world, asked: str = "", status: int = 200) -> list[str]:
    """Marks of the hidden datasets in a response (an answer may echo what the caller asked for)."""
    return [m for m in _marks(world) if m in text and m not in asked]


#: every operation other than GET, with what a caller may send it; a new route must be added here
PROBES: dict[tuple[str, str], list[dict]] = {
    ("POST", "/api/v1/search"): [{"json": {"ids": "PRIV"}}, {"json": {"filter": 'elements HAS "Au"'}}],
    ("POST", "/api/v1/export"): [{"json": {"ids": "PRIV"}}, {"json": {"filter": 'elements HAS "Au"'}}],
    ("POST", "/api/v1/sql"): [{"json": {"query": "SELECT * FROM configurations WHERE dataset <> 'mlearn-si'"}},
                              {"json": {"query": "SELECT * FROM deposits"}}, {"json": {"query": "SELECT * FROM keys"}},
                              {"json": {"query": "SELECT * FROM models"}}],
    ("POST", "/api/v1/predict"): [{"json": {"model": "m-secret", "structure": "1\n\nCu 0 0 0\n"}}],
    ("PUT", "/api/v1/datasets/{name}/visibility"): [{"json": {"visibility": "public"}}],
    ("POST", "/api/v1/deposits/{deposit_id}/retract"): [{"json": {"reason": "probing"}}],
    ("POST", "/api/v1/datasets/{name}/retract"): [{"json": {"reason": "probing"}}],
    ("POST", "/api/v1/deposits"): [{"json": {"uploads": ["0" * 32], "manifest": {"dataset": "secret-cu"}}}],
    ("POST", "/api/v1/uploads"): [{"headers": {"Upload-Length": "3", "Upload-Metadata": "filename eC54eXo=",
                                               "Tus-Resumable": "1.0.0"}}],
    ("OPTIONS", "/api/v1/uploads"): [{}],
    ("HEAD", "/api/v1/uploads/{upload_id}"): [{}],
    ("PATCH", "/api/v1/uploads/{upload_id}"): [{"headers": {"Upload-Offset": "0", "Tus-Resumable": "1.0.0",
                                                            "Content-Type": "application/offset+octet-stream"},
                                                "content": b"abc"}],
    ("DELETE", "/api/v1/uploads/{upload_id}"): [{}],
    ("POST", "/api/v1/session"): [{"json": {"token": "mlk_not-a-token"}}],
    ("DELETE", "/api/v1/session"): [{}],
    # GET routes are walked with no parameters; these also with the ones that pick a dataset
    ("GET", "/api/v1/keys"): [{}, {"params": {"dataset": "secret-cu"}}, {"params": {"dataset": "embargo-au"}}],
    ("GET", "/api/v1/summary"): [{}, {"params": {"filter": 'dataset = "secret-cu"', "keys": PRIVATE_KEY}}],
}


@pytest.mark.parametrize("who", [None, "bob"])
def test_no_route_shows_hidden_data_to_others(world, who):
    """Every operation of the OpenAPI schema, as anonymous and as a user outside the group, over a
    private and an embargoed dataset and a model trained on private data."""
    headers = {"Authorization": f"Bearer {world['tokens'][who]}"} if who else {}
    ops = _operations(world["url"])
    uncovered = [op for op in ops if op[0] != "GET" and op not in PROBES]
    assert not uncovered, f"routes with no probe in PROBES: {uncovered}"
    walked = 0
    for method, route in ops + [("GET", "/optimade/v1/structures"), ("GET", "/optimade/v1/structures/{entry_id}")]:
        for which in ("priv", "emb"):
            for u in _fill(route, world, which):
                for kw in PROBES.get((method, route), [{}]):
                    if kw.get("json", {}).get("ids") == "PRIV":
                        kw = {"json": {"ids": world[f"{which}_ids"]}}
                    r = httpx.request(method, world["url"] + u, headers=headers | kw.get("headers", {}),
                                      json=kw.get("json"), content=kw.get("content"), params=kw.get("params"),
                                      timeout=60)
                    assert r.status_code < 500, (method, u, r.text[:500])
                    if method != "GET":
                        assert r.status_code in (200, 204, 400, 401, 403, 404, 422), (method, u, r.status_code)
                    asked = u + json.dumps(kw.get("json")) + json.dumps(kw.get("params"))  # may be echoed
                    assert not _leaks(r.text, world, asked, r.status_code), (method, u, _leaks(r.text, world))
                    walked += 1
    assert walked >= 60
    # and nothing was changed by the probes: still hidden from everyone but its owners
    assert client(world).count('elements HAS ANY "Cu","Au"') == 0
    assert client(world, "alice").count('elements HAS ANY "Cu","Au"') == 8


def test_owner_and_group_member_see_the_private_dataset(world):
    for who in ("alice", "carol", "root"):
        c = client(world, who)
        assert "secret-cu" in {d["dataset"] for d in c.datasets()}, who
        assert c.count('dataset = "secret-cu"') == 5
    assert client(world, "bob").count('dataset = "secret-cu"') == 0
    # the submitter's e-mail: the owner sees it, a group member does not
    assert "alice@example.org" in httpx.get(world["url"] + f"/api/v1/deposits/{world['priv_deposit']}",
                                            headers={"Authorization": f"Bearer {world['tokens']['alice']}"}).text
    assert "alice@example.org" not in httpx.get(world["url"] + f"/api/v1/deposits/{world['priv_deposit']}",
                                                headers={"Authorization": f"Bearer {world['tokens']['carol']}"}).text


# ------------------------------------------------------------------ reading


def test_cursor_pages_visit_every_row_once_in_a_stable_order(world):
    c = client(world)
    seen = []
    pages = 0
    for page in c.pages("nsites > 0", columns=["id", "dataset", "nsites"], page_size=17):
        seen += [(r["dataset"], r["id"]) for r in page]
        pages += 1
    assert len(seen) == len(set(seen)) == c.count("nsites > 0") == 239
    assert seen == sorted(seen) and pages == 15
    # a GET page's links.next is a URL that continues where it stopped
    first = httpx.get(world["url"] + "/api/v1/search", params={"filter": "nsites > 0", "limit": 100}).json()
    nxt = httpx.get(first["links"]["next"]).json()
    assert nxt["data"][0]["id"] > first["data"][-1]["id"] and first["meta"]["data_returned"] == 239


def test_structure_formats_round_trip_through_ase(world):
    from ase.io import read

    lake = world["lake"]
    cid, energy = lake.sql("SELECT config_id, energy FROM configurations WHERE dataset = 'mlearn-si' "
                           "ORDER BY config_id LIMIT 1").fetchone()
    c = client(world)
    row = c.configuration(cid)
    assert row["config_id"] == cid and row["energy"] == pytest.approx(energy)
    for fmt, ase_fmt in (("extxyz", "extxyz"), ("cif", "cif"), ("poscar", "vasp")):
        atoms = read(io.StringIO(c.configuration(cid, fmt)), format=ase_fmt)
        assert len(atoms) == row["nsites"] and set(atoms.get_chemical_symbols()) == {"Si"}, fmt
    assert read(io.StringIO(c.configuration(cid, "extxyz")), format="extxyz").get_potential_energy() == \
        pytest.approx(energy)


def test_export_downloads_every_matching_frame_mace_ready(world, tmp_path):
    from ase.io import read

    c = client(world)
    n = c.export('elements HAS "Si" AND nsites > 60', tmp_path / "si.xyz")
    frames_ = read(tmp_path / "si.xyz", index=":")
    assert n == len(frames_) == c.count('elements HAS "Si" AND nsites > 60') > 100
    assert all("REF_energy" in a.info and "REF_forces" in a.arrays for a in frames_)
    c.export('elements HAS "Si"', tmp_path / "si.parquet", format="parquet")
    t = pq.read_table(tmp_path / "si.parquet")
    assert t.num_rows == 239 and len(set(t.column("config_id").to_pylist())) == 239
    # the same rows, in the same order, as the library's own export
    world["lake"].export('elements HAS "Si"', tmp_path / "lib.parquet", format="parquet")
    assert pq.read_table(tmp_path / "lib.parquet").column("config_id") == t.column("config_id")


def test_a_download_broken_off_resumes_after_the_last_complete_frame(world, tmp_path):
    port = int(world["url"].rsplit(":", 1)[1])
    proxy = CuttingProxy(port, b"POST /api/v1/export", after=300_000, cuts=2)
    try:
        c = Client(proxy.url, progress=False)
        n = c.export('elements HAS "Si"', tmp_path / "si.xyz")
    finally:
        proxy.close()
    assert proxy.cut == 2  # the connection really broke, twice
    ids = re.findall(r"mliplake_config_id=(\w+)", (tmp_path / "si.xyz").read_text())
    assert n == len(ids) == len(set(ids)) == 239  # nothing lost, nothing twice


def test_untrusted_sql_and_errors_are_problem_documents(world):
    c = client(world)
    assert c.sql("SELECT count(*) AS n FROM configurations").column("n").to_pylist() == [239]
    cases = [
        ("GET", "/api/v1/search?filter=nsites >> 3", 400, "column"),
        ("GET", "/api/v1/search?columns=enrgy", 400, "energy"),
        ("GET", "/api/v1/search?limit=100000", 400, "limit"),
        ("GET", "/api/v1/search?cursor=%%%", 400, "cursor"),
        ("POST", "/api/v1/sql", 400, ""),
        ("GET", "/api/v1/configurations/nope", 404, "nope"),
        ("GET", "/api/v1/deposits/../../etc/passwd", 404, ""),
        ("GET", "/api/v1/leaderboard?sort=drop table", 400, "sort"),
    ]
    for method, path, status, word in cases:
        kw = {"json": {"query": "SELECT * FROM read_text('/etc/passwd')"}} if method == "POST" else {}
        r = httpx.request(method, world["url"] + path, **kw)
        assert r.status_code == status, (path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), path
        doc = r.json()
        assert doc["status"] == status and word in doc["detail"], (path, doc)
        assert "Traceback" not in r.text
    big = httpx.post(world["url"] + "/api/v1/search", json={"ids": ["x" * 64] * 10_000})
    assert big.status_code == 413 and "uploads" in big.json()["detail"]
    bad = httpx.get(world["url"] + "/api/v1/count", headers={"Authorization": "Bearer mlk_wrong"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"].startswith("Bearer")


def test_docs_and_openapi_are_served_by_the_app_itself(world):
    html = httpx.get(world["url"] + "/api/docs").text
    refs = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert refs and all(r.startswith("/") for r in refs), refs  # nothing from a CDN
    for ref in refs:
        assert httpx.get(world["url"] + ref).status_code == 200, ref
    spec = httpx.get(world["url"] + "/api/openapi.json").json()
    assert {"/api/v1/search", "/api/v1/export", "/api/v1/uploads", "/api/v1/deposits"} <= set(spec["paths"])


# ------------------------------------------------------------------ depositing


def test_deposit_over_http_reaches_stored_and_the_owner_sees_the_quarantine(world, tmp_path):
    alice = client(world, "alice")
    f = frames(tmp_path / "new.xyz", "Ge", 7, bad=1)
    status = alice.deposit([f], manifest={"dataset": "alice-ge", "license": "CC-BY-4.0", "visibility": "private"})
    assert status["status"] == "partly quarantined", status
    assert status["report"]["stored"] == 7 and status["report"]["quarantined"] == 1
    dep = status["deposit_id"]
    q = alice.quarantine(dep)
    assert len(q) == 1 and "new.xyz" in q[0]["source_file"] and q[0]["frame_index"] == 7
    # the raw file is kept byte for byte and only its owner reaches it
    raw = httpx.get(world["url"] + f"/api/v1/deposits/{dep}/files/new.xyz",
                    headers={"Authorization": f"Bearer {world['tokens']['alice']}"})
    assert raw.status_code == 200 and raw.content == f.read_bytes()
    assert httpx.get(world["url"] + f"/api/v1/deposits/{dep}/files/new.xyz").status_code == 404
    assert client(world, "bob").count('dataset = "alice-ge"') == 0
    assert alice.count('dataset = "alice-ge"') == 7
    # the owner publishes it: everyone sees it at once
    alice.set_visibility("alice-ge", "public")
    assert client(world).count('dataset = "alice-ge"') == 7
    with pytest.raises(APIError) as e:
        client(world, "bob").set_visibility("alice-ge", "private")
    assert e.value.status == 403


def test_an_upload_broken_off_resumes_where_the_server_stopped(world, tmp_path):
    f = frames(tmp_path / "big.xyz", "Sn", 3000)
    port = int(world["url"].rsplit(":", 1)[1])
    proxy = CuttingProxy(port, b"PATCH /api/v1/uploads", after=100_000, cuts=2, side="request")
    try:
        c = Client(proxy.url, token=world["tokens"]["alice"], progress=False)
        status = c.deposit([f], manifest={"dataset": "alice-sn"})
    finally:
        proxy.close()
    assert proxy.cut == 2
    assert status["status"] == "stored" and status["report"]["stored"] == 3000
    raw = client(world, "alice").request("GET", f"/api/v1/deposits/{status['deposit_id']}/files/big.xyz")
    assert raw.content == f.read_bytes()


def test_archives_unpack_safely(world, tmp_path):
    alice = client(world, "alice")
    good = tmp_path / "runs.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.write(frames(tmp_path / "a.xyz", "Pb", 3), "run1/data.xyz")
        z.write(frames(tmp_path / "b.xyz", "Bi", 4), "run2/data.xyz")  # same name, other folder: both kept
    status = alice.deposit([good], manifest={"dataset": "alice-pb"})
    assert status["status"] == "stored" and status["report"]["stored"] == 7
    files = alice._get(f"/api/v1/deposits/{status['deposit_id']}/files")["data"]
    assert sorted(x["path"] for x in files) == ["run1/data.xyz", "run2/data.xyz"]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../outside.xyz", (tmp_path / "a.xyz").read_text())
    with pytest.raises(APIError) as e:
        alice.deposit([evil], manifest={"dataset": "alice-evil"})
    assert e.value.status == 400 and "outside" in str(e.value)
    assert not list(world["tmp"].rglob("outside.xyz"))


def test_a_zip_bomb_is_refused_while_it_unpacks(world, tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.xyz", b"\0" * (100 << 20))  # 100 MB unpacked from about 100 kB
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(APIError) as e:
        client(world, "alice").deposit([bomb], manifest={"dataset": "alice-bomb"})
    assert e.value.status == 413 and "bomb.zip" in str(e.value) and "limit" in str(e.value)
    assert client(world, "alice").count('dataset = "alice-bomb"') == 0


BIG_MB = int(os.environ.get("MLIPLAKE_TEST_BIG_UPLOAD_MB", "2048"))


@pytest.mark.slow
def test_a_big_upload_cut_at_half_resumes_with_the_server_memory_flat(world, tmp_path):
    """A 2 GB upload (MLIPLAKE_TEST_BIG_UPLOAD_MB), its connection cut at 50 %: the client resumes,
    the stored bytes equal the file's, and the server's memory does not grow with the file."""
    import hashlib

    import psutil

    big = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with open(big, "wb") as f:
        for i in range(BIG_MB):
            piece = block[i % 997:] + block[:i % 997]  # no two MiB alike
            f.write(piece)
            h.update(piece)
    server = psutil.Process(world["proc"].pid)
    before, peak, done = server.memory_info().rss, [0], threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], server.memory_info().rss)

    threading.Thread(target=watch, daemon=True).start()
    port = int(world["url"].rsplit(":", 1)[1])
    proxy = CuttingProxy(port, b"PATCH /api/v1/uploads", after=(BIG_MB << 20) // 2, cuts=1, side="request")
    try:  # the proxy counts the bytes of the PATCH requests on one connection and cuts it at half the file
        upload_id = Client(proxy.url, token=world["tokens"]["alice"], progress=False).upload(big)
    finally:
        done.set()
        proxy.close()
    assert proxy.cut == 1
    stored = world["tmp"] / "lake" / "state" / "uploads" / upload_id / "data"
    g = hashlib.sha256()
    with open(stored, "rb") as f:
        while chunk := f.read(1 << 22):
            g.update(chunk)
    assert g.hexdigest() == h.hexdigest()
    assert (peak[0] - before) < 200 << 20, f"server memory grew {(peak[0] - before) >> 20} MB for {BIG_MB} MB"
    httpx.delete(world["url"] + f"/api/v1/uploads/{upload_id}",
                 headers={"Authorization": f"Bearer {world['tokens']['alice']}", "Tus-Resumable": "1.0.0"})


def test_the_client_sends_less_per_request_to_a_server_that_takes_less(tmp_path):
    """A server whose ``upload_chunk_max`` is below the client's request size answers 413 after
    keeping what fit: the client goes on with smaller requests, and the file arrives whole."""
    lake = mliplake.Lake(tmp_path / "lake")
    acc = Accounts(accounts_url(lake.settings, lake))
    acc.add_user("dora", roles=["depositor"], actor="test")
    token = acc.create_token("dora", scope="write", actor="test")[1]
    acc.close()
    data = os.urandom(5 << 20)
    (tmp_path / "f.bin").write_bytes(data)
    proc, url = start_api(tmp_path / "lake", {"MLIPLAKE_UPLOAD_CHUNK_MAX": str(2 << 20)})
    try:
        upload_id = Client(url, token=token, progress=False).upload(tmp_path / "f.bin")
    finally:
        stop(proc)
    assert (tmp_path / "lake" / "state" / "uploads" / upload_id / "data").read_bytes() == data


def test_every_client_method_against_the_server(world, tmp_path):
    alice, anon = client(world, "alice"), client(world)
    assert alice.me()["name"] == "alice" and anon.me()["kind"] == "anonymous"
    assert alice.dataset("secret-cu")["configurations"] == 5
    with pytest.raises(APIError) as e:
        anon.dataset("secret-cu")
    assert e.value.status == 404
    assert {k["key"] for k in alice.keys()} >= {"energy", PRIVATE_KEY}
    assert PRIVATE_KEY not in {k["key"] for k in anon.keys()}
    s = anon.summary('dataset = "mlearn-si"', keys=["energy_per_atom"], bins=5)
    assert s["count"] == 239 and len(s["numeric"][0]["histogram"]) == 5
    assert anon.catalogue(elements=["Si"])["data"][0]["dataset"] == "mlearn-si"
    assert "secret-cu" in {d["dataset"] for d in alice.deposits()}
    assert alice.record(world["priv_deposit"])["stored"] == 5
    assert [m["model_id"] for m in alice.models()] == ["m-secret"] and anon.models() == []
    assert alice.model("m-secret")["name"] == "cu-secret"
    assert len(anon.search('elements HAS "Si"', columns=["id"], limit=10)) == 10
    atoms = list(anon.atoms('dataset = "mlearn-si" AND nsites < 60'))
    assert len(atoms) == anon.count('dataset = "mlearn-si" AND nsites < 60') > 0
    assert all(a.get_chemical_symbols()[0] == "Si" and "REF_energy" in a.info for a in atoms)
    f = frames(tmp_path / "r.xyz", "Mo", 2)
    status = alice.deposit([f], manifest={"dataset": "alice-mo"})
    assert alice.retract(status["deposit_id"], reason="a test of retraction") == [status["deposit_id"]]
    assert alice.count('dataset = "alice-mo"') == 0
    with pytest.raises(APIError) as e:
        client(world, "bob").retract(world["priv_deposit"], reason="not mine")
    assert e.value.status in (403, 404)


def test_deposits_need_a_write_token_and_a_depositor(world, tmp_path):
    f = frames(tmp_path / "x.xyz", "Ag", 2)
    for who, status in ((None, 401), ("alice-read", 403), ("bob", 403)):
        with pytest.raises(APIError) as e:
            Client(world["url"], token=world["tokens"][who] if who else "", progress=False, retries=0).upload(f)
        assert e.value.status == status, who
    r = httpx.post(world["url"] + "/api/v1/deposits", json={"uploads": ["0" * 32], "manifest": {"dataset": "x"}},
                   headers={"Authorization": f"Bearer {world['tokens']['alice']}"})
    assert r.status_code == 404  # an upload that is not the caller's does not exist for them
    r = httpx.post(world["url"] + "/api/v1/deposits", json={"uploads": [], "manifest": {"dataset": "bad name!"}},
                   headers={"Authorization": f"Bearer {world['tokens']['alice']}"})
    assert r.status_code in (400, 422) and r.json()["detail"]


# ------------------------------------------------------------------ limits


def test_rate_limit_answers_429_with_retry_after_and_the_client_waits(tmp_path):
    lake = mliplake.Lake(tmp_path / "lake")
    deposit_sample(lake, "mlearn")
    proc, url = start_api(tmp_path / "lake", {"MLIPLAKE_API_RATE": "0.2", "MLIPLAKE_API_BURST": "3"})
    try:
        codes = [httpx.get(url + "/api/v1/count").status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
        r = httpx.get(url + "/api/v1/count")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "per second" in r.json()["detail"]
        assert Client(url, progress=False).count() == 239  # backs off as told, then succeeds
    finally:
        stop(proc)


def test_client_reports_problems_by_name(world):
    with pytest.raises(APIError) as e:
        client(world).count("nsites >")
    assert e.value.status == 400 and "ends too early" in str(e.value) and "^" in str(e.value)  # where it went wrong
    assert e.value.problem["title"] == "Bad filter"


def test_the_command_line_goes_through_the_api_with_server(world, tmp_path):
    from click.testing import CliRunner

    from mliplake.cli import main

    run = CliRunner()
    env = {"MLIPLAKE_SERVER": world["url"], "MLIPLAKE_TOKEN": world["tokens"]["carol"],
           "MLIPLAKE_LAKE": str(tmp_path / "no-lake-here")}  # nothing is read from a lake on this machine
    out = run.invoke(main, ["search", "--count", 'dataset = "secret-cu"'], env=env)
    assert out.exit_code == 0 and out.output.strip() == "5", out.output  # carol is in g1
    out = run.invoke(main, ["--server", world["url"], "search", "--count", 'dataset = "secret-cu"'],
                     env={"MLIPLAKE_TOKEN": ""})
    assert out.output.strip() == "0"  # anonymous
    out = run.invoke(main, ["export", "-f", "nsites > 60", "-o", str(tmp_path / "x.xyz")], env=env)
    assert out.exit_code == 0 and out.output.startswith("226 configurations"), out.output
    out = run.invoke(main, ["summary", "-k", "energy_per_atom", "-f", 'elements HAS "Si"'], env=env)
    assert out.exit_code == 0 and "energy_per_atom" in out.output and "239" in out.output, out.output
    f = frames(tmp_path / "cli.xyz", "Zn", 3)
    out = run.invoke(main, ["deposit", str(f), "-d", "alice-zn"], env=env | {"MLIPLAKE_TOKEN": world["tokens"]["alice"]})
    assert out.exit_code == 0 and "stored" in out.output and "stored 3" in out.output, out.output
    out = run.invoke(main, ["maintain"], env=env)
    assert out.exit_code != 0 and "not through --server" in out.output
    out = run.invoke(main, ["search", "nsites >"], env=env)
    assert out.exit_code == 1 and "Bad filter" in out.output and "Traceback" not in out.output


@pytest.mark.xdist_group("dagster")
def test_http_deposits_go_through_dagster_when_it_runs_the_inbox(tmp_path):
    """api_ingest = dagster: the API only puts the deposit into the inbox; the sensor's run ingests it."""
    import dagster as dg

    from pipelines.definitions import defs
    from pipelines.defs.resources import LakeResource
    from pipelines.demo import run_inbox

    lake = mliplake.Lake(tmp_path / "lake")
    acc = Accounts(accounts_url(lake.settings, lake))
    acc.add_user("dora", roles=["depositor"], actor="test")
    token = acc.create_token("dora", scope="write", actor="test")[1]
    acc.close()
    proc, url = start_api(tmp_path / "lake", {"MLIPLAKE_API_INGEST": "dagster"})
    try:
        c = Client(url, token=token, progress=False)
        status = c.deposit([frames(tmp_path / "d.xyz", "Ti", 4)], manifest={"dataset": "dora-ti",
                                                                           "visibility": "private"}, wait=False)
        assert c.status(status["id"])["status"] == "received"  # nobody has taken it yet
        with dg.instance_for_test() as instance:
            runs = run_inbox(defs, instance, {"lake": LakeResource(url=lake.url)})
        assert len(runs) == 1
        done = c.status(status["id"])
        assert done["status"] == "stored" and done["report"]["stored"] == 4, done
        assert c.count('dataset = "dora-ti"') == 4 and Client(url, progress=False).count('dataset = "dora-ti"') == 0
        assert lake.policy("dora-ti").owner == "dora"  # the account owns what it deposited, whoever ingested it
    finally:
        stop(proc)


def _blocks(lang: str) -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    examples = text[text.index("## Examples"):]
    return re.findall(rf"```{lang}\n(.*?)```", examples, re.S)


def test_the_examples_in_docs_api_md_run_against_a_live_server(world, tmp_path):
    import subprocess
    import sys

    frames(tmp_path / "train.xyz", "Ga", 4)
    env = dict(os.environ, MLIPLAKE_SERVER=world["url"], MLIPLAKE_TOKEN=world["tokens"]["alice"])
    bash, python = _blocks("bash"), _blocks("python")
    assert len(bash) == 2 and len(python) == 1
    for block in bash:
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, (block, out.stdout[-2000:], out.stderr[-2000:])
    assert (tmp_path / "si.xyz").read_text().count("mliplake_config_id=") == 239
    assert client(world, "alice").count('dataset = "my-data"') == 4
    out = subprocess.run([sys.executable, "-c", python[0]], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["239 silicon configurations", "stored 4 stored", "4 5"], out.stdout
