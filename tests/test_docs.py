"""The documentation site against the code: every module in the API page, every
table of the results page generated from a record."""

import os
import pkgutil
import re

import sgn_theano

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def read(name: str) -> str:
    with open(os.path.join(DOCS, name), encoding="utf-8") as stream:
        return stream.read()


def test_the_api_page_documents_every_module():
    documented = set(re.findall(r"automodule:: (\S+)", read("api.rst")))
    modules = {module.name for module in pkgutil.walk_packages(sgn_theano.__path__,
                                                                "sgn_theano.")}
    assert modules - documented == {"sgn_theano.__main__"}
    assert documented <= modules | {"sgn_theano"}


def test_every_results_table_is_generated_from_a_record():
    """No table is copied into the results page: each comes from ``records/NAME.json``
    through ``_generated/NAME.md`` at the docs build (``docs/conf.py``), and every record
    is shown."""
    page = read("results.md")
    assert not [line for line in page.splitlines() if line.startswith("|")]
    included = set(re.findall(r"```\{include\} _generated/(\w+)\.md", page))
    records = {name[:-5] for name in os.listdir(os.path.join(DOCS, "records"))}
    assert included == records
