"""One SparkSession for the whole suite, on a throw-away lakehouse, with the project's own conf."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def lakehouse(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lakehouse")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Where generated exports go: <data_dir>/landing is the suite's landing folder."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def settings(lakehouse, data_dir):
    from cdp.config import load_settings

    os.environ["CDP_LAKEHOUSE"] = str(lakehouse)
    os.environ["CDP_LANDING"] = str(data_dir / "landing")
    loaded = load_settings("test", ROOT / "conf")
    loaded.validate_all()
    return loaded


@pytest.fixture(scope="session")
def spark(settings):
    from cdp.spark import build_session

    session = build_session(settings, app_name="cdp-tests")
    yield session
    session.stop()
