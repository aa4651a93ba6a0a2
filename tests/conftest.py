"""What pytest sets up before any test module: a PyTensor compile directory per
worker, the C mode's BLAS, and the shared fixtures. The helpers the tests import
(tiny problems, dense reference matrices, the resume check) are in ``helpers.py``."""

from __future__ import annotations

import os


def _compile_directory_per_worker() -> None:
    """Give each pytest-xdist worker a PyTensor compile directory of its own, before
    PyTensor is imported: PyTensor compiles C code under one lock per directory, so
    workers sharing one would compile one module at a time. Subprocesses of the tests
    inherit it. Explicit ``compiledir``/``base_compiledir`` flags get a worker subfolder."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    flags = [item for item in os.environ.get("PYTENSOR_FLAGS", "").split(",") if item]
    settings = dict(item.split("=", 1) for item in flags)
    name = "compiledir" if "compiledir" in settings else "base_compiledir"
    base = settings.get(name, os.path.join(os.path.expanduser("~"), ".pytensor"))
    settings[name] = os.path.join(base, f"xdist-{worker}")
    os.environ["PYTENSOR_FLAGS"] = ",".join(f"{key}={value}" for key, value in settings.items())


_compile_directory_per_worker()

import numpy as np  # noqa: E402  (PyTensor must come after the compile directory is set)
import pytest  # noqa: E402

from sgn_theano import link_openblas  # noqa: E402

link_openblas()  # the C mode's BLAS, set up openly (test_side_effects.py tests the default)


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(1234)
