"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package (``initdb`` and
``postgres``), started in the foreground under a temporary folder on a free port of 127.0.0.1
with its own socket folder, so nothing on the machine is touched; stopped at the end.

``initdb`` refuses to run as root: as root the server runs as the ``postgres`` system user (which
the Debian package creates), else ``nobody``; the folder is made in /tmp and handed to that user.
Not as root, it runs as whoever runs the tests.  Nothing is installed from here: with no binaries
the tests that need the server are skipped, saying why (``apt-get install -y postgresql``).

Use :func:`pg_url_fixture` in a test module::

    from pg_server import pg_url_fixture
    pg_url = pg_url_fixture()
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BINARIES = ("initdb", "postgres")


def bindir() -> Path | None:
    """The folder with ``initdb`` and ``postgres``: on PATH, else Debian's /usr/lib/postgresql/N/bin (newest)."""
    found = shutil.which("initdb")
    if found and Path(found).with_name("postgres").exists():
        return Path(found).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version(p), reverse=True):
        if all(Path(d, b).exists() for b in BINARIES):
            return Path(d)
    return None


def _version(path: str) -> int:
    try:
        return int(Path(path).parent.name.split(".")[0])
    except ValueError:
        return 0


def server_user() -> str | None:
    """Whom the server runs as: None (the current user) unless root, then ``postgres`` or ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return ""


def available() -> str:
    """Empty when a server can start here, else why not."""
    if bindir() is None:
        return ("PostgreSQL is not installed (no initdb/postgres on PATH or in /usr/lib/postgresql/*/bin; "
                "`apt-get install -y postgresql` installs them)")
    if server_user() == "":
        return "running as root and neither a 'postgres' nor a 'nobody' user exists to run the server as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """One throw-away server; ``start()`` returns a SQLAlchemy URL of a fresh database on it."""

    def __init__(self, database: str = "mliplake_test") -> None:
        self.bin = bindir()
        self.user = server_user()
        self.database = database
        self.root = Path(tempfile.mkdtemp(prefix="mliplake-pg-"))  # /tmp: the server user can reach it
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def _as_user(self) -> dict:
        if not self.user:
            return {}
        pw = pwd.getpwnam(self.user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
                "env": {**os.environ, "HOME": str(self.root), "USER": self.user, "LOGNAME": self.user}}

    def start(self, timeout: float = 60.0) -> str:
        assert self.bin is not None, available()
        data, sock, log = self.root / "data", self.root / "sock", self.root / "postgres.log"
        sock.mkdir()
        if self.user:
            pw = pwd.getpwnam(self.user)
            for p in (self.root, sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)
        init = subprocess.run([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                               "-E", "UTF8", "--no-locale", "--no-sync"], capture_output=True, text=True,
                              cwd=self.root, **self._as_user())
        if init.returncode:
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr or init.stdout}")
        self.port = _free_port()
        with open(log, "wb") as out:
            if self.user:
                os.chown(log, pwd.getpwnam(self.user).pw_uid, -1)
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(data), "-k", str(sock), "-p", str(self.port),
                 "-h", "127.0.0.1", "-F", "-c", "max_connections=40", "-c", "shared_buffers=16MB"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True, **self._as_user())
        import psycopg

        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}): {log.read_text()[-2000:]}")
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                     connect_timeout=2, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{self.database}"')
                break
            except psycopg.OperationalError:
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"postgres did not accept connections in {timeout:.0f} s: "
                                       f"{log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        return self.url()

    def url(self, database: str | None = None) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database or self.database}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, exits cleanly
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def pg_url_fixture(name: str = "pg_url"):
    """A session fixture (named ``name``) that starts a server, yields the URL of a database on it,
    and stops it at the end; tests using it skip, saying why, where PostgreSQL cannot run."""

    @pytest.fixture(scope="session", name=name)
    def _pg_url():
        why = available()
        if why:
            pytest.skip(why)
        server = LocalPostgres()
        try:
            yield server.start()
        finally:
            server.stop()

    return _pg_url
