"""The command line as a user types it."""
from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner
from conftest import SAMPLES, make_bucket, sample_files

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
