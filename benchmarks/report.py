"""Writing a benchmark's report, shared by the scripts in this folder."""

from __future__ import annotations

import json
import os


def write_report(report: dict, path: str) -> None:
    """Write ``report`` as indented JSON to ``path`` (folders made as needed) and say so."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as stream:
        json.dump(report, stream, indent=1)
    print(f"\nwrote {path}")
