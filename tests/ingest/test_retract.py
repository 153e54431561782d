"""Retraction: rows leave every view at once, the record keeps who, when and why, raw files stay
unless purged, and training sets built before keep working and say what was retracted."""
from __future__ import annotations

import pytest
from support import deposit_sample, sample_files

from mliplake.access import AccessError, Principal
from mliplake.catalogue import cards as catalogue
from mliplake.ml import training_sets as training


def test_retract_a_deposit_everywhere_at_once(lake):
    eth = deposit_sample(lake, "rmd17")
    si = deposit_sample(lake, "mlearn")
    catalogue.refresh(lake)
    ts = training.materialise(lake, training.TrainingSetSpec(name="all", filter=None))
    before = lake.count()
    assert lake.retract(si.deposit_id, reason="wrong functional in the manifest") == [si.deposit_id]
    assert lake.count() == before - 239 == lake.count('dataset = "rmd17-ethanol"')
    assert lake.count('elements HAS "Si"') == 0
    assert lake.sql("SELECT count(*) FROM configurations WHERE dataset = 'mlearn-si'").fetchone()[0] == 0
    assert lake.sql("SELECT count(*) FROM configurations WHERE dataset = 'mlearn-si'", untrusted=True).to_pylist() == \
        [{"count_star()": 0}]
    assert "mlearn-si" not in {d["dataset"] for d in lake.datasets()}
    assert "mlearn-si" not in {r[0] for r in lake.sql("SELECT dataset FROM catalogue").fetchall()}
    rec = lake.record(si.deposit_id)
    assert rec["status"] == "retracted" and rec["retraction_reason"] == "wrong functional in the manifest"
    assert rec["retracted_by"] == "local" and rec["retracted_at"]
    assert {d["status"] for d in lake.deposits() if d["deposit_id"] == si.deposit_id} == {"retracted"}
    assert lake.raw_files(si.deposit_id)  # kept for audit
    # the training set built before still loads, with every id it had; its lineage names the retraction
    again = training.load(lake, "all", ts.version)
    assert len(again.config_ids()) == len(ts.config_ids())
    # depositing the same files again needs the depositor to say so
    from mliplake.ingest.deposit import DepositError

    with pytest.raises(DepositError, match="retracted"):
        deposit_sample(lake, "mlearn")
    r = lake.deposit(sample_files("mlearn"), manifest=__import__("support").SAMPLES["mlearn"] / "manifest.yaml",
                     replace=True)
    assert r.stored == 239 and lake.count('elements HAS "Si"') == 239
    assert eth.deposit_id in {d["deposit_id"] for d in lake.deposits()}


def test_retract_a_dataset_with_purge(local_lake):
    deposit_sample(local_lake, "3bpa")
    ids = local_lake.retract(dataset="3bpa", reason="licence withdrawn", purge=True)
    assert ids and local_lake.count() == 0
    for dep in ids:
        assert local_lake.raw_files(dep) == []
        assert not local_lake.fs.exists(local_lake.raw_dir(dep))
        assert local_lake.record(dep)["purged"] is True
    audit = local_lake.sql("SELECT action, target, actor FROM lake.audit").fetchall()
    assert ("purge", ids[0], "local") in audit


def test_only_owner_curator_or_admin_may_retract(local_lake):
    dep = deposit_sample(local_lake, "mlearn").deposit_id
    for who in (Principal.anonymous(), Principal.user("mallory")):
        with pytest.raises((AccessError, KeyError)):
            local_lake.as_principal(who).retract(dep, reason="because")
    with pytest.raises(ValueError, match="reason"):
        local_lake.retract(dep, reason="  ")
    local_lake.as_principal(Principal.user("cora", roles=["curator"])).retract(dep, reason="duplicate of another set")
    assert local_lake.count() == 0


def test_cli_retract_visibility_and_quarantine_ids(tmp_path):
    from click.testing import CliRunner

    from mliplake import Lake
    from mliplake.cli import main

    lake = Lake(tmp_path / "lake")
    dep = deposit_sample(lake, "mlearn").deposit_id
    run = lambda *a: CliRunner().invoke(main, ["--lake", str(tmp_path / "lake"), *a])  # noqa: E731
    r = run("visibility", "mlearn-si", "private", "--group", "si-people")
    assert r.exit_code == 0 and "private, groups si-people" in r.output
    assert lake.as_principal(Principal.anonymous()).count() == 0
    r = run("quarantine", "../../../outside/evil")
    assert r.exit_code != 0 and "not a deposit id" in r.output and "Traceback" not in r.output
    r = run("retract", dep)
    assert r.exit_code != 0 and "--reason" in r.output
    r = run("retract", dep, "--reason", "superseded")
    assert r.exit_code == 0 and f"retracted {dep}" in r.output
    assert "retracted" in run("deposits").output
