"""Shared fixtures: bundled samples, lakes on a local folder and on a real S3 endpoint (moto server)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from support import SAMPLES, deposit_sample, free_port, make_bucket, sample_files, start_osmem  # noqa: F401

import mliplake


@pytest.fixture(scope="session", autouse=True)
def _private_state_dir(tmp_path_factory):
    """Catalogs of S3 lakes (kept per machine) go to a folder of the test session's own."""
    os.environ["MLIPLAKE_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    from mliplake.settings import reload_settings

    reload_settings()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3 HTTP endpoint: moto's server in its own process on 127.0.0.1."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or "moto_server"
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"moto server did not start: {log.read_text()}")
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": url}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield url
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(10)


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path):
    """An empty lake, on a local folder and on S3 (moto server)."""
    if request.param == "local":
        return mliplake.Lake(tmp_path / "lake")
    endpoint = request.getfixturevalue("s3_endpoint")
    return mliplake.Lake(f"s3://{make_bucket(endpoint)}/lake")


@pytest.fixture
def local_lake(tmp_path):
    return mliplake.Lake(tmp_path / "lake")


@pytest.fixture(scope="session")
def samples_lake(tmp_path_factory):
    """The three samples deposited once per test process; read-only for the tests that share it."""
    lake = mliplake.Lake(tmp_path_factory.mktemp("samples") / "lake")
    for name in SAMPLES:
        deposit_sample(lake, name)
    return lake


# ---------------------------------------------------------------- OpenSearch (osmem-server)


@pytest.fixture(scope="session")
def opensearch_url():
    """A real OpenSearch API: ``$MLIPLAKE_TEST_OPENSEARCH_URL`` if set (nothing is started), else osmem-server."""
    external = os.environ.get("MLIPLAKE_TEST_OPENSEARCH_URL")
    if external:
        yield external
        return
    server = start_osmem()
    yield server.url
    server.close()
