"""Every test of this directory counts towards test_zz_checkprops.py (prop_coverage)."""

from __future__ import annotations

from collections.abc import Iterator

import prop_coverage
import pytest


@pytest.fixture(autouse=True)
def _note_module(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    prop_coverage.RAN.add(request.module.__name__.rsplit(".", 1)[-1])
