"""Beside PyMC (which pins PyTensor 2.38): its likelihoods as SGN losses, and PyMC still
samples with the library imported. Skipped where PyMC is not installed (`.ci/run` runs
these in an environment made with ``pymc==5.28.5``)."""

import importlib.util
import os

import numpy as np
import pytest

pm = pytest.importorskip("pymc")

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "pymc_likelihood.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("pymc_likelihood", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the runs; __main__ is not run
    return module


@pytest.mark.parametrize("run", ["normal_regression", "categorical_classifier"])
def test_the_example_trains_each_likelihood(example, run):
    losses = getattr(example, run)(40, "C")
    assert np.isfinite(losses).all()
    assert losses[-1] <= 0.5 * losses[0]


def test_pymc_still_samples_with_the_library_imported(example):
    import sgn_theano  # noqa: F401  (imported, and the example's SGNs built before)

    with pm.Model():
        mu = pm.Normal("mu", 0.0, 10.0)
        pm.Normal("y", mu, 1.0, observed=np.array([1.8, 2.1, 2.3, 1.9]))
        trace = pm.sample(draws=200, tune=200, chains=1, cores=1, random_seed=0,
                          progressbar=False, compute_convergence_checks=False)
    # the posterior mean of mu is 2.02 (prior sd 10): 200 draws land near it
    assert abs(float(trace.posterior["mu"].mean()) - 2.02) < 0.3
