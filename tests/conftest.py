"""Suite-wide settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _openvino_cache(tmp_path_factory):
    """Converted OpenVINO IR goes to a folder of this test session, never the user's cache."""
    if os.environ.get("TSC_OPENVINO_CACHE"):
        yield
        return
    os.environ["TSC_OPENVINO_CACHE"] = str(tmp_path_factory.mktemp("openvino-cache"))
    yield
    os.environ.pop("TSC_OPENVINO_CACHE", None)
