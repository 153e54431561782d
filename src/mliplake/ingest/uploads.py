"""Resumable uploads (the tus 1.0 protocol's model) and safe unpacking of uploaded archives.

An upload is created with its full length, then receives its bytes in pieces, each sent with the
offset it starts at; after a broken connection the client asks for the offset (``HEAD`` in tus) and
goes on from there.  Bytes go straight to a file on the server's disk, never into memory whole.

Invariants:
* an upload belongs to the account that created it; nobody else can see, extend or use it;
* a piece is accepted only at the current offset and never past the declared length;
* upload ids are random hex, checked before they touch a path;
* an archive unpacks only regular files, at relative paths inside the target folder, within
  the file-count and byte limits (counted while writing, so a lying header changes nothing).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tarfile
import time
import uuid
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
FILENAME = re.compile(r"^[^/\\\x00-\x1f]{1,255}$")
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class UploadError(ValueError):
    """A request the upload store refuses; ``status`` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    id: str
    owner: str
    length: int
    filename: str
    offset: int = 0
    created_at: float = field(default_factory=time.time)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.offset == self.length


def check_filename(name: str) -> str:
    """A plain file name (no folders, no control characters, not ``.``/``..``)."""
    if not isinstance(name, str) or not FILENAME.match(name) or name in (".", ".."):
        raise UploadError(f"file name {name!r}: a plain name, no folders, at most 255 characters")
    return name


class UploadStore:
    """Uploads under one folder on the server's own disk: ``<id>/data`` and ``<id>/info.json``."""

    def __init__(self, root: str | Path, max_bytes: int, chunk_max: int, expiry_hours: float) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.chunk_max, self.expiry = max_bytes, chunk_max, expiry_hours * 3600

    def _dir(self, upload_id: str) -> Path:
        if not isinstance(upload_id, str) or not UPLOAD_ID.match(upload_id):
            raise UploadError(f"no upload {upload_id!r}", 404)
        return self.root / upload_id

    def create(self, owner: str, length: int, filename: str, metadata: dict[str, str] | None = None) -> Upload:
        if not isinstance(length, int) or length < 0:
            raise UploadError("Upload-Length: a whole number of bytes is needed")
        if length > self.max_bytes:
            raise UploadError(f"an upload may hold at most {self.max_bytes} bytes; this one declares {length}", 413)
        up = Upload(uuid.uuid4().hex, owner, length, check_filename(filename), metadata=dict(metadata or {}))
        d = self._dir(up.id)
        d.mkdir()
        (d / "data").touch()
        self._save(up)
        return up

    def _save(self, up: Upload) -> None:
        d = self._dir(up.id)
        tmp = d / "info.json.tmp"
        tmp.write_text(json.dumps(asdict(up)))
        os.replace(tmp, d / "info.json")

    def get(self, upload_id: str, owner: str) -> Upload:
        d = self._dir(upload_id)
        try:
            up = Upload(**json.loads((d / "info.json").read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            raise UploadError(f"no upload {upload_id!r}", 404) from None
        if up.owner != owner:  # someone else's upload does not exist, as far as this caller knows
            raise UploadError(f"no upload {upload_id!r}", 404)
        if not up.complete and time.time() - up.created_at > self.expiry:
            self.delete(upload_id, owner)
            raise UploadError(f"upload {upload_id!r} expired unfinished", 410)
        return up

    def path(self, up: Upload) -> Path:
        return self._dir(up.id) / "data"

    @contextmanager
    def _locked(self, upload_id: str) -> Iterator[None]:
        with open(self._dir(upload_id) / "lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UploadError("another request is writing to this upload", 423) from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def append(self, upload_id: str, owner: str, offset: int, chunks: Iterable[bytes | Sequence[bytes]]) -> Upload:
        """Write ``chunks`` at ``offset`` (which must be the upload's current offset).

        A chunk is bytes or a list of bytes (written with one ``writev``).  The offset saved
        counts only the bytes written to the file: a chunk that would go past the declared length
        or the per-request limit is refused whole, and what came before it is kept."""
        up = self.get(upload_id, owner)
        with self._locked(upload_id):
            up = self.get(upload_id, owner)  # the offset as it is now, under the lock
            if offset != up.offset:
                raise UploadError(f"Upload-Offset {offset} does not match the upload's offset {up.offset}", 409)
            written = 0
            fd = os.open(self.path(up), os.O_WRONLY)
            try:
                for chunk in chunks:
                    pieces = [chunk] if isinstance(chunk, (bytes, bytearray, memoryview)) else list(chunk)
                    n = sum(len(p) for p in pieces)
                    if up.offset + written + n > up.length:
                        raise UploadError(f"more bytes than the declared Upload-Length {up.length}", 413)
                    if written + n > self.chunk_max:
                        raise UploadError(f"one request may carry at most {self.chunk_max} bytes", 413)
                    _pwrite_all(fd, pieces, up.offset + written)
                    written += n
            finally:
                # what arrived before a broken connection is kept: the client resumes from here
                try:
                    up.offset += written
                    os.ftruncate(fd, up.offset)
                finally:
                    os.close(fd)
                self._save(up)
        return up

    def delete(self, upload_id: str, owner: str) -> None:
        d = self._dir(upload_id)
        try:
            info = json.loads((d / "info.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            raise UploadError(f"no upload {upload_id!r}", 404) from None
        if info.get("owner") != owner:
            raise UploadError(f"no upload {upload_id!r}", 404)
        shutil.rmtree(d, ignore_errors=True)

    def expire(self) -> int:
        """Delete unfinished uploads older than the expiry; returns how many went."""
        gone = 0
        for d in self.root.iterdir():
            try:
                info = json.loads((d / "info.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if info["offset"] < info["length"] and time.time() - info["created_at"] > self.expiry:
                shutil.rmtree(d, ignore_errors=True)
                gone += 1
        return gone


_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024)  # pieces per pwritev


def _pwrite_all(fd: int, pieces: list[Any], at: int) -> None:
    """Write ``pieces`` at file position ``at``, one ``pwritev`` per at most IOV_MAX pieces (short writes resumed)."""
    while pieces:
        batch, pieces = pieces[:_IOV_MAX], pieces[_IOV_MAX:]
        views = [memoryview(p) for p in batch if len(p)]
        while views:
            n = os.pwritev(fd, views, at)
            if n <= 0:
                raise OSError(f"pwritev wrote {n} bytes")
            at += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if n:
                views[0] = views[0][n:]


# ------------------------------------------------------------------ archives


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVES)


def _member_path(name: str, archive: str) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts or any(part.startswith("\x00") for part in p.parts):
        raise UploadError(f"{archive}: member {name!r} points outside the archive's folder")
    for part in p.parts:
        check_filename(part)
    return p


def _copy(src: IO[bytes], dst: Path, budget: list[int], archive: str, member: str) -> None:
    with open(dst, "wb") as out:
        while chunk := src.read(1 << 20):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise UploadError(f"{archive}: unpacks past the limit of bytes (at {member})", 413)
            out.write(chunk)


def unpack(archive: Path, name: str, target: Path, max_files: int, max_bytes: int) -> list[str]:
    """Unpack a zip or tar archive's regular files under ``target``; returns their relative paths.

    Refused (nothing left behind): members outside the folder, links and devices, more than
    ``max_files`` files or ``max_bytes`` bytes."""
    target.mkdir(parents=True, exist_ok=True)
    budget, out = [max_bytes], []
    try:
        if name.lower().endswith(".zip"):
            _unzip(archive, name, target, max_files, budget, out)
        else:
            _untar(archive, name, target, max_files, budget, out)
    except UploadError:
        for rel in out:
            (target / rel).unlink(missing_ok=True)
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise UploadError(f"{name}: not a readable archive ({e})") from None
    return out


def _place(target: Path, p: PurePosixPath, out: list[str], max_files: int, archive: str) -> Path:
    if len(out) >= max_files:
        raise UploadError(f"{archive}: more than {max_files} files", 413)
    dst = target.joinpath(*p.parts)
    if dst.exists():
        raise UploadError(f"{archive}: {p} appears twice")
    dst.parent.mkdir(parents=True, exist_ok=True)
    out.append(str(p))
    return dst


def _unzip(archive: Path, name: str, target: Path, max_files: int, budget: list[int], out: list[str]) -> None:
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            if info.is_dir():
                continue
            mode = (info.external_attr >> 16) & 0o170000
            if mode and mode != 0o100000:  # symlinks and other non-regular files
                raise UploadError(f"{name}: member {info.filename!r} is not a regular file")
            p = _member_path(info.filename, name)
            dst = _place(target, p, out, max_files, name)
            with z.open(info) as src:
                _copy(src, dst, budget, name, info.filename)


def _untar(archive: Path, name: str, target: Path, max_files: int, budget: list[int], out: list[str]) -> None:
    with tarfile.open(archive, mode="r:*") as t:
        for m in t:
            if m.isdir():
                continue
            if not m.isreg():
                raise UploadError(f"{name}: member {m.name!r} is not a regular file (links and devices are refused)")
            p = _member_path(m.name, name)
            dst = _place(target, p, out, max_files, name)
            src = t.extractfile(m)
            assert src is not None
            _copy(src, dst, budget, name, m.name)


def metadata_header(header: str | None) -> dict[str, str]:
    """tus ``Upload-Metadata``: comma-separated ``key base64value`` pairs."""
    import base64
    import binascii

    out: dict[str, str] = {}
    for item in (header or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition(" ")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode() if value else ""
        except (binascii.Error, UnicodeDecodeError):
            raise UploadError(f"Upload-Metadata: the value of {key!r} is not base64 UTF-8") from None
    return out


def describe(up: Upload) -> dict[str, Any]:
    return {"id": up.id, "filename": up.filename, "length": up.length, "offset": up.offset,
            "complete": up.complete}
