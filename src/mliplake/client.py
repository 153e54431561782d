"""``mliplake.Client``: the REST API from Python, with the :class:`~mliplake.lake.Lake` method names.

    client = mliplake.Client("https://mliplake.example.org", token="mlk_...")
    client.count('elements HAS "Si"')
    client.export('elements HAS "Si"', "si.xyz")          # streamed, resumed if it breaks off
    report = client.deposit(["run1.xyz"], manifest="manifest.yaml")   # resumable uploads

Every request is retried with back-off on 429 and 503 (honouring ``Retry-After``) and on
broken connections; errors are raised as :class:`APIError` with the server's problem document.
"""
from __future__ import annotations

import base64
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

CHUNK = 64 << 20  # bytes per upload request (fewer requests: each one costs a round trip and a save)
PIECE = 1 << 20  # a request's body is read from the file and sent this much at a time
CHUNK_MIN = 1 << 20  # a server that refuses CHUNK (413) gets smaller requests, down to this


class APIError(RuntimeError):
    """An error answer of the API (its RFC 9457 problem document in ``problem``)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status, self.problem = status, problem
        title = problem.get("title") or f"HTTP {status}"
        detail = problem.get("detail") or ""
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))


class Client:
    """The API of one mliplake service.  ``token``: default ``$MLIPLAKE_TOKEN``."""

    def __init__(self, url: str | None = None, token: str | None = None, retries: int = 6, timeout: float = 120.0,
                 progress: bool | None = None) -> None:
        url = url or os.environ.get("MLIPLAKE_SERVER", "")
        if not url:
            raise ValueError("Client needs the service's URL (or MLIPLAKE_SERVER)")
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get("MLIPLAKE_TOKEN") or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, follow_redirects=False)
        self.retries, self.progress = retries, progress

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request, retried on 429/503 (after ``Retry-After``) and on dropped connections."""
        for attempt in range(self.retries + 1):
            try:
                r = self.http.request(method, path, **kw)
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise ConnectionError(f"{method} {self.url}{path}: {e}") from None
                time.sleep(_backoff(attempt))
                continue
            if r.status_code in (429, 503) and attempt < self.retries:
                time.sleep(_retry_after(r) or _backoff(attempt))
                continue
            if r.status_code >= 400:
                raise APIError(r.status_code, _problem(r))
            return r
        raise AssertionError("unreachable")

    def _get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body).json()

    # ------------------------------------------------------------------ reading

    def me(self) -> dict[str, Any]:
        return self._get("/api/v1/me")["data"]

    def datasets(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/datasets")["data"]

    def dataset(self, name: str) -> dict[str, Any]:
        return self._get(f"/api/v1/datasets/{name}")["data"]

    def keys(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/keys")["data"]

    def summary(self, filter: str | None = None, keys: list[str] | None = None, bins: int = 30) -> dict[str, Any]:
        return self._get("/api/v1/summary", filter=filter or "", keys=",".join(keys or []) or None, bins=bins)["data"]

    def count(self, filter: str | None = None) -> int:
        return int(self._get("/api/v1/count", filter=filter or "")["data"]["count"])

    def pages(self, filter: str | None = None, columns: list[str] | None = None, page_size: int = 500,
              ids: list[str] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Every matching row, a page at a time (cursor pagination: no depth limit, stable order)."""
        body: dict[str, Any] = {"filter": filter or "", "columns": columns, "limit": page_size, "ids": ids}
        while True:
            out = self._post("/api/v1/search", body)
            yield out["data"]
            cursor = out["meta"].get("next_cursor")
            if not cursor:
                return
            body["cursor"] = cursor

    def search(self, filter: str | None = None, columns: list[str] | None = None, limit: int | None = None,
               ids: list[str] | None = None) -> Any:
        """Matching rows as an Arrow table (``limit`` None: all of them, page by page)."""
        import pyarrow as pa

        rows: list[dict[str, Any]] = []
        size = min(limit, 1000) if limit else 1000
        for page in self.pages(filter, columns, size, ids):
            rows += page
            if limit is not None and len(rows) >= limit:
                rows = rows[:limit]
                break
        return pa.Table.from_pylist(rows)

    def configuration(self, config_id: str, format: str = "json") -> Any:
        r = self.request("GET", f"/api/v1/configurations/{config_id}", params={"format": format})
        return r.json()["data"] if format == "json" else r.text

    def sql(self, query: str, max_rows: int | None = None) -> Any:
        import pyarrow as pa

        out = self._post("/api/v1/sql", {"query": query, "max_rows": max_rows})
        return pa.Table.from_pylist(out["data"]) if out["data"] else pa.table({c: [] for c in out["meta"]["columns"]})

    def catalogue(self, text: str = "", elements: list[str] | None = None, mode: str = "all") -> dict[str, Any]:
        return self._get("/api/v1/catalogue", q=text, elements=",".join(elements or []) or None, mode=mode)

    def deposits(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/deposits")["data"]

    def record(self, deposit_id: str) -> dict[str, Any]:
        return self._get(f"/api/v1/deposits/{deposit_id}")["data"]

    def quarantine(self, deposit_id: str) -> list[dict[str, Any]]:
        return self._get(f"/api/v1/deposits/{deposit_id}/quarantine")["data"]

    def models(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/models")["data"]

    def model(self, model_id: str) -> dict[str, Any]:
        return self._get(f"/api/v1/models/{model_id}")["data"]

    def lineage(self, model_id: str) -> dict[str, Any]:
        return self._get(f"/api/v1/models/{model_id}/lineage")["data"]

    def leaderboard(self, sort: str = "forces_mae", descending: bool = False) -> list[dict[str, Any]]:
        return self._get("/api/v1/leaderboard", sort=sort, descending=str(descending).lower())["data"]

    def predict(self, model_id: str, structure: str | Path | Any, format: str | None = None,
                relax: bool = False) -> dict[str, Any]:
        """Energy, forces (and stress) of a structure: POSCAR/extxyz/CIF text, a file, or an ASE Atoms."""
        text = _structure_text(structure)
        return self._post("/api/v1/predict", {"model": model_id, "structure": text, "format": format,
                                              "relax": relax})["data"]

    # ------------------------------------------------------------------ downloads

    def export(self, filter: str | None, out: str | Path, format: str = "extxyz", ids: list[str] | None = None,
               original_keys: bool = False) -> int:
        """Download every matching configuration to ``out`` (streamed; no entry cap).

        A download that breaks off is resumed: extxyz after its last complete frame, at the same
        lake version; Parquet and Arrow from the start.  Returns the number of configurations."""
        out = Path(out)
        part = out.with_name(f".{out.name}.partial")
        body: dict[str, Any] = {"filter": filter or "", "format": format, "ids": ids, "original_keys": original_keys}
        bar = self._bar(None, "cfg" if format == "extxyz" else "B", f"export {out.name}")
        total = 0
        for attempt in range(self.retries + 1):
            try:
                with open(part, "ab" if body.get("skip") else "wb") as f, \
                        self.http.stream("POST", "/api/v1/export", json=body) as r:
                    if r.status_code >= 400:
                        r.read()
                        if r.status_code in (429, 503) and attempt < self.retries:
                            time.sleep(_retry_after(r) or _backoff(attempt))
                            continue
                        raise APIError(r.status_code, _problem(r))
                    body["version"] = int(r.headers["x-lake-version"])  # a resumed download reads the same rows
                    total = int(r.headers.get("x-total-count", 0))
                    if bar is not None and format == "extxyz":
                        bar.total = total
                    for chunk in r.iter_bytes():
                        f.write(chunk)
                        if bar is not None:
                            bar.update(_frames_in(chunk) if format == "extxyz" else len(chunk))
                break
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                body["skip"] = _keep_complete_frames(part) if format == "extxyz" else 0
                time.sleep(_backoff(attempt))
        part.replace(out)
        if bar is not None:
            bar.close()
        return _count_frames(out) if format == "extxyz" else total

    def atoms(self, filter: str | None = None) -> Iterator[Any]:
        """Matching configurations as ASE ``Atoms`` (through an extxyz download to a temporary file)."""
        import tempfile

        from ase.io import iread

        with tempfile.TemporaryDirectory(prefix="mliplake-") as tmp:
            path = Path(tmp) / "atoms.xyz"
            self.export(filter, path)
            yield from iread(str(path), format="extxyz")

    # ------------------------------------------------------------------ deposits

    def upload(self, path: str | Path) -> str:
        """Upload one file (tus 1.0), resuming after broken connections; returns the upload id."""
        path = Path(path)
        size = path.stat().st_size
        meta = "filename " + base64.b64encode(path.name.encode()).decode()
        r = self.request("POST", "/api/v1/uploads", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(size),
                                                               "Upload-Metadata": meta})
        location = r.headers["location"]
        upload_id = location.rstrip("/").rsplit("/", 1)[1]
        bar = self._bar(size, "B", f"upload {path.name}")
        offset = shown = 0  # shown: where the progress bar is (it moves as pieces are sent)
        failures = 0
        chunk = CHUNK

        def sent(k: int) -> None:
            nonlocal shown
            if bar is not None:
                bar.update(k)
            shown += k

        with open(path, "rb") as f:
            while offset < size:
                n = min(chunk, size - offset)
                try:  # the body streams from the file: no copy of the request in memory
                    r = self.http.patch(location, content=_file_pieces(f, offset, n, sent), headers={
                        "Tus-Resumable": "1.0.0", "Upload-Offset": str(offset), "Content-Length": str(n),
                        "Content-Type": "application/offset+octet-stream"})
                except httpx.TransportError:
                    r = None
                if r is not None and r.status_code == 204:
                    offset, failures = int(r.headers["upload-offset"]), 0
                    sent(offset - shown)
                    continue
                if r is not None and r.status_code == 413 and chunk > CHUNK_MIN:
                    chunk = max(CHUNK_MIN, chunk // 4)  # the server takes less per request: send less
                elif r is not None and r.status_code not in (409, 423, 429, 503) and r.status_code < 500:
                    raise APIError(r.status_code, _problem(r))
                else:
                    failures += 1
                    if failures > self.retries:
                        raise ConnectionError(f"upload of {path.name} kept failing at byte {offset}")
                    time.sleep((_retry_after(r) if r is not None else 0) or _backoff(failures))
                head = self.request("HEAD", location, headers={"Tus-Resumable": "1.0.0"})
                offset = int(head.headers["upload-offset"])  # what the server kept: go on from there
                sent(offset - shown)
        if bar is not None:
            bar.close()
        return upload_id

    def deposit(self, paths: list[str | Path] | str | Path, manifest: str | Path | dict[str, Any] | None = None,
                dataset: str | None = None, wait: bool = True, timeout: float = 3600.0) -> dict[str, Any]:
        """Upload files (archives are unpacked by the server) and deposit them with a manifest.

        Returns the deposit's status; with ``wait`` it polls until processing ends (stored, partly
        quarantined, quarantined, empty, rejected or failed)."""
        import yaml

        if isinstance(paths, (str, Path)):
            paths = [paths]
        if isinstance(manifest, (str, Path)):
            manifest = yaml.safe_load(Path(manifest).read_text())
        manifest = dict(manifest or {})
        if dataset:
            manifest["dataset"] = dataset
        ids = [self.upload(p) for p in paths]
        status = self._post("/api/v1/deposits", {"uploads": ids, "manifest": manifest})["data"]
        return self.wait(status["id"], timeout) if wait else status

    def status(self, name: str) -> dict[str, Any]:
        return self._get(f"/api/v1/intake/{name}")["data"]

    def wait(self, name: str, timeout: float = 3600.0) -> dict[str, Any]:
        end, delay = time.time() + timeout, 0.2
        while True:
            s = self.status(name)
            if s["status"] not in ("received", "staging", "staged", "ingesting"):
                return s
            if time.time() > end:
                raise TimeoutError(f"deposit {name} still {s['status']} after {timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    def set_visibility(self, dataset: str, visibility: str, groups: list[str] | None = None,
                       embargo_until: str | None = None) -> dict[str, Any]:
        return self.request("PUT", f"/api/v1/datasets/{dataset}/visibility", json={
            "visibility": visibility, "groups": groups, "embargo_until": embargo_until}).json()["data"]

    def retract(self, deposit_id: str, reason: str, purge: bool = False) -> list[str]:
        return self._post(f"/api/v1/deposits/{deposit_id}/retract", {"reason": reason, "purge": purge})["data"]["retracted"]

    def _bar(self, total: int | None, unit: str, desc: str) -> Any:
        if self.progress is False:
            return None
        from tqdm import tqdm

        return tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=desc, leave=False,
                    disable=None if self.progress is None else not self.progress)


def _file_pieces(f: Any, offset: int, n: int, sent: Any) -> Iterator[bytes]:
    """``n`` bytes of the open file ``f`` from ``offset``, ``PIECE`` bytes at a time; ``sent(k)``
    after each piece is handed to the connection."""
    f.seek(offset)
    while n > 0:
        piece = f.read(min(PIECE, n))
        if not piece:
            raise OSError(f"{f.name}: shorter than when the upload began")
        n -= len(piece)
        yield piece
        sent(len(piece))


def _backoff(attempt: int) -> float:
    return min(30.0, 0.25 * 2 ** attempt) * (0.5 + random.random())


def _retry_after(r: httpx.Response | None) -> float:
    if r is None:
        return 0.0
    value = r.headers.get("retry-after", "")
    try:
        return min(300.0, max(0.0, float(value)))
    except ValueError:
        return 0.0


def _problem(r: httpx.Response) -> dict[str, Any]:
    try:
        doc = r.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return {"title": r.reason_phrase, "detail": r.text[:500]}
    if isinstance(doc, dict) and "errors" in doc and "title" not in doc:  # OPTIMADE's error document
        err = (doc.get("errors") or [{}])[0]
        return {"title": err.get("title", r.reason_phrase), "detail": err.get("detail", "")}
    return doc if isinstance(doc, dict) else {"title": r.reason_phrase}


def _frames_in(chunk: bytes) -> int:
    return chunk.count(b"mliplake_config_id=")


def _count_frames(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(_frames_in(chunk) for chunk in iter(lambda: f.read(1 << 22), b""))


def _keep_complete_frames(part: Path) -> int:
    """Cut a partial extxyz download after its last complete frame; how many frames it keeps."""
    if not part.exists():
        return 0
    frames, end, pos = 0, 0, 0
    with open(part, "rb") as f:
        data = f.read()
    while pos < len(data):
        nl = data.find(b"\n", pos)
        head = data[pos:nl].strip() if nl >= 0 else b""
        if nl < 0 or not head.isdigit():
            break
        stop = nl
        for _ in range(int(head) + 1):  # the comment line and one line per atom
            stop = data.find(b"\n", stop + 1)
            if stop < 0:
                break
        if stop < 0:
            break  # this frame is incomplete
        pos = end = stop + 1
        frames += 1
    with open(part, "r+b") as f:
        f.truncate(end)
    return frames


def _structure_text(structure: Any) -> str:
    if isinstance(structure, Path) or (isinstance(structure, str) and "\n" not in structure and Path(structure).is_file()):
        return Path(structure).read_text()
    if isinstance(structure, str):
        return structure
    import io

    from ase.io import write

    buf = io.StringIO()
    write(buf, structure, format="extxyz")
    return buf.getvalue()
