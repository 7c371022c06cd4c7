from __future__ import annotations

import os

import hypothesis
import pytest

from trioquic.testing import development_certificate

# CI explores the same examples every run (a red run is reproducible); a local
# run draws new ones.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
_profile = os.environ.get("TRIOQUIC_HYPOTHESIS_PROFILE") or (
    "ci" if os.environ.get("CI") else None
)
if _profile:
    hypothesis.settings.load_profile(_profile)


@pytest.fixture(scope="session", autouse=True)
def _certificate() -> None:
    # Generate the shared development certificate once, outside any test's clock.
    development_certificate()
