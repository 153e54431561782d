"""Names and ids from users are names and ids, never paths or filter text."""
from __future__ import annotations

import pytest
from support import deposit_sample

from mliplake.lake import NotFound
from mliplake.ml import models as ml


@pytest.mark.parametrize("bad", ["../../../outside/evil", "dep-../../x", "/etc/passwd", "dep-zz", "", "dep-1234567890abcdef0"])
def test_deposit_ids_are_never_paths(local_lake, tmp_path, bad):
    outside = tmp_path / "outside" / "evil"
    outside.mkdir(parents=True)
    (outside / "SHA256SUMS").write_text("x")
    deposit_sample(local_lake, "3bpa")
    for call in (local_lake.record, local_lake.quarantine, local_lake.raw_files, local_lake.raw_dir):
        with pytest.raises(NotFound):
            call(bad)


def test_dataset_names_are_values_not_filter_text(local_lake):
    deposit_sample(local_lake, "3bpa")
    sneaky = '3bpa" OR dataset != "'
    assert list(local_lake.atoms(dataset=sneaky)) == []
    assert local_lake.configurations(sneaky).num_rows == 0
    assert sum(1 for _ in local_lake.atoms(dataset="3bpa")) == 504


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a/b", "", "x" * 200])
def test_model_ids_are_never_paths(local_lake, bad):
    with pytest.raises(KeyError):
        ml.card(local_lake, bad)
