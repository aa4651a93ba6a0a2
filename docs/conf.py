"""Sphinx configuration of the sgn_theano documentation (``sphinx-build -W docs build``)."""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
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
    """``_generated/NAME.md`` from ``records/NAME.json``: an ``sgn-bench`` record's table
    (:func:`sgn_theano.bench.table.record_markdown`) or a round-robin benchmark's
    (``benchmarks/bench_round_robin.py``)."""
    from sgn_theano.bench.table import record_markdown

    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "benchmarks"))
    from bench_round_robin import record_markdown as round_robin_markdown

    os.makedirs(GENERATED, exist_ok=True)
    for name in sorted(os.listdir(RECORDS)):
        with open(os.path.join(RECORDS, name)) as stream:
            record = json.load(stream)
        text = record_markdown(record) if "runs" in record else round_robin_markdown(record)
        with open(os.path.join(GENERATED, name.replace(".json", ".md")), "w") as stream:
            stream.write(text)


def setup(app):
    app.connect("builder-inited", write_record_tables)
