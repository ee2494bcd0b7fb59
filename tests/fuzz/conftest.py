"""Fixtures of the fuzzing tests: the seed bundle (built once per session: it builds seven engines)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fuzz_bundle():
    from tensorkiln.fuzz.seeds import build_bundle

    bundle = build_bundle()
    assert not bundle.build_errors, f"fuzz seeds that no longer build: {bundle.build_errors}"
    return bundle
