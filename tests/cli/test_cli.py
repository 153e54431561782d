"""The command line as a user types it."""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner
from support import SAMPLES, make_bucket, sample_files

from mliplake.cli import main


def run(*args, env=None):
    result = CliRunner().invoke(main, list(map(str, args)), env=env, catch_exceptions=False)
    return result


def test_demo_deposits_the_three_samples_with_counts_matching_the_files(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mliplake.cli", "--lake", str(tmp_path / "lake"), "demo"],
                         capture_output=True, text=True, check=True).stdout
    assert "dataset 3bpa: stored" in out and "frames read 504, stored 504" in out
    assert "dataset rmd17-ethanol: stored" in out and "frames read 2000, stored 2000" in out
    assert "dataset mlearn-si: stored" in out and "frames read 239, stored 239" in out
    table = out.split("datasets:")[1]
    assert "mlearn-si" in table and "energy,forces,stress" in table and "BSD-3-Clause" in table


def test_deposit_list_and_env_default(tmp_path):
    lake = tmp_path / "lake"
    r = run("deposit", *sample_files("mlearn"), "--manifest", SAMPLES["mlearn"] / "manifest.yaml",
            env={"MLIPLAKE_LAKE": str(lake)})
    assert r.exit_code == 0, r.output
    assert "stored 239" in r.output and "virial_stress->stress (239)" in r.output
    r = run("--lake", lake, "deposits")
    assert "mlearn-si" in r.output and "239" in r.output
    r = run("--lake", lake, "datasets")
    assert "Si" in r.output and "14758" in r.output  # atoms


def test_deposit_json_report_and_missing_file(tmp_path):
    r = run("--lake", tmp_path / "lake", "deposit", tmp_path / "nope.xyz", "--dataset", "x")
    assert r.exit_code != 0 and "no such file" in r.output


def test_cli_on_s3(s3_endpoint, tmp_path):
    url = f"s3://{make_bucket(s3_endpoint)}/lake"
    r = run("--lake", url, "deposit", *sample_files("3bpa"), "--manifest", SAMPLES["3bpa"] / "manifest.yaml")
    assert r.exit_code == 0, r.output
    listing = run("--lake", url, "deposits").output.splitlines()[-1].split()
    assert listing[1:3] == ["3bpa", "stored"] and listing[4:6] == ["504", "504"]


# ---------------------------------------------------------------- bad input: a clear line, never a traceback


BAD_OPTIONS = [
    (["search", "--limit", "-1", "nsites > 1"], ["--limit", "-1"]),
    (["search", "--limit", "100000000000000000000"], ["--limit"]),
    (["summary", "--bins", "0"], ["--bins"]),
    (["summary", "--bins", "-3"], ["--bins"]),
    (["summary", "--plot", "{tmp}/h.xyz"], ["--plot", "h.xyz", ".png"]),
    (["summary", "--plot", "{dir}"], ["{dir}", "is a directory"]),
    (["deposit", "{file}", "-m", "{dir}"], ["--manifest", "{dir}", "is a directory"]),
    (["sql", "SELECT 1", "--format", "csv", "--out", "{dir}"], ["--out", "{dir}"]),
    (["sql", "SELECT 1", "--format", "xml"], ["--format", "xml"]),
    (["sql", " "], ["the query is empty"]),
    (["export", "-o", "{dir}"], ["{dir}", "is a directory"]),
    (["training-set", "{dir}"], ["{dir}", "is a directory"]),
    (["train", "{dir}"], ["{dir}", "is a directory"]),
    (["train", "{file}", "--slurm", "--gpus", "-1"], ["--gpus"]),
    (["train", "{file}", "--cpus", "0"], ["--cpus"]),
    (["models", "x", "--download", "{dir}"], ["{dir}", "is a directory"]),
]


@pytest.mark.parametrize("args, needles", BAD_OPTIONS, ids=[" ".join(a)[:40] for a, _ in BAD_OPTIONS])
def test_bad_option_values_are_usage_errors(tmp_path, args, needles):
    folder, data = tmp_path / "a folder", tmp_path / "data.xyz"
    folder.mkdir()
    data.write_text("1\n\nH 0 0 0\n")
    fill = lambda s: s.format(tmp=tmp_path, dir=folder, file=data)  # noqa: E731
    r = run("--lake", tmp_path / "lake", *map(fill, args))  # a traceback would raise here
    assert r.exit_code == 2, r.output
    for needle in map(fill, needles):
        assert needle in r.output, r.output


def test_summary_key_is_a_field_name_and_filters_may_have_or(samples_lake):
    """A summary key is a name: 'x OR y' used to reach the filter parser and crash on the Or node."""
    r = run("--lake", samples_lake.url, "summary", "-k", "nsites IS KNOWN OR nsites")
    assert r.exit_code == 1 and "is not a field name" in r.output, r.output
    r = run("--lake", samples_lake.url, "summary", "-k", "nsites", "-k", "info.config_type",
            "-f", 'nsites < 5 OR info.config_type = "rmd17"')
    assert r.exit_code == 0, r.output
    assert "configurations: 2004" in r.output and "rmd17 (2000)" in r.output


def test_errors_about_paths_and_servers_are_one_line(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    r = run("--lake", not_a_folder, "deposits")
    assert r.exit_code == 1 and str(not_a_folder) in r.output, r.output
    unreachable = {"MLIPLAKE_OPENSEARCH_URL": "http://127.0.0.1:9"}
    for command in (["index", "status"], ["index", "reconcile"]):
        r = run("--lake", tmp_path / "lake", *command, env=unreachable)
        assert r.exit_code == 1 and "unreachable" in r.output and "http://127.0.0.1:9" in r.output, r.output
    r = run("--lake", tmp_path / "lake", "lineage", "nope")
    assert r.exit_code == 1 and "no model" in r.output, r.output
    r = run("--lake", tmp_path / "lake", "sql", "SET threads = 1")
    assert r.exit_code == 0, r.output
