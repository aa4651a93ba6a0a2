"""Sphinx configuration of the sgn_theano documentation (``sphinx-build -W docs build``)."""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
#: JSON records the benchmarks wrote, and the Markdown tables made from them at each build
#: (pages include ``_generated/NAME.md`` for ``records/NAME.json``).
RECORDS, GENERATED = os.path.join(HERE, "records"), os.path.join(HERE, "_generated")

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
exclude_patterns = ["_build", "_generated", "records"]
myst_heading_anchors = 3
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections give the types
html_theme = "alabaster"
html_title = "sgn_theano"


def write_record_tables(app) -> None:
    """``_generated/NAME.md`` from ``records/NAME.json``, an ``sgn-bench`` record
    (:func:`sgn_theano.bench.table.record_markdown`) or the summary record of
    ``sgn-bench --paper`` (:func:`sgn_theano.bench.paper.paper_markdown`); the docs build
    needs sgn_theano installed (``pip install -e ".[docs]"``)."""
    from sgn_theano.bench.paper import paper_markdown
    from sgn_theano.bench.table import record_markdown

    os.makedirs(GENERATED, exist_ok=True)
    for name in sorted(os.listdir(RECORDS)):
        with open(os.path.join(RECORDS, name)) as stream:
            record = json.load(stream)
        text = paper_markdown(record) if "paper" in record else record_markdown(record)
        with open(os.path.join(GENERATED, name.replace(".json", ".md")), "w") as stream:
            stream.write(text)


def setup(app):
    app.connect("builder-inited", write_record_tables)
