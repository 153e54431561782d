"""Re-ingesting is a new version, not a destruction; a bad re-run does not replace a good deposit."""
from __future__ import annotations

import pytest
import yaml
from support import SAMPLES, sample_files

from mliplake.ingest.deposit import DepositError


def test_an_all_quarantined_rerun_keeps_the_stored_version(lake):
    files = sample_files("mlearn")
    manifest = yaml.safe_load((SAMPLES["mlearn"] / "manifest.yaml").read_text())
    first = lake.deposit(files, manifest=manifest)
    v1 = lake.snapshot()
    # the same files, with a mistaken manifest that makes every file unreadable
    wrong = dict(manifest, files=[{"path": f.name, "format": "extxyz"} for f in files])
    with pytest.raises(DepositError, match="kept"):
        lake.deposit(files, manifest=wrong)
    assert lake.count() == first.stored == 239
    assert lake.record(first.deposit_id)["stored"] == 239
    # said on purpose, it replaces it, and the good version stays readable by its number
    second = lake.deposit(files, manifest=wrong, replace=True)
    assert second.deposit_id == first.deposit_id and second.stored == 0 and second.status == "quarantined"
    assert lake.count() == 0 and lake.quarantine(first.deposit_id).num_rows == len(files)
    (old,) = lake.sql(f"SELECT count(*) FROM lake.configurations AT (VERSION => {v1})").fetchone()
    assert old == 239
