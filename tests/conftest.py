from __future__ import annotations

import pytest

from trioquic.testing import development_certificate


@pytest.fixture(scope="session", autouse=True)
def _certificate() -> None:
    # Generate the shared development certificate once, outside any test's clock.
    development_certificate()
