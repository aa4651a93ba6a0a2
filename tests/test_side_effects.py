"""Importing sgn_theano and building an SGN change nothing in the host process; the C
mode's OpenBLAS link is done once, visibly, and can be turned off."""

import os
import subprocess
import sys
import textwrap


def run_python(code: str, **environment) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with ``environment`` added (``None`` removes;
    ``PYTENSOR_FLAGS`` are appended to the current ones, so later flags win)."""
    env = dict(os.environ)
    for name, value in environment.items():
        if name == "PYTENSOR_FLAGS" and env.get(name):
            value = f"{env[name]},{value}"
        env.pop(name, None) if value is None else env.__setitem__(name, value)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True)


def test_import_and_construction_change_nothing():
    completed = run_python("""
        import sys, warnings
        import numpy as np, pytensor, pytensor.tensor as pt
        before = pytensor.config.blas__ldflags
        import sgn_theano
        from sgn_theano.models import mlp
        assert pytensor.config.blas__ldflags == before, "import changed blas__ldflags"
        x, y = pt.matrix("x"), pt.ivector("y")
        logits, params = mlp(x, [3, 4, 3], seed=0)
        loss = sgn_theano.softmax_cross_entropy(logits, y)
        with warnings.catch_warnings():
            warnings.simplefilter("error", sgn_theano.compilation.modes.BlasLinkWarning)
            # what SGN(mode="C") does to the process before it compiles (C compilation
            # itself changes no flag; FAST_COMPILE builds the same step without gcc)
            sgn_theano.compilation.modes.check_mode("C")
            sgn_theano.SGN(loss, params, logits, [x, y], mode="FAST_COMPILE")
        assert pytensor.config.blas__ldflags == before, "SGN changed blas__ldflags"
        loaded = {"tqdm", "matplotlib", "jax", "sgn_theano.bench"} & set(sys.modules)
        assert not loaded, f"imported {sorted(loaded)}"
        print("ok")
    """, PYTENSOR_FLAGS="blas__ldflags=-lopenblas")
    assert completed.returncode == 0 and "ok" in completed.stdout, completed.stderr[-2000:]


LINK = """
    import warnings, pytensor
    from sgn_theano.compilation.modes import check_mode, compile_mode, default_mode_name
    print(default_mode_name())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for resolve in (compile_mode, check_mode):  # check_mode: what SGN(mode="C") does
            try:
                resolve("C")
            except ValueError as error:
                print("refused:", error)
    print(len(caught), repr(pytensor.config.blas__ldflags))
    print(*[str(warning.message) for warning in caught])
"""


def test_the_c_mode_links_openblas_once_and_says_so():
    completed = run_python(LINK, PYTENSOR_FLAGS="blas__ldflags=", SGN_THEANO_LINK_BLAS=None)
    assert completed.returncode == 0, completed.stderr[-2000:]
    mode_name, count_and_flags, message = completed.stdout.splitlines()[:3]
    assert mode_name == "C"
    assert count_and_flags == "1 '-lopenblas'"  # one warning for two C modes
    assert "blas__ldflags" in message and "SGN_THEANO_LINK_BLAS=0" in message


def test_the_openblas_link_can_be_turned_off():
    completed = run_python(LINK, PYTENSOR_FLAGS="blas__ldflags=", SGN_THEANO_LINK_BLAS="0")
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    assert lines[0] == "NUMBA"
    assert lines[1].startswith("refused: The C mode needs a BLAS")
    assert lines[2] == lines[1]  # the same error through SGN's mode check
    assert "0 ''" in lines
