"""Sphinx configuration of trioquic's documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html`` (or ``nox -s docs``).
Everything needed is local: no intersphinx, nothing fetched at build time.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
if importlib.util.find_spec("trioquic") is None:  # not installed: use the checkout
    sys.path.insert(0, str(ROOT))

import trioquic  # noqa: E402

project = "trioquic"
author = "The trioquic developers"
copyright = "The trioquic developers"
release = trioquic.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinxcontrib_trio",
    # docs/performance.md is Markdown (MyST): its tables are benchmark output.
    "myst_parser",
]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# trioquic.testing is documented from its docstrings; should the module be
# missing from a build, its page says so instead of failing the build.
HAVE_TESTING = importlib.util.find_spec("trioquic.testing") is not None

exclude_patterns = ["_build"]
templates_path: list[str] = []
default_role = "py:obj"
primary_domain = "py"
highlight_language = "default"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autoclass_content = "class"

html_theme = "furo"
html_title = f"trioquic {release}"
html_static_path: list[str] = []
html_theme_options = {"navigation_with_keys": True}


TESTING_START = ".. testing-module-start"
TESTING_END = ".. testing-module-end"


def _without_testing_module(app: object, docname: str, source: list[str]) -> None:
    if docname != "testing" or HAVE_TESTING:
        return
    text = source[0]
    start, end = text.find(TESTING_START), text.find(TESTING_END)
    if start != -1 and end != -1:
        note = ".. note::\n\n   ``trioquic.testing`` is not part of this build.\n\n"
        source[0] = text[:start] + note + text[end + len(TESTING_END) :]


def _check_api_page(app: object) -> None:
    """Warn (an error under ``-W``) about public names the API page misses."""
    import ast

    from sphinx.util import logging

    tree = ast.parse((ROOT / "trioquic" / "__init__.py").read_text())
    public = [
        alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]
    page = (ROOT / "docs" / "api.rst").read_text()
    for name in public:
        if f":: {name}\n" not in page:
            logging.getLogger(__name__).warning(
                "trioquic.%s is public but not documented in api.rst", name
            )


def setup(app: object) -> dict[str, object]:
    app.connect("source-read", _without_testing_module)  # type: ignore[attr-defined]
    app.connect("builder-inited", _check_api_page)  # type: ignore[attr-defined]
    return {"parallel_read_safe": True}
