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


#: The public modules and the page that documents each one's names (with a
#: ``.. module::`` or ``.. currentmodule::`` directive naming the module).
PUBLIC_MODULES = {
    "trioquic": ("trioquic/__init__.py", "api.rst"),
    "trioquic.lowlevel": ("trioquic/lowlevel.py", "api.rst"),
    "trioquic.h3": ("trioquic/h3/__init__.py", "api.rst"),
}


def _module_sections(page: str) -> dict[str, str]:
    """The text of a page by the module its directives make current."""
    import re

    parts = re.split(r"^\.\. (?:current)?module:: (\S+)\n", page, flags=re.M)
    sections = {"": parts[0]}
    for name, text in zip(parts[1::2], parts[2::2], strict=True):
        sections[name] = sections.get(name, "") + text
    return sections


def _check_api_page(app: object) -> None:
    """Warn (an error under ``-W``) about public names the API page misses:
    every name a public module re-exports must be documented in that
    module's section of its page."""
    import ast

    from sphinx.util import logging

    log = logging.getLogger(__name__)
    for module, (source, page_name) in PUBLIC_MODULES.items():
        tree = ast.parse((ROOT / source).read_text())
        public = [
            alias.asname or alias.name
            for node in tree.body
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
            if not (alias.asname or alias.name).startswith("_")
        ]
        page = (ROOT / "docs" / page_name).read_text()
        section = _module_sections(page).get(module, "")
        for name in public:
            if f":: {name}\n" not in section:
                log.warning(
                    "%s.%s is public but not documented in %s", module, name, page_name
                )


def _merge_private_attribute_docs() -> None:
    """Find the ``#:`` comments of public classes in their private modules.

    trioquic renames its public classes' ``__module__`` to the public module
    (``trioquic.QuicSettings``, not ``trioquic._settings.QuicSettings``), so
    autodoc looks for their attribute comments in ``trioquic/__init__.py``
    and finds none. Merge each public module's analysis with that of the
    private modules its names come from, so the fields of ``QuicSettings``,
    the statistics classes and the like are documented.
    """
    import pkgutil

    from sphinx.errors import PycodeError
    from sphinx.pycode import ModuleAnalyzer

    sources: dict[str, list[str]] = {}
    for package in ("trioquic", "trioquic.h3", "trioquic.testing"):
        path = ROOT.joinpath(*package.split("."))
        sources[package] = [
            f"{package}.{info.name}"
            for info in pkgutil.iter_modules([str(path)])
            if info.name.startswith("_")
            and not info.name.startswith("__")
            and not info.ispkg
        ]
    sources["trioquic.lowlevel"] = sources["trioquic"]
    analyze = ModuleAnalyzer.analyze

    def analyze_with_private(self: ModuleAnalyzer) -> None:
        if self._analyzed:
            return
        analyze(self)
        for private in sources.get(self.modname, ()):
            try:
                other = ModuleAnalyzer.for_module(private)
                analyze(other)
            except PycodeError:  # no source to read: nothing to merge
                continue
            for key, lines in other.attr_docs.items():
                if key[0]:  # class attributes only
                    self.attr_docs.setdefault(key, lines)
            for key, annotation in other.annotations.items():
                if key[0]:
                    self.annotations.setdefault(key, annotation)
            offset = len(self.tagorder)
            for name, order in other.tagorder.items():
                self.tagorder.setdefault(name, offset + order)

    ModuleAnalyzer.analyze = analyze_with_private  # type: ignore[method-assign]


def setup(app: object) -> dict[str, object]:
    _merge_private_attribute_docs()
    app.connect("source-read", _without_testing_module)  # type: ignore[attr-defined]
    app.connect("builder-inited", _check_api_page)  # type: ignore[attr-defined]
    return {"parallel_read_safe": True}
