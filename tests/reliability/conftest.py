"""Fixtures of the reliability suite."""

import pytest
from reliability_kit import Exports


@pytest.fixture
def exports(tmp_path) -> Exports:
    return Exports(tmp_path)
