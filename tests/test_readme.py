"""The README: short, its test command the one CI runs, its imports importable."""

import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_readme_is_short():
    assert len(README.splitlines()) <= 300


def test_ci_runs_the_readme_test_command():
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    commands = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    # the same installs and test run (CI adds sudo where needed and quiets apt-get)
    runs = [command[command.index("python3 -m pip"):] for command in commands
            if "pytest" in command]
    assert runs and all(run in ci for run in runs)


def test_every_import_the_readme_shows_works():
    imports = re.findall(r"^\s*(from sgn_theano[\w.]* import [\w, ]+|import sgn_theano[\w.]*)",
                         README, flags=re.M)
    assert len(imports) >= 3
    for statement in imports:
        exec(statement, {})
    for module in re.findall(r"`(sgn_theano(?:\.\w+)+)`", README):
        __import__(module)  # the modules the README names, e.g. `sgn_theano.models`


def test_the_main_job_table_is_the_one_its_record_makes():
    """The README's main-job table is generated from the JSON record `sgn-bench --quick`
    wrote (docs/records/main_job.json), as the docs' results page is."""
    from sgn_theano.bench.table import record_markdown

    with open(os.path.join(ROOT, "docs", "records", "main_job.json")) as stream:
        generated = record_markdown(json.load(stream))
    section = README.split("## The main job")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert rows == [line for line in generated.splitlines() if line.startswith("|")]
    assert len(rows) >= 8  # two batch sizes, three optimizers
