from __future__ import annotations

import os

import hypothesis
import pytest
from helpers import current_engine

from trioquic.testing import development_certificate

#: Every property test runs at least this many examples when
#: TRIOQUIC_PROPERTY_MIN_EXAMPLES is set (``nox -s fuzz`` sets 10,000): the
#: tests with an explicit count take it through ``test_properties.examples``
#: (or read it themselves), the others through the profile below. A test
#: left below it fails the collection rather than run short.
MIN_EXAMPLES = int(os.environ.get("TRIOQUIC_PROPERTY_MIN_EXAMPLES") or 0)

# CI explores the same examples every run (a red run is reproducible); a local
# run draws new ones.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
# The long exploring run of ``nox -s fuzz``: new examples every run (the seed
# of a failure is printed to reproduce it), no deadline.
hypothesis.settings.register_profile(
    "fuzz",
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.data_too_large,
    ],
)
_profile = os.environ.get("TRIOQUIC_HYPOTHESIS_PROFILE") or (
    "ci" if os.environ.get("CI") else None
)
if _profile:
    hypothesis.settings.load_profile(_profile)
if hypothesis.settings.default.max_examples < MIN_EXAMPLES:
    hypothesis.settings.register_profile(
        "min-examples", hypothesis.settings.default, max_examples=MIN_EXAMPLES
    )
    hypothesis.settings.load_profile("min-examples")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "property: hypothesis property tests (marked automatically)"
    )


#: The engine-only markers (registered in pyproject.toml), by the engine each
#: keeps its tests to.
ENGINE_MARKERS = {"aioquic_only": "aioquic", "qh3_only": "qh3"}


def _skip_on_other_engines(item: pytest.Item, engine: str) -> None:
    """Skip ``item`` if an engine-only marker keeps it to another engine; the
    skip says why, in the marker's words."""
    for name, only in ENGINE_MARKERS.items():
        marker = item.get_closest_marker(name)
        if marker is None:
            continue
        reason = marker.args[0] if marker.args else marker.kwargs.get("reason")
        if not reason:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.{name} needs a reason "
                f'(@pytest.mark.{name}("why"))'
            )
        if only != engine:
            item.add_marker(pytest.mark.skip(reason=f"{only} engine only: {reason}"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    engine = current_engine()
    short = []
    for item in items:
        _skip_on_other_engines(item, engine)
        function = getattr(item, "function", None)
        if function is None or not hypothesis.is_hypothesis_test(function):
            continue
        item.add_marker(pytest.mark.property)
        settings = getattr(function, "_hypothesis_internal_use_settings", None)
        if settings is not None and settings.max_examples < MIN_EXAMPLES:
            short.append(f"{item.nodeid} ({settings.max_examples})")
    if short:
        raise pytest.UsageError(
            f"TRIOQUIC_PROPERTY_MIN_EXAMPLES={MIN_EXAMPLES}, but these property "
            "tests would run fewer examples: " + ", ".join(short)
        )


@pytest.fixture(scope="session")
def engine() -> str:
    """The QUIC engine under this run (``TRIOQUIC_ENGINE``, else aioquic)."""
    return current_engine()


@pytest.fixture(scope="session", autouse=True)
def _certificate() -> None:
    # Generate the shared development certificate once, outside any test's clock.
    development_certificate()
