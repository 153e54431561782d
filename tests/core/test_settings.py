"""One settings object: typed, read once, listed in infra/env.example, shown with secrets masked."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mliplake.cli import main
from mliplake.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_lists_every_setting():
    text = (ROOT / "infra" / "env.example").read_text()
    missing = [n for n in Settings.model_fields if f"MLIPLAKE_{n.upper()}=" not in text]
    assert missing == []


def test_settings_are_typed_and_checked(monkeypatch):
    monkeypatch.setenv("MLIPLAKE_SQL_TIMEOUT", "2.5")
    assert Settings().sql_timeout == 2.5
    monkeypatch.setenv("MLIPLAKE_SQL_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="sql_timeout"):
        Settings()


def test_config_shows_effective_settings_with_secrets_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("MLIPLAKE_OPENSEARCH_URL", "https://admin:hunter2@search.example:9200")
    monkeypatch.setenv("MLIPLAKE_CATALOG", "postgres:dbname=lake host=db password=s3cret")
    out = CliRunner().invoke(main, ["--lake", str(tmp_path / "lake"), "config"]).output
    assert "hunter2" not in out and "s3cret" not in out
    assert "opensearch_url" in out and "admin:***@search.example" in out and "password=***" in out
    assert str(tmp_path / "lake") in out  # the --lake given wins over the environment
