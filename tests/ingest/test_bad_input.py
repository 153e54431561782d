"""Bad input: each broken file is quarantined with its file, frame and reason, and nothing is lost.

Every case deposits one small bad file together with a good one, then checks what a user cares
about: a quarantine row naming the file, the frame (None: the whole file) and the reason; the
raw files kept byte for byte; the good frames of the same deposit stored; and a later deposit
into the same lake stored in full.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from mliplake.cli import main
from mliplake.ingest.deposit import DepositError

# ---------------------------------------------------------------- building small files


def frame(k: int, *, atoms: int = 2, energy: str = "-1.5", fx: str = "0.1", y: str = "0.96",
          symbol: str = "H", lattice: str = "", comment: str = "") -> str:
    """One extxyz frame of an O-H pair, moved by ``k``/10 Å so that no two frames are duplicates."""
    z = f"{0.1 * k:.3f}"
    cell = f'Lattice="{lattice}" pbc="T T T" ' if lattice else ""
    return (f"{atoms}\n{cell}Properties=species:S:1:pos:R:3:forces:R:3 energy={energy}{comment}\n"
            f"O 0.0 0.0 {z} {fx} 0.0 0.0\n"
            f"{symbol} 0.0 {y} {z} -{fx} 0.0 0.0\n")


def xyz(n: int, bad: int | None = None, **change: object) -> str:
    """``n`` good frames, the one at index ``bad`` built with ``change``."""
    return "".join(frame(k, **(change if k == bad else {})) for k in range(n))


def plain_xyz(n: int, bad: int) -> str:
    """Plain xyz (free-text comment lines); frame ``bad`` lacks a coordinate."""
    return "".join(f"2\nwater {k}\nO 0.0 0.0 {0.1 * k:.3f}\nH 0.0 {'' if k == bad else '0.96'} {0.1 * k:.3f}\n"
                   for k in range(n))


def record(k: int, **change: object) -> dict:
    """One plain JSON record; a change to None drops that key."""
    rec = {"symbols": ["O", "H"], "positions": [[0.0, 0.0, 0.1 * k], [0.0, 0.96, 0.1 * k]],
           "energy": -1.5, "forces": [[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]]}
    rec.update(change)
    return {key: v for key, v in rec.items() if v is not None}


def records(n: int, bad: int, **change: object) -> str:
    return json.dumps([record(k, **(change if k == bad else {})) for k in range(n)])


def json_lines(n: int, cut: int) -> str:
    """JSON Lines whose line ``cut`` (0-based) lost its last characters."""
    lines = [json.dumps(record(k)) for k in range(n)]
    lines[cut] = lines[cut][:-12]
    return "\n".join(lines) + "\n"


GOOD = "".join(frame(100 + k) for k in range(3))  # deposited beside every bad file
AFTER = "".join(frame(200 + k) for k in range(3))  # a later, good deposit


# ---------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    id: str
    name: str  # file name; its suffix picks the reader
    content: bytes
    frame: int | None  # frame_index of the one quarantine row; None: the whole file
    reason: str  # what the detail must say
    stored: tuple[int, ...] = ()  # frames of the bad file that are stored all the same
    labels: tuple[str, ...] = ()  # labels the manifest requires


def case(id: str, name: str, content: str | bytes, frame: int | None, reason: str, **kw: object) -> Case:
    return Case(id, name, content.encode() if isinstance(content, str) else content, frame, reason, **kw)


CASES = [
    case("truncated-mid-line", "cut.xyz", xyz(4)[:-12], 3,
         "line 16: truncated: the file ends in the middle of an atom line", stored=(0, 1, 2)),
    case("truncated-between-atom-lines", "cut.xyz", xyz(4).rsplit("H ", 1)[0], 3,
         "line 13: truncated: header says 2 atoms, file ends after 1", stored=(0, 1, 2)),
    case("atom-count-too-large", "count.xyz", xyz(4, bad=1, atoms=3), 1,
         "line 5: header says 3 atoms but the next frame starts after 2", stored=(0, 2, 3)),
    case("atom-count-too-small", "count.xyz", xyz(4, bad=1, atoms=1), 1,
         "line 5: header says 1 atoms but 2 atom lines follow", stored=(0, 2, 3)),
    case("missing-column", "columns.xyz", xyz(3, bad=1, y=""), 1,
         "line 8, atom 2: expected 7 fields", stored=(0, 2)),
    case("missing-column-plain-xyz", "plain.xyz", plain_xyz(3, bad=1), 1,
         "line 8, atom 2: expected 4 fields", stored=(0, 2)),
    case("nan-energy", "nan.xyz", xyz(3, bad=1, energy="nan"), 1, "non-finite energy", stored=(0, 2)),
    case("inf-forces", "inf.xyz", xyz(3, bad=1, fx="inf"), 1,
         "line 7, atom 1: non-finite forces", stored=(0, 2)),
    case("nan-positions", "nan.xyz", xyz(3, bad=1, y="nan"), 1,
         "line 8, atom 2: non-finite positions", stored=(0, 2)),
    case("unknown-element", "xx.xyz", xyz(3, bad=1, symbol="Xx"), 1, "unknown element 'Xx'", stored=(0, 2)),
    case("degenerate-cell", "cell.xyz", xyz(3, bad=1, lattice="5 0 0 0 5 0 0 0 0"), 1,
         "degenerate cell: periodic in 3D but the cell volume is zero", stored=(0, 2)),
    case("non-utf8-comment", "latin1.xyz", xyz(3, bad=1, comment=' note="caf\xe9"').encode("latin-1"), 1,
         "line 6: not UTF-8 text: byte 0xe9", stored=(0, 2)),
    case("empty-file", "empty.xyz", b"", None, "empty file"),
    case("garbage-xyz", "garbage.xyz", "this is not\nan xyz file\n", None,
         "not an (ext)xyz file: no line holds an atom count; it starts with 'this is not'"),
    case("garbage-cif", "garbage.cif", "this is not\na CIF file\n", None, "ASE cannot read it as 'cif'"),
    case("atomic-number-out-of-range", "z.json", records(3, bad=1, symbols=None, numbers=[8, 200]), 1,
         "unknown element: atomic number 200", stored=(0, 2)),
    case("wrong-force-shape", "forces.json", records(3, bad=1, forces=[[0.1, 0.0, 0.0]]), 1,
         "forces has shape (1, 3), expected (2, 3) for 2 atoms", stored=(0, 2)),
    case("stress-5-components", "stress.json", records(3, bad=1, stress=[1, 2, 3, 4, 5]), 1,
         "stress has 5 components, expected 6 (Voigt) or 9", stored=(0, 2)),
    case("per-atom-array-wrong-length", "arrays.json", records(3, bad=1, arrays={"tags": [1, 2, 3]}), 1,
         "per-atom array 'tags' has 3 rows for 2 atoms", stored=(0, 2)),
    case("record-without-positions", "nopos.json", records(3, bad=1, positions=None), 1, "no 'positions'",
         stored=(0, 2)),
    case("invalid-json", "invalid.json", records(3, bad=-1).replace("}, {", "} {", 1), None,
         "not valid JSON: Expecting ',' delimiter at column"),
    case("json-cut-short", "cut.json", records(3, bad=-1)[:-20], None,
         "not valid JSON: Expecting value at the end of the file (cut short?)"),
    case("json-lines-broken-line", "lines.jsonl", json_lines(3, cut=1), 1,
         "line 2: not valid JSON: Expecting value at the end of the line (cut short?)", stored=(0, 2)),
    case("missing-required-label", "labels.json", records(3, bad=1, forces=None), 1,
         "missing label forces (the manifest requires ['energy', 'forces'])", stored=(0, 2),
         labels=("energy", "forces")),
]
ON_S3 = {"truncated-mid-line", "atom-count-too-large", "nan-energy", "garbage-xyz", "json-lines-broken-line"}


def write(folder: Path, name: str, content: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def raw_bytes(lake, deposit_id: str) -> dict[str, bytes]:
    """The deposit's raw files as the lake keeps them: name -> bytes."""
    return {p.rsplit("/", 1)[1]: lake.fs.cat_file(p) for p in lake.raw_files(deposit_id)}


def assert_later_deposit_stored(lake, tmp_path: Path, dataset: str) -> None:
    before = lake.configurations(dataset).num_rows
    report = lake.deposit([write(tmp_path / "later", "later.xyz", AFTER)], dataset=dataset)
    assert (report.stored, report.quarantined) == (3, 0)
    assert lake.configurations(dataset).num_rows == before + 3


def check_bad_file(lake, tmp_path: Path, c: Case) -> None:
    folder = tmp_path / "deposit"
    files = [write(folder, c.name, c.content), write(folder, "good.xyz", GOOD)]
    report = lake.deposit(files, manifest={"dataset": "bad", "labels": list(c.labels)})

    # a clear error naming the file, the frame and the reason
    rows = lake.quarantine(report.deposit_id).to_pylist()
    assert [(r["source_file"], r["frame_index"]) for r in rows] == [(c.name, c.frame)], rows
    assert c.reason in rows[0]["detail"]
    assert rows[0]["reason"] and rows[0]["reason"] in rows[0]["detail"]

    # nothing lost: the raw files byte for byte, and the good frames of the deposit
    assert raw_bytes(lake, report.deposit_id) == {c.name: c.content, "good.xyz": GOOD.encode()}
    assert report.stored == 3 + len(c.stored) and report.quarantined == 1
    stored = lake.configurations("bad", columns=["source_file", "frame_index"]).to_pylist()
    assert sorted((r["source_file"], r["frame_index"]) for r in stored) == sorted(
        [("good.xyz", k) for k in range(3)] + [(c.name, k) for k in c.stored])

    assert_later_deposit_stored(lake, tmp_path, "bad")


@pytest.mark.parametrize("c", [c for c in CASES if c.id in ON_S3], ids=lambda c: c.id)
def test_bad_file_local_and_s3(lake, tmp_path, c):
    check_bad_file(lake, tmp_path, c)


@pytest.mark.parametrize("c", [c for c in CASES if c.id not in ON_S3], ids=lambda c: c.id)
def test_bad_file(local_lake, tmp_path, c):
    check_bad_file(local_lake, tmp_path, c)


# ---------------------------------------------------------------- manifest errors


MANIFEST_CASES = {
    "unknown-unit": ("dataset: m\nunits: {energy: furlongs}\n", ["field 'units': unknown energy unit 'furlongs'"]),
    "invalid-yaml": ("dataset: m\nlabels: [energy\nunits: {}\n", ["not valid YAML", "line 3"]),
    "missing-dataset-name": ("title: no name here\n", ["field 'dataset': missing"]),
    "unknown-label": ("dataset: m\nlabels: [energy, hardness]\n", ["field 'labels': unknown labels ['hardness']"]),
}


@pytest.mark.parametrize("text, says", MANIFEST_CASES.values(), ids=MANIFEST_CASES.keys())
def test_manifest_error(local_lake, tmp_path, text, says):
    folder = tmp_path / "deposit"
    good, manifest = write(folder, "good.xyz", GOOD), write(folder, "manifest.yaml", text)
    with pytest.raises(DepositError) as err:
        local_lake.deposit([good], manifest=manifest)
    message = str(err.value)
    assert f"manifest {manifest}" in message and all(s in message for s in says), message

    # the raw files are kept anyway, under a rejected deposit the message names
    dep = re.search(r"deposit (dep-[0-9a-f]+) rejected", message).group(1)
    raw = local_lake.raw_dir(dep)
    assert f"raw files kept in {local_lake.uri(raw)}" in message
    assert raw_bytes(local_lake, dep) == {"good.xyz": GOOD.encode()}
    assert local_lake.fs.cat_file(f"{raw}/manifest.yaml") == text.encode()
    assert [(r["deposit_id"], r["status"]) for r in local_lake.records()] == [(dep, "rejected")]

    assert_later_deposit_stored(local_lake, tmp_path, "m")


def test_rejected_manifest_keeps_an_earlier_deposit_of_the_same_files(lake, tmp_path):
    good = write(tmp_path / "deposit", "good.xyz", GOOD)
    first = lake.deposit([good], dataset="m")
    manifest = write(tmp_path / "fix", "manifest.yaml", "dataset: m\nunits: {energy: furlongs}\n")
    with pytest.raises(DepositError, match="furlongs"):
        lake.deposit([good], dataset="m", manifest=manifest)
    assert lake.configurations("m").num_rows == first.stored == 3
    assert sorted(r["status"] for r in lake.records()) == ["rejected", "stored"]


# ---------------------------------------------------------------- the command line


def test_cli_prints_quarantine_reasons(tmp_path):
    lake = str(tmp_path / "lake")
    bad = write(tmp_path / "deposit", "bad.xyz", xyz(4, bad=1, symbol="Xx")[:-12])
    run = CliRunner().invoke(main, ["--lake", lake, "deposit", str(bad), "--dataset", "x"], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    assert "stored 2, duplicates 0, quarantined 2" in run.output
    assert "quarantine reasons:" in run.output
    assert "1 x unknown element 'Xx'" in run.output
    assert "1 x truncated: the file ends in the middle of an atom line" in run.output

    dep = re.search(r"deposit (dep-[0-9a-f]+) -> dataset x", run.output).group(1)
    run = CliRunner().invoke(main, ["--lake", lake, "quarantine", dep], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    assert "source_file  frame_index  detail" in run.output
    assert re.search(r"bad\.xyz\s+1\s+unknown element 'Xx'", run.output)
    assert re.search(r"bad\.xyz\s+3\s+line 16: truncated: the file ends in the middle of an atom line", run.output)
