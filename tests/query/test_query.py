"""SQL over the lake, untrusted SQL, key discovery, statistics and export."""
from __future__ import annotations

import json
import time

import ase.io
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from support import deposit_sample, sample_files, tiny_frames

import mliplake
from mliplake.cli import main
from mliplake.query.engine import SQLError


def test_views_and_user_keys_from_sql(samples_lake):
    rows = dict(samples_lake.sql(
        "SELECT info->>'config_type' AS ct, count(*) FROM configurations GROUP BY 1").fetchall())
    assert rows == {"rmd17": 2000, "IsolatedAtom": 4, None: 239 + 500}
    n = samples_lake.sql("SELECT count(*) FROM configurations WHERE json_array_length(info->'dihedrals') = 3")
    assert n.fetchall()[0][0] == 500
    ds = {r[0]: r[1:] for r in samples_lake.sql("SELECT dataset, configurations, license FROM datasets").fetchall()}
    assert ds == {"3bpa": (504, "MIT"), "rmd17-ethanol": (2000, "CC0-1.0"), "mlearn-si": (239, "BSD-3-Clause")}
    assert samples_lake.sql("SELECT count(*) FROM deposits").fetchall()[0][0] == 3
    assert samples_lake.sql("SELECT count(*) FROM quarantine").fetchall()[0][0] == 0


def test_key_registry_counts_match_the_files(samples_lake):
    keys = {(r["key"], r["category"]): r for r in samples_lake.keys().to_pylist()}
    assert keys[("dihedrals", "info")]["configurations"] == 500
    assert keys[("dihedrals", "info")]["datasets"] == ["3bpa"]
    assert keys[("dihedrals", "info")]["dtype"] == "list"
    assert keys[("md17_index", "info")]["configurations"] == 2000
    assert keys[("md17_index", "info")]["dtype"] == "integer"
    assert keys[("group", "info")]["configurations"] == 239
    assert keys[("config_type", "info")]["configurations"] == 2004
    assert keys[("stress", "label")]["configurations"] == 239 and keys[("stress", "label")]["unit"] == "eV/Å³"
    assert keys[("forces", "label")]["configurations"] == 2743 - 4  # isolated atoms have none
    assert ("virial", "label") not in keys  # no sample carries one


def test_summary_equals_numpy(samples_lake):
    s = samples_lake.summary('dataset = "rmd17-ethanol"', keys=["energy_per_atom", "info.config_type"])
    e = [a.info["REF_energy"] / len(a) for p in sample_files("rmd17") for a in ase.io.read(p, ":")]
    (st,) = s.numeric
    assert st.count == 2000 and s.count == 2000
    assert st.mean == pytest.approx(np.mean(e), rel=1e-12)
    assert st.std == pytest.approx(np.std(e, ddof=1), rel=1e-9)
    assert st.min == min(e) and st.max == max(e)
    assert st.quantiles[0.5] == pytest.approx(np.quantile(e, 0.5), rel=1e-12)
    assert sum(c for *_, c in st.histogram) == 2000
    assert s.categorical["info.config_type"] == [("rmd17", 2000)]
    assert s.elements == [("C", 2000), ("H", 2000), ("O", 2000)]


def test_summary_cli_text_and_plots(samples_lake, tmp_path):
    r = CliRunner().invoke(main, ["--lake", samples_lake.url, "summary", "-f", 'elements HAS "Si"',
                                  "--plot", str(tmp_path / "h.png")])
    assert r.exit_code == 0, r.output
    assert "configurations: 239" in r.output and "#" in r.output
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    r = CliRunner().invoke(main, ["--lake", samples_lake.url, "summary", "--plot", str(tmp_path / "h.html")])
    assert "<svg" in (tmp_path / "h.html").read_text()


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_sql_cli_formats(samples_lake, tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    r = CliRunner().invoke(main, ["--lake", samples_lake.url, "sql",
                                  "SELECT dataset, count(*) AS n FROM configurations GROUP BY 1 ORDER BY 1",
                                  "--format", fmt, "--out", str(out)])
    assert r.exit_code == 0, r.output
    if fmt == "parquet":
        rows = pq.read_table(out).to_pylist()
    elif fmt == "json":
        rows = json.loads(out.read_text())
    else:
        rows = [dict(zip(["dataset", "n"], line.replace('"', "").split(","))) for line in out.read_text().split()[1:]]
        rows = [{"dataset": r["dataset"], "n": int(r["n"])} for r in rows]
    assert rows == [{"dataset": "3bpa", "n": 504}, {"dataset": "mlearn-si", "n": 239},
                    {"dataset": "rmd17-ethanol", "n": 2000}]


# ---------------------------------------------------------------- untrusted SQL


def test_untrusted_sql_answers_selects(lake):
    deposit_sample(lake, "mlearn")
    t = lake.sql("SELECT count(*) AS n, avg(energy_per_atom) AS e FROM configurations", untrusted=True)
    assert t.to_pylist()[0]["n"] == 239


@pytest.mark.parametrize("query, why", [
    ("SELECT * FROM read_csv('/etc/passwd')", "not allowed"),
    ("SELECT * FROM read_text('/etc/hostname')", "not allowed"),
    ("SELECT * FROM glob('/*')", "not allowed"),
    ("SELECT * FROM read_json('{root}/tables/deposits/*.json')", "not allowed"),
    ("SELECT * FROM '{root}/data/configurations/**/*.parquet'", "not available"),
    ("SELECT * FROM read_parquet('{root}/data/**/*.parquet')", "not allowed"),
    ("SELECT content FROM read_text('{root}/raw/*/files/*')", "not allowed"),
    ("SELECT * FROM lake.configurations", "not available"),
    ("SELECT * FROM lake.deposits", "not available"),
    ("SELECT current_setting('s3_secret_access_key')", "not allowed"),
    ("SELECT * FROM duckdb_settings()", "not allowed"),
    ("SELECT * FROM read_csv('.tmp/x.csv')", "not allowed"),
    ("COPY (SELECT 1) TO '/tmp/mliplake-escape.csv'", "only SELECT"),
    ("CREATE TABLE t AS SELECT 1", "only SELECT"),
    ("DROP VIEW configurations", "only SELECT"),
    ("INSTALL httpfs", "only SELECT"),
    ("LOAD httpfs", "only SELECT"),
    ("SET enable_external_access = true", "only SELECT"),
    ("ATTACH '/tmp/x.db' AS x", "only SELECT"),
    ("SELECT 1; SELECT 2", "exactly one statement"),
    ("SELECT 1) AS q; COPY (SELECT 1) TO '/tmp/x.csv'; SELECT (1", "SQL"),
    ("SELECT 1 --", None),  # a trailing comment must not swallow the row limit
])
def test_untrusted_sql_is_sandboxed(lake, query, why, tmp_path):
    deposit_sample(lake, "3bpa")
    query = query.format(root=lake.uri(lake.root))
    if why is None:
        assert lake.sql(query, untrusted=True).num_rows == 1
        return
    with pytest.raises(SQLError, match=why):
        lake.sql(query, untrusted=True)


def test_untrusted_sql_row_and_time_limits(local_lake):
    deposit_sample(local_lake, "rmd17")
    with pytest.raises(SQLError, match="more than 100 rows"):
        local_lake.sql("SELECT id FROM configurations", untrusted=True, max_rows=100)
    assert local_lake.sql("SELECT id FROM configurations LIMIT 100", untrusted=True, max_rows=100).num_rows == 100
    with pytest.raises(SQLError, match="time limit"):
        local_lake.sql("SELECT count(*) FROM range(1000000000000) a", untrusted=True, timeout=0.5)
    # scalar and list work that DuckDB's interrupt does not reach: stopped by time or memory all the same
    t0 = time.monotonic()
    with pytest.raises(SQLError, match="time limit|out of memory"):
        local_lake.sql("SELECT len(range(0, 100000000)::VARCHAR)", untrusted=True, timeout=2)
    with pytest.raises(SQLError, match="time limit|out of memory"):
        local_lake.sql("SELECT list_sort(range(0, 200000000))", untrusted=True, timeout=2)
    assert time.monotonic() - t0 < 20
    # a few rows of many bytes: refused, not returned
    with pytest.raises(SQLError, match="larger than|out of memory|time limit"):
        local_lake.sql("SELECT repeat('x', 50000000) FROM range(20)", untrusted=True, max_bytes=64 << 20)
    # and the lake's own connection is untouched by the sandbox
    assert local_lake.count() == 2000


# ---------------------------------------------------------------- export


def test_export_then_redeposit_gives_identical_ids(lake, tmp_path):
    deposit_sample(lake, "mlearn")
    f = 'info.group = "Elastic" OR nsites < 40'
    out = tmp_path / "subset.xyz"
    n = lake.export(f, str(out))
    want = set(lake.search(f, columns=["id"]).column("id").to_pylist())
    assert n == len(want) > 0
    frames = ase.io.read(out, ":")
    assert all({"REF_energy", "REF_stress"} <= set(a.info) and "REF_forces" in a.arrays for a in frames)
    assert all(a.calc is None for a in frames)  # nothing under plain energy/forces for MACE to rename
    other = mliplake.Lake(tmp_path / "other")
    report = other.deposit([out], manifest=tmp_path / "subset.xyz.manifest.yaml")
    assert report.stored == n
    assert set(other.search(None, columns=["id"]).column("id").to_pylist()) == want


def test_export_parquet_and_original_keys(samples_lake, tmp_path):
    n = samples_lake.export('dataset = "rmd17-ethanol" AND info.md17_index < 20000', str(tmp_path / "s.parquet"),
                            format="parquet")
    t = pq.read_table(tmp_path / "s.parquet")
    assert t.num_rows == n > 0 and t.schema.names[0] == "config_id"
    samples_lake.export('dataset = "rmd17-ethanol"', str(tmp_path / "o.xyz"), original_keys=True)
    got = ase.io.read(tmp_path / "o.xyz", ":")
    src = {a.info["md17_index"]: a for p in sample_files("rmd17") for a in ase.io.read(p, ":")}
    for a in got[:100]:
        s = src[a.info["md17_index"]]
        assert a.info["REF_energy"] == s.info["REF_energy"]
        np.testing.assert_array_equal(a.arrays["REF_forces"], s.arrays["REF_forces"])
        np.testing.assert_array_equal(a.positions, s.positions)


def test_search_cli(samples_lake):
    run = lambda *a: CliRunner().invoke(main, ["--lake", samples_lake.url, *a])  # noqa: E731
    r = run("search", 'elements HAS ONLY "Si" AND info.group = "Vacancy"', "--limit", "2")
    assert r.exit_code == 0 and r.output.startswith("64 configurations (first 2)")
    assert run("search", "--count", 'elements HAS "N"').output.strip() == "501"  # 500 molecules + 1 atom
    r = run("search", 'nsites < 3', "--json", "--columns", "id,dataset,energy")
    doc = json.loads(r.output)
    assert doc["count"] == 4 and set(doc["rows"][0]) == {"id", "dataset", "energy"}
    r = run("search", 'nsites < "ten"')
    assert r.exit_code == 1 and "Traceback" not in r.output and "compare it with a number" in r.output


@pytest.mark.parametrize("f", ['nsites > 10', 'elements HAS "Si"', 'info.config_type = "isolated_atom" OR nsites < 3',
                               'dataset = "3bpa"', 'energy_per_atom < -100'])
@pytest.mark.parametrize("limit", [1, 7, 600])
@pytest.mark.parametrize("cols", [["id", "dataset", "source_file", "frame_index", "energy", "positions", "info"],
                                  ["id", "dataset", "nsites", "energy_per_atom"]], ids=["wide", "narrow"])
def test_limited_search_is_the_head_of_the_full_result(samples_lake, f, limit, cols):
    """A limited search of wide columns finds its rows in two steps (sort keys, then the columns of
    those rows), of narrow ones in one: the same rows, values and order as the head of the
    unlimited search either way."""
    full = samples_lake.search(f, columns=cols)
    assert samples_lake.search(f, columns=cols, limit=limit).equals(full.slice(0, limit))


def test_an_export_comes_out_in_the_same_order_every_time(tmp_path):
    """A streamed export has no ORDER BY (memory stays flat), so its order is the order rows are
    stored in; a resumed download skips what it has, so that order must not change from one run to
    the next, for a reader restricted to some datasets too (a semi-join in the plan shuffled rows
    between DuckDB's threads once a scan had several row groups)."""
    from mliplake.access import ANONYMOUS

    lake = mliplake.Lake(tmp_path / "lake")
    for k, name in enumerate(["open", "closed"]):
        tiny_frames(tmp_path / f"{name}.xyz", "Si", 60_000 if name == "open" else 10, offset=k)
        lake.deposit([tmp_path / f"{name}.xyz"], dataset=name)
    lake.set_visibility("closed", "private")
    anon = lake.as_principal(ANONYMOUS)
    runs = []
    for i in range(5):
        anon.export(None, tmp_path / f"run{i}.parquet", format="parquet", progress=False)
        runs.append((tmp_path / f"run{i}.parquet").read_bytes())
    assert all(r == runs[0] for r in runs)
    assert pq.read_table(tmp_path / "run0.parquet").num_rows == 60_000
    # a selection of ids (POST /export with ids) too, skipped into as a resumed download does
    from mliplake.query.export import stream

    ids = pq.read_table(tmp_path / "run0.parquet", columns=["config_id"]).column(0).to_pylist()[::7]
    picks = [b"".join(stream(anon, None, "parquet", ids=ids, skip=100)) for _ in range(3)]
    assert picks[0] == picks[1] == picks[2]
