"""Sphinx configuration: the docs/*.md pages (MyST) and an API reference from the docstrings.

Build: ``nox -s docs``, or ``python -m sphinx -W --keep-going -n -b html docs docs/_build/html``.
"""

from __future__ import annotations

import os
import re
import sys

from sphinx.application import Sphinx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import unipool

project = "unipool"
author = "the unipool authors"
copyright = "the unipool authors"
release = unipool.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

html_theme = "furo"
html_title = f"unipool {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Nitpicky (-n): every reference must resolve, except to names of other projects (no
# intersphinx: the build needs no network) and to the standard library.
nitpick_ignore_regex = [
    (r"py:.*", r"(typing|typing_extensions|collections\.abc|types|abc|os|pathlib|ssl)\..*"),
    (r"py:.*", r"(anyio|trio|asyncio|psycopg|asyncpg|psqlpy)(\..*)?"),
    (r"py:.*", r"(sqlalchemy|opentelemetry|prometheus_client)(\..*)?"),
    (r"py:class", r"(Any|Callable|Awaitable|Iterator|AsyncIterator|Mapping|Sequence|Iterable)"),
    (r"py:class", r"(Engine|AsyncEngine)"),  # SQLAlchemy's, imported for type checking only
    # private bases (shown by show-inheritance); what they give is documented on the class
    (r"py:class", r"unipool\._.*"),
]


# index.md stays plain Markdown (a list of links, as GitHub shows it): the site's table of
# contents is made from those links, in their order, when Sphinx reads the page.
_PAGE_LINK = re.compile(r"\]\(([\w-]+)\.md\)")


def _add_toctree(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname != root_doc:
        return
    pages = list(dict.fromkeys(_PAGE_LINK.findall(source[0])))
    source[0] += "\n```{toctree}\n:hidden:\n:maxdepth: 2\n\n" + "\n".join(pages) + "\n```\n"


def setup(app: Sphinx) -> None:
    app.connect("source-read", _add_toctree)
