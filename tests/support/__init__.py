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


def start_api(lake_dir, env: dict | None = None, timeout: float = 60.0):
    """``mliplake serve`` for real: uvicorn in its own process on 127.0.0.1; returns (process, url)."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    full = dict(os.environ, MLIPLAKE_LAKE=str(lake_dir), **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "mliplake.server.asgi:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning",
                             "--timeout-graceful-shutdown", "3"], env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited: {proc.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/api/v1/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the API did not start in time")


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except Exception:  # noqa: BLE001
        proc.kill()


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 that breaks connections for real: the first ``cuts`` connections
    whose request starts with ``match`` are closed after ``after`` bytes of the response (or of the
    request, with ``side="request"``).  What a dropped Wi-Fi or a restarted load balancer does."""

    def __init__(self, target_port: int, match: bytes, after: int, cuts: int = 1, side: str = "response") -> None:
        import socket
        import threading

        self.target, self.match, self.after, self.cuts, self.side = target_port, match, after, cuts, side
        self.cut = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            state = {"cut": None}
            threading.Thread(target=self._pipe, args=(client, upstream, "request", state), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, "response", state), daemon=True).start()

    def _pipe(self, src, dst, side: str, state: dict) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if side == "request" and not state["cut"] and data.startswith(self.match) and self.cut < self.cuts:
                    state["cut"] = True  # this request (perhaps not the connection's first) is cut
                    self.cut += 1
                    sent = 0
                if state["cut"] and side == self.side:
                    room = self.after - sent
                    if room <= 0 or len(data) > room:
                        dst.sendall(data[:max(room, 0)])
                        raise ConnectionAbortedError
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            import socket

            for s in (src, dst):  # shutdown first: a close alone leaves the other thread's recv holding it open
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.sock.close()


def tiny_frames(path, symbol: str, n: int, key: str | None = None, bad: int = 0, offset: float = 0.0):
    """``n`` two-atom extxyz frames of ``symbol`` (distinct positions and energies, shifted by
    ``offset`` to make other frames), an info ``key`` with the frame's number if given, and ``bad``
    broken frames after them (quarantined)."""
    with open(path, "w") as f:
        for i in range(n):
            extra = f" {key}={i}" if key else ""
            f.write(f'2\nLattice="6 0 0 0 6 0 0 0 6" Properties=species:S:1:pos:R:3:forces:R:3 '
                    f'energy={-2.0 - i * 0.01 - offset:.5f}{extra} pbc="T T T"\n'
                    f"{symbol} 0 0 0 0.1 0 0\n{symbol} 1.1 {0.1 * i + offset:.4f} 0 -0.1 0 0\n")
        for _ in range(bad):  # 2 atoms declared, 1 given
            f.write("2\nenergy=1 Properties=species:S:1:pos:R:3\nCu 0 0 0\n")
    return path
