"""Helpers the tests share: the bundled samples, a free port, an S3 bucket, osmem-server.

Imported by the tests and by conftest.py alike (fixtures stay in conftest.py)."""
from __future__ import annotations

import socket
import uuid
from pathlib import Path

from mliplake.cli import sample_dir

SAMPLES = {name: sample_dir(name) for name in ("3bpa", "rmd17", "mlearn")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_bucket(endpoint: str) -> str:
    import s3fs

    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(endpoint_url=endpoint).mkdir(bucket)
    return bucket


def sample_files(name: str) -> list[Path]:
    return sorted(p for p in SAMPLES[name].iterdir() if p.suffix in (".xyz", ".json"))


def deposit_sample(lake, name: str):
    return lake.deposit(sample_files(name), manifest=SAMPLES[name] / "manifest.yaml")


def start_osmem(port: int = 0):
    """osmem-server (PyPI: an in-memory OpenSearch-API server) in its own process on 127.0.0.1.

    Port 0 lets the server pick a free port; pass the port of a stopped one to restart it there.
    The server exits with this process (``--parent-pid``) even if a test dies before stopping it.
    """
    from osmem_server import OsmemServer

    return OsmemServer.start(addr=f"127.0.0.1:{port}", japanese=False)
