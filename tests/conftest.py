"""Session-wide fixtures: one tiny organism build and one Ray cluster per test session."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def _rsearch_home(tmp_path_factory):
    """Keeps every cache (organism, activation stores) inside the session's temp dir."""
    home = os.environ.get("RSEARCH_TEST_HOME") or str(tmp_path_factory.mktemp("rsearch_home"))
    os.environ["RSEARCH_HOME"] = home
    yield home
