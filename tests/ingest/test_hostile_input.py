"""Hostile input: files built (or broken) so that they would crash, hang or silently fool the ingest.

Each bad file is deposited beside good ones, as a user would, and must give a quarantine row that
names the file, the frame and the reason, while every other frame and file of the deposit is
stored.  Inputs that crashed the process itself (the C extxyz parser segfaults on a 0-atom frame
and exits on an empty key) are deposited in a child process: a regression fails its test instead
of ending the test session.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mliplake import Lake
from mliplake.core.manifest import ManifestError, load_manifest, parse_manifest, unused_key_map
from mliplake.ingest.deposit import DepositError

# ---------------------------------------------------------------- building files

PROPERTIES = "Properties=species:S:1:pos:R:3:forces:R:3"


def frame(k: int, comment: str = "", count: str = "2", atoms: bool = True) -> str:
    """An O-H frame, moved by k/10 Å (no two are duplicates); ``comment`` replaces the usual header."""
    z = f"{0.1 * k:.3f}"
    head = comment or f"{PROPERTIES} energy={-1.5 - k}"
    body = f"O 0.0 0.0 {z} 0.1 0.0 0.0\nH 0.0 0.96 {z} -0.1 0.0 0.0\n" if atoms else ""
    return f"{count}\n{head}\n{body}"


def plain_frame(k: int, extra: str = "") -> str:
    """A frame with positions only (4 columns) and an energy."""
    return f"2\nProperties=species:S:1:pos:R:3 energy={-1.5 - k}{extra}\nO 0 0 {k}\nH 0 0.96 {k}\n"


def xyz(bad: str, at: int = 1, n: int = 4, seed: int = 0) -> str:
    """``n`` frames with the text ``bad`` in place of frame ``at``."""
    return "".join(bad if k == at else frame(seed + k) for k in range(n))


def record(k: int, **change: object) -> dict:
    rec = {"symbols": ["O", "H"], "positions": [[0.0, 0.0, 0.1 * k], [0.0, 0.96, 0.1 * k]], "energy": -1.5 - k,
           "forces": [[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]]}
    rec.update(change)
    return {key: v for key, v in rec.items() if v is not None}


def records(bad: dict, n: int = 3, at: int = 1, seed: int = 0) -> str:
    return json.dumps([record(seed + k, **(bad if k == at else {})) for k in range(n)])


GOOD = "".join(frame(5000 + k) for k in range(3))


def write_all(folder: Path, files: dict[str, str | bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        paths.append(path)
    return paths


def summary(lake: Lake, report) -> dict:
    rows = lake.quarantine(report.deposit_id).to_pylist()
    stored = lake.configurations("hostile", columns=["source_file", "frame_index"]).to_pylist()
    return {"stored": report.stored, "quarantined": report.quarantined,
            "rows": sorted([r["source_file"], r["frame_index"], r["detail"]] for r in rows),
            "frames": sorted([r["source_file"], r["frame_index"]] for r in stored)}


def deposit(tmp_path: Path, files: dict[str, str | bytes], manifest: dict | None = None) -> tuple[Lake, dict]:
    lake = Lake(tmp_path / "lake")
    report = lake.deposit(write_all(tmp_path / "deposit", {**files, "good.xyz": GOOD}),
                          manifest={"dataset": "hostile", **(manifest or {})})
    return lake, summary(lake, report)


CHILD = """
import json, sys
from pathlib import Path
import mliplake
from mliplake.ingest import parallel

args = json.loads(sys.argv[1])
if args["parallel"]:
    parallel.MIN_BYTES = 0  # every file through the worker processes
    parallel.CHUNK_FRAMES = 2
fallbacks = []
normalise_file = parallel.normalise_file

def watched(path, ctx):
    try:
        yield from normalise_file(path, ctx)
    except parallel.ScanError:
        fallbacks.append(path.name)
        raise

parallel.normalise_file = watched
lake = mliplake.Lake(args["lake"])
report = lake.deposit([Path(p) for p in args["files"]], manifest={"dataset": "hostile"})
rows = lake.quarantine(report.deposit_id).to_pylist()
stored = lake.configurations("hostile", columns=["source_file", "frame_index"]).to_pylist()
print(json.dumps({"stored": report.stored, "quarantined": report.quarantined, "fallbacks": sorted(fallbacks),
                  "rows": sorted([r["source_file"], r["frame_index"], r["detail"]] for r in rows),
                  "frames": sorted([r["source_file"], r["frame_index"]] for r in stored)}))
"""


def deposit_in_child(tmp_path: Path, files: dict[str, str], parallel: bool) -> dict:
    paths = write_all(tmp_path / "deposit", {**files, "good.xyz": GOOD})
    args = {"lake": str(tmp_path / "lake"), "files": [str(p) for p in paths], "parallel": parallel}
    env = {**os.environ, "MLIPLAKE_WORKERS": "2" if parallel else "1"}
    run = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True,
                         timeout=600, env=env)
    assert run.returncode == 0, f"the deposit killed its process (exit {run.returncode}):\n{run.stderr[-3000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


def expect(result: dict, bad: dict[str, tuple[list[int], list[int], str]]) -> None:
    """``bad``: file -> (frames quarantined, frames stored, what the first quarantine detail says)."""
    for name, (quarantined, stored, says) in bad.items():
        rows = [r for r in result["rows"] if r[0] == name]
        assert [r[1] for r in rows] == quarantined, (name, rows)
        assert not rows or says in rows[0][2], (name, rows)
        assert [f[1] for f in result["frames"] if f[0] == name] == stored, (name, result["frames"])
    assert [f[1] for f in result["frames"] if f[0] == "good.xyz"] == [0, 1, 2]
    assert result["quarantined"] == sum(len(q) for q, _, _ in bad.values())
    assert result["stored"] == 3 + sum(len(s) for _, s, _ in bad.values())


# ---------------------------------------------------------------- extxyz headers the C parser must not see

# A 0-atom frame segfaulted the parser; "0x2", "-0" and "0.5" it reads as 0; 4294967298 wraps to 2;
# an empty key ("" = ...) made it call exit(1); a Properties value that is no column list segfaulted it.
BAD_HEADERS = {  # file: (the bad frame, at index 1 of 4 unless it is 0-atoms-at-the-end, what the reason says)
    "zero.xyz": (frame(0, count="0", comment="empty frame", atoms=False), "line 5: frame has 0 atoms"),
    "hex.xyz": (frame(1, count="0x2"), "line 5: expected an atom count, found '0x2'"),
    "minus-zero.xyz": (frame(1, count="-0"), "expected an atom count, found '-0'"),
    "negative.xyz": (frame(1, count="-3"), "expected an atom count, found '-3'"),
    "float.xyz": (frame(1, count="2.0"), "expected an atom count, found '2.0'"),
    "wraps.xyz": (frame(1, count="4294967298"),
                  "header says 4294967298 atoms, more than the limit of 10,000,000 (MAX_ATOMS)"),
    "huge.xyz": (frame(1, count=str(10**12)), "more than the limit of 10,000,000"),
    "empty-key.xyz": (frame(1, comment=f'{PROPERTIES} ""=1'), "line 5: empty key in the comment line"),
    "empty-brace-key.xyz": (frame(1, comment=f"{PROPERTIES} {{}}=1"), "empty key"),
    "properties-number.xyz": (frame(1, comment="Properties=5"), "line 5: Properties='5' is not a column list"),
    "properties-quoted-bool.xyz": (frame(1, comment='Properties="T"'), "is not a column list"),
    "properties-quoted-key.xyz": (frame(1, comment='"Properties"=5'), "is not a column list"),
}
CRASHERS = {name: (xyz(bad, seed=10 * i), [1], [0, 2, 3], says)
            for i, (name, (bad, says)) in enumerate(BAD_HEADERS.items())}
CRASHERS["zero-last.xyz"] = (xyz("", at=9, n=3, seed=200) + "0\n", [3], [0, 1, 2], "line 13: frame has 0 atoms")


@pytest.mark.parametrize("path", ["sequential", "parallel"])
def test_extxyz_headers_that_crashed_the_parser(tmp_path, path):
    """Every bad header is one quarantined frame; the frames around it and the other files are stored.

    In the parallel path (files parsed in forked workers) the 0-atom frames are found by the scan of
    count lines and the comment lines by the workers: neither falls back to the sequential reader.
    """
    result = deposit_in_child(tmp_path, {name: c[0] for name, c in CRASHERS.items()}, parallel=path == "parallel")
    expect(result, {name: c[1:] for name, c in CRASHERS.items()})
    if path == "parallel":
        # counts that are no counts need the sequential reader's resync; 0 atoms and comment lines do not
        assert result["fallbacks"] == ["float.xyz", "hex.xyz", "huge.xyz", "minus-zero.xyz", "negative.xyz",
                                       "wraps.xyz"]


def test_extxyz_header_values_are_typed(tmp_path):
    """pbc and Lattice from an extxyz header: the usual spellings read, anything else named and refused."""
    lattice = 'Lattice="5 0 0 0 5 0 0 0 5"'
    files = {
        "pbc-ftf.xyz": xyz(frame(1, comment=f'{lattice} pbc="F T F" {PROPERTIES} energy=-2.5')),
        "pbc-101.xyz": xyz(frame(1, comment=f'{lattice} pbc="1 0 1" {PROPERTIES} energy=-2.5'), seed=10),
        "pbc-bad.xyz": xyz(frame(1, comment=f'{lattice} pbc="X Y Z" {PROPERTIES}'), seed=20),
        "pbc-two.xyz": xyz(frame(1, comment=f'{lattice} pbc="T T" {PROPERTIES}'), seed=30),
        "lattice-text.xyz": xyz(frame(1, comment=f'Lattice="a b c" {PROPERTIES}'), seed=40),
        "energy-bool.xyz": xyz(frame(1, comment=f"{PROPERTIES} energy=T"), seed=50),
        "json-bomb.xyz": xyz(frame(1, comment=f'{PROPERTIES} meta="_JSON {"[" * 100_000}{"]" * 100_000}"'), seed=60),
        "json-long-int.xyz": xyz(frame(1, comment=f'{PROPERTIES} meta="_JSON [{"7" * 5000}]"'), seed=70),
        # taken for a plain-xyz comment, its energy used to vanish without a word
        "broken-header.xyz": "".join(plain_frame(k, ' note="a\x00"' if k == 81 else "") for k in range(80, 84)),
    }
    lake, result = deposit(tmp_path, files)
    expect(result, {
        "pbc-ftf.xyz": ([], [0, 1, 2, 3], ""),
        "pbc-101.xyz": ([], [0, 1, 2, 3], ""),
        "pbc-bad.xyz": ([1], [0, 2, 3], "pbc: 'X Y Z' is not a periodicity: give true/false, T/F or 1/0"),
        "pbc-two.xyz": ([1], [0, 2, 3], "pbc: [True, True] is not a periodicity"),
        "lattice-text.xyz": ([1], [0, 2, 3], "Lattice: expected 9 numbers, got a string ('a b c')"),
        "energy-bool.xyz": ([1], [0, 2, 3], "energy: expected a number, got a boolean"),
        "json-bomb.xyz": ([1], [0, 2, 3], "info 'meta': _JSON value nested 100,000 levels deep, more than the "
                                          "limit of 64 (MAX_JSON_DEPTH)"),
        "json-long-int.xyz": ([1], [0, 2, 3], "an integer with 5,000 digits, more than the limit of 38"),
        "broken-header.xyz": ([1], [0, 2, 3], "line 5: the comment line names Properties but is not key=value pairs"),
    })
    rows = lake.configurations("hostile", columns=["source_file", "frame_index", "pbc"]).to_pylist()
    pbc = {r["source_file"]: r["pbc"] for r in rows if r["frame_index"] == 1}
    assert pbc["pbc-ftf.xyz"] == [False, True, False] and pbc["pbc-101.xyz"] == [True, False, True]


# ---------------------------------------------------------------- JSON resource bombs


def test_json_bombs_are_quarantined(tmp_path):
    nested = "[" * 100_000 + "]" * 100_000
    lines = [json.dumps(record(k)) for k in range(4)]
    lines[1] = '{"symbols": ["H"], "positions": [[0, 0, 0]], "info": {"x": ' + nested + "}}"
    lines[2] = json.dumps(record(2)).replace('"energy"', '"big": ' + "9" * 5000 + ', "energy"')
    deep = record(1, info={"x": json.loads("[" * 80 + "]" * 80)})
    files = {
        "bomb.jsonl": "\n".join(lines) + "\n",
        "bomb.json": "[" + json.dumps(record(0)) + ", " + nested + "]",
        "long-int.json": records({"info": {"id": 10**50}}, seed=10),
        "deep.json": json.dumps([record(20), deep, record(22)]),
    }
    _, result = deposit(tmp_path, files)
    expect(result, {
        "bomb.jsonl": ([1, 2], [0, 3],
                       "line 2: nested 100,002 levels deep, more than the limit of 64 (MAX_JSON_DEPTH)"),
        "bomb.json": ([None], [], "unreadable file: not valid JSON: nested 100,001 levels deep"),
        "long-int.json": ([1], [0, 2],
                          "record 1: an integer with 51 digits, more than the limit of 38 (MAX_INT_DIGITS)"),
        "deep.json": ([1], [0, 2], "more than the limit of 64 (MAX_JSON_DEPTH)"),
    })
    detail = {(r[0], r[1]): r[2] for r in result["rows"]}
    assert "line 3: an integer with 5,000 digits, more than the limit of 38 (MAX_INT_DIGITS)" in detail["bomb.jsonl", 2]


# ---------------------------------------------------------------- types: no value is coerced


PBC_SPELLINGS = [("false", [False] * 3), ("F F F", [False] * 3), ("T F T", [True, False, True]), ("true", [True] * 3),
                 ([True, "F", 1], [True, False, True]), (0, [False] * 3), ("1 0 0", [True, False, False])]


def test_pbc_spellings_in_json(tmp_path):
    """A non-empty string is truthy: "false" used to become periodic.  Now the usual spellings read as meant."""
    recs = [record(k, cell=[5, 5, 5], pbc=pbc) for k, (pbc, _) in enumerate(PBC_SPELLINGS)]
    lake, result = deposit(tmp_path, {"pbc.json": json.dumps(recs)})
    assert result["quarantined"] == 0 and result["stored"] == 3 + len(PBC_SPELLINGS)
    got = lake.search('chemical_formula_reduced = "HO"', columns=["source_file", "frame_index", "pbc"]).to_pylist()
    got = {r["frame_index"]: r["pbc"] for r in got if r["source_file"] == "pbc.json"}
    assert got == {k: want for k, (_, want) in enumerate(PBC_SPELLINGS)}


def test_type_confusion_is_named(tmp_path):
    bad = {
        "pbc-yes.json": ({"pbc": "yes", "cell": [5, 5, 5]}, "pbc: 'yes' is not a periodicity"),
        "pbc-two.json": ({"pbc": [True, 2, False], "cell": [5, 5, 5]}, "pbc: [True, 2, False] is not a periodicity"),
        "energy-bool.json": ({"energy": True}, "energy: expected a number, got a boolean"),
        "energy-text.json": ({"energy": "-1.5"}, "energy: expected a number, got a string ('-1.5')"),
        "energy-list.json": ({"energy": [-1.5]}, "energy: expected a number, got a list"),
        "forces-bool.json": ({"forces": [[True, 0.0, 0.0], [0.0, 0.0, 0.0]]},
                             "forces: expected numbers, got a boolean"),
        "positions-text.json": ({"positions": [["0", "0", "0"], ["0", "1", "0"]]},
                                "positions: expected numbers, got strings"),
        "cell-text.json": ({"cell": "5 5 5"}, "cell: expected a list of numbers, got a string ('5 5 5')"),
        "stress-bool.json": ({"stress": [True] * 6}, "stress: expected numbers, got booleans"),
        "virial-mapping.json": ({"virial": {"xx": 1}}, "virial: expected a list of numbers, got a mapping"),
        "numbers-bool.json": ({"symbols": None, "numbers": [8, True]},
                              "numbers: expected atomic numbers (integers), got a boolean"),
        "symbols-text.json": ({"symbols": "OH"},
                              "symbols: expected a list of element symbols (strings), got a string ('OH')"),
        "symbols-numbers.json": ({"symbols": [8, 1]}, "symbols: expected element symbols (strings), got integers"),
        "units-number.json": ({"units": {"energy": 1}}, "record units: energy: expected a unit name, got a number (1)"),
        "units-text.json": ({"units": "eV"}, "units: expected a mapping"),
        "info-list.json": ({"info": [1, 2]}, "info: expected a mapping of key -> value, got a list"),
        "empty-key.json": ({"info": {"": 1}}, "info has an empty key: it could not be addressed"),
        "nul-key.json": ({"info": {"a\x00b": 1}}, "info key 'a\\x00b' holds a NUL byte"),
    }
    files = {name: records(change, seed=1000 + 10 * i) for i, (name, (change, _)) in enumerate(bad.items())}
    _, result = deposit(tmp_path, files)
    expect(result, {name: ([1], [0, 2], says) for name, (_, says) in bad.items()})


def test_per_atom_label_under_a_mapped_key_in_json(tmp_path):
    """A JSON key the reader does not know as per-atom, mapped to forces, is the forces (it was dropped)."""
    recs = [record(k, forces=None, my_forces=[[0.5, 0, 0], [-0.5, 0, 0]]) for k in range(2)]
    lake, result = deposit(tmp_path, {"mapped.json": json.dumps(recs)}, {"key_map": {"my_forces": "forces"}})
    assert result["quarantined"] == 0
    rows = lake.configurations("hostile", columns=["source_file", "forces", "info"]).to_pylist()
    assert [r["forces"] for r in rows if r["source_file"] == "mapped.json"] == [[[0.5, 0, 0], [-0.5, 0, 0]]] * 2
    assert all(json.loads(r["info"]) == {} for r in rows if r["source_file"] == "mapped.json")


# ---------------------------------------------------------------- manifests


def test_key_map_target_typo_is_a_manifest_error():
    with pytest.raises(ManifestError) as err:
        parse_manifest({"dataset": "x", "key_map": {"E": "enrgy"}}, source="m.yaml")
    message = str(err.value)
    assert ("manifest m.yaml: field 'key_map': key_map target 'enrgy' is not a canonical key; "
            "did you mean 'energy'?") in message
    assert "energy, forces, stress, virial, charges, magmoms, dipole" in message
    for target, meant in [("Forces_", "forces"), ("stres", "stress"), ("ENERGY", "energy"), ("REF_Energy", "energy")]:
        with pytest.raises(ManifestError, match=f"did you mean '{meant}'"):
            parse_manifest({"dataset": "x", "key_map": {"k": target}})
    with pytest.raises(ManifestError, match="'positions' is a structure field"):
        parse_manifest({"dataset": "x", "key_map": {"coords": "positions"}})
    # renames of user keys stay possible, also to names near a label's but not a typo of it
    m = parse_manifest({"dataset": "x", "key_map": {"cfg": "config_type", "F": "free_energy", "e": "REF_energy"}})
    assert m.key_map == {"cfg": "config_type", "F": "free_energy", "e": "REF_energy"}


def test_unused_key_map():
    m = parse_manifest({"dataset": "x", "key_map": {"E": "energy", "F": "forces", "cfg": "config_type",
                                                    "tag": "label"}})
    usage = {"E->energy": 10, "cfg->config_type": 4, "REF_forces->forces": 10, "tag->label": 0}
    assert unused_key_map(m, usage) == [
        "key_map entry 'F': 'forces' was used by no frame (none had a key 'F', or another key for 'forces' came first)",
        "key_map entry 'tag': 'label' was used by no frame (none had a key 'tag')",
    ]
    assert unused_key_map(m, {"E->energy": 1, "F->forces": 1, "cfg->config_type": 1, "tag->label": 1}) == []


def test_key_map_usage_counts_renames(tmp_path):
    """Renamed keys are counted per frame, so unused_key_map sees them used."""
    lake, result = deposit(tmp_path, {"a.json": records({}, seed=5).replace('"energy"', '"cfg": "bulk", "E"')},
                           {"key_map": {"E": "energy", "cfg": "config_type", "nothere": "energy"}})
    report = lake.records()[-1]
    assert report["key_mapping"]["cfg->config_type"] == 3 and report["key_mapping"]["E->energy"] == 3
    m = parse_manifest({"dataset": "x", "key_map": {"E": "energy", "cfg": "config_type", "nothere": "energy"}})
    assert [w.split(":")[0] for w in unused_key_map(m, report["key_mapping"])] == ["key_map entry 'nothere'"]


BILLION_LAUGHS = """dataset: laughs
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
method: {settings: *g}
"""

MANIFESTS = {
    "billion-laughs": (BILLION_LAUGHS, "more than 16 YAML aliases"),
    "few-aliases-big-expansion": ("dataset: m\na: &a [" + ", ".join(['"' + "x" * 1000 + '"'] * 200) + "]\n"
                                  "method: {s: [*a, *a, *a, *a, *a, *a]}\n", "more than 1,048,576 bytes once parsed"),
    "deep": ("dataset: m\nmethod: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than 32 levels deep"),
    "huge-file": ("dataset: m\ndescription: '" + "x" * (2 << 20) + "'\n", "larger than 1,048,576 bytes"),
    "units-number": ("dataset: m\nunits: {energy: 1}\n",
                     "field 'units': energy: expected a unit name such as eV, got a number (1)"),
    "units-list": ("dataset: m\nunits: [eV]\n", "field 'units': expected a mapping"),
    "title-mapping": ("dataset: m\ntitle: {a: 1}\n", "field 'title': expected text, got a mapping"),
    "license-no": ("dataset: m\nlicense: no\n",
                   "field 'license': expected text, got a boolean (false); YAML reads it so"),
    "doi-number": ("dataset: m\ndoi: 10.10\n", "field 'doi': expected text, got a number (10.1)"),
    "authors-numbers": ("dataset: m\nauthors: [1, 2]\n", "field 'authors': expected a list of text"),
    "files-mapping": ("dataset: m\nfiles: {path: a.xyz}\n", "field 'files': expected a list"),
    "file-info-empty-key": ("dataset: m\nfiles: [{path: a.xyz, info: {'': 1}}]\n",
                            "an empty key could not be addressed"),
    "method-date": ("dataset: m\nmethod: {date: 2020-01-01}\n",
                    "field 'method.date': a date (2020-01-01) cannot be stored"),
    "method-int-key": ("dataset: m\nmethod: {settings: {1: a, b: 2}}\n", "field 'method.settings': key 1 is a number"),
    "method-nan": ("dataset: m\nmethod: {encut: .nan}\n", "field 'method.encut': nan is not a finite number"),
    "duplicate-key": ("dataset: m\nunits: {energy: eV, energy: Hartree}\n", "key 'energy' appears twice"),
    "key-map-typo": ("dataset: m\nkey_map: {E: enrgy}\n",
                     "key_map target 'enrgy' is not a canonical key; did you mean 'energy'?"),
}


@pytest.mark.parametrize("text, says", MANIFESTS.values(), ids=MANIFESTS.keys())
def test_manifest_refused_quickly_and_clearly(tmp_path, text, says):
    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    t0 = time.perf_counter()
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert time.perf_counter() - t0 < 10
    assert str(err.value).startswith(f"manifest {path}: ") and says in str(err.value), str(err.value)


def test_alias_bomb_rejects_the_deposit_and_keeps_the_files(tmp_path):
    lake = Lake(tmp_path / "lake")
    paths = write_all(tmp_path / "deposit", {"good.xyz": GOOD, "manifest.yaml": BILLION_LAUGHS})
    with pytest.raises(DepositError, match="more than 16 YAML aliases"):
        lake.deposit([paths[0]], manifest=paths[1])
    assert [r["status"] for r in lake.records()] == ["rejected"]
    assert len(json.dumps(lake.records()[0])) < 20_000  # the record holds the reason, not the expansion
