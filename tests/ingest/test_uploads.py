"""The upload store (mliplake.ingest.uploads.UploadStore) on its own: what ``append`` writes and
what offset it records, whole or broken off, within the limits or past them."""
from __future__ import annotations

import os

import pytest

from mliplake.ingest.uploads import UploadError, UploadStore


@pytest.fixture
def store(tmp_path):
    return UploadStore(tmp_path / "uploads", max_bytes=1 << 20, chunk_max=64 << 10, expiry_hours=1)


def test_pieces_and_lists_of_pieces_land_in_order(store):
    data = os.urandom(50_000)
    up = store.create("alice", len(data), "x.bin")
    up = store.append(up.id, "alice", 0, [data[:10], [data[10:1000], b"", data[1000:30_000]]])
    assert up.offset == 30_000
    up = store.append(up.id, "alice", 30_000, [[data[30_000 + i:30_000 + i + 7] for i in range(0, 20_000, 7)]])
    assert up.offset == len(data) and up.complete
    assert store.path(up).read_bytes() == data
    assert store.get(up.id, "alice").offset == len(data)


def test_a_piece_past_the_declared_length_is_refused_and_nothing_is_made_up(store):
    up = store.create("alice", 100, "x.bin")
    with pytest.raises(UploadError) as e:
        store.append(up.id, "alice", 0, [b"a" * 60, [b"b" * 30, b"c" * 30]])
    assert e.value.status == 413
    up = store.get(up.id, "alice")
    assert up.offset == 60 and not up.complete  # what came before is kept; no zeros stand in for the rest
    assert store.path(up).read_bytes() == b"a" * 60


def test_one_request_past_the_chunk_limit_keeps_what_fit(store):
    up = store.create("alice", 200 << 10, "x.bin")
    with pytest.raises(UploadError) as e:
        store.append(up.id, "alice", 0, ([b"z" * (16 << 10)] for _ in range(8)))
    assert e.value.status == 413 and "at most" in str(e.value)
    up = store.get(up.id, "alice")
    assert up.offset == 64 << 10 and store.path(up).stat().st_size == 64 << 10


def test_a_broken_off_request_keeps_the_bytes_written(store):
    up = store.create("alice", 1000, "x.bin")

    def cut():
        yield [b"q" * 300]
        raise ConnectionError("the client went away")

    with pytest.raises(ConnectionError):
        store.append(up.id, "alice", 0, cut())
    assert store.get(up.id, "alice").offset == 300
    with pytest.raises(UploadError) as e:
        store.append(up.id, "alice", 0, [b"x"])
    assert e.value.status == 409  # a resume must start where the server stopped
    up = store.append(up.id, "alice", 300, [b"r" * 700])
    assert up.complete and store.path(up).read_bytes() == b"q" * 300 + b"r" * 700
