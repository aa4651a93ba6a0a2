"""Sphinx configuration of the sgn_theano documentation (``sphinx-build -W docs build``)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "sgn_theano"
author = "sgn_theano contributors"
copyright = "2026, sgn_theano contributors"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections give the types
html_theme = "alabaster"
html_title = "sgn_theano"
