"""Fixtures of the file drop tests: the Jasper simulator (the defs tests' fixture) and a data folder
per test (the embedded default drop folders live under it)."""

from pathlib import Path

import pytest

from ..defs.conftest import jasper  # noqa: F401 - the same simulator fixture as the pipeline tests


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("BULKCHANGE_HOME", str(path))
    return path
