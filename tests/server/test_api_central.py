"""The central install from the same settings: the API over a lake on S3 (moto), its DuckLake
catalog and the accounts in PostgreSQL (a real server from Debian's packages), two API processes
at once sharing them."""
from __future__ import annotations

import uuid

import httpx
import pytest
from support import make_bucket, sample_files, start_api, stop
from support.pg_server import pg_url_fixture

import mliplake
from mliplake.accounts import Accounts
from mliplake.client import Client

pg_url = pg_url_fixture()
pytestmark = pytest.mark.slow


def _database(url: str, name: str) -> str:
    """A new database on the server of ``url``; its libpq connection string."""
    import psycopg

    u = httpx.URL(url.replace("postgresql+psycopg://", "http://"))
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"dbname={name} host={u.host} port={u.port} user={u.username}"


def test_api_on_s3_with_catalog_and_accounts_in_postgresql(s3_endpoint, pg_url, tmp_path):
    lake_url = f"s3://{make_bucket(s3_endpoint)}/lake"
    catalog = "postgres:" + _database(pg_url, f"cat_{uuid.uuid4().hex[:8]}")
    acc = Accounts(pg_url)
    name = f"u{uuid.uuid4().hex[:8]}"
    acc.add_user(name, roles=["depositor"], actor="test")
    token = acc.create_token(name, scope="write", actor="test")[1]
    acc.close()
    env = {"MLIPLAKE_CATALOG": catalog, "MLIPLAKE_ACCOUNTS": pg_url, "MLIPLAKE_STATE_DIR": str(tmp_path / "state")}
    (p1, url1), (p2, url2) = start_api(lake_url, env), start_api(lake_url, env)
    try:
        c1, c2 = Client(url1, token=token, progress=False), Client(url2, token=token, progress=False)
        status = c1.deposit(sample_files("mlearn"), manifest={"dataset": "si-central", "license": "BSD-3-Clause",
                                                              "visibility": "private"})
        assert status["status"] == "stored" and status["report"]["stored"] == 239, status
        # the other process sees the commit at once (one catalog), and the token (one accounts database)
        assert c2.count('dataset = "si-central"') == 239
        assert Client(url2, progress=False).count('dataset = "si-central"') == 0  # private: not for anonymous
        ids = [r["id"] for page in c2.pages('dataset = "si-central"', page_size=100) for r in page]
        assert len(ids) == len(set(ids)) == 239
        assert c1.export('dataset = "si-central"', tmp_path / "si.xyz") == 239
        # the library reads the same tables with the same settings
        lake = mliplake.Lake(lake_url, mliplake.settings.Settings(catalog=catalog))
        assert lake.count('dataset = "si-central"') == 239 and lake.policy("si-central").owner == name
        revoked = Accounts(pg_url)
        tid = revoked.tokens(name)[0]["id"]
        revoked.revoke_token(tid, actor="test")
        revoked.close()
        assert httpx.get(url2 + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    finally:
        stop(p1)
        stop(p2)
