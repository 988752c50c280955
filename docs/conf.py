"""Sphinx configuration of the fobmaml documentation site.

Build it with ``tools/build_docs.sh`` (warnings are errors), which needs fobmaml
installed (the API page imports it) and the ``docs`` extra.
"""

from __future__ import annotations

import fobmaml

project = "fobmaml"
author = "The fobmaml developers"
copyright = "the fobmaml developers; BSD-3-Clause"
release = fobmaml.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
]

# .rst is listed for autosummary, which numpydoc loads; the pages are Markdown.
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# The result folders under docs/ (figure1/, bench/, ...) hold data and figures, not pages.
exclude_patterns = ["_build"]

# MyST: $...$ and $$...$$ math (as GitHub renders it), ::: fences, and anchors for the
# headings, so that pages can link to estimators.md#the-inner-loop and the like.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: numpydoc renders the docstrings; members are listed on the API page
# itself, one directive each, so that every object is documented once.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "furo"
html_title = f"fobmaml {release}"
