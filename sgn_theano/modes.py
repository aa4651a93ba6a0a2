"""Named PyTensor compile modes, with the C backend linked to a real BLAS.

``"C"`` is PyTensor's C backend (``Mode(linker="cvm")``). It needs a BLAS to link
against: a pip-installed PyTensor finds none and falls back to slow code, so
:func:`compile_mode` points it at OpenBLAS (Debian: ``apt-get install
libopenblas-dev``) when no ``blas__ldflags`` were configured. ``"NUMBA"`` (PyTensor's
default), ``"JAX"``, ``"FAST_RUN"`` and ``"FAST_COMPILE"`` are PyTensor's modes of
those names. Every mode :func:`compile_mode` returns has its last merge pass replaced
by :class:`sgn_theano.merge_rewrite.DestroyAwareMerge` (a user-written loss took
minutes to compile without it).
"""

from __future__ import annotations

import ctypes.util
import warnings

import pytensor
from pytensor.compile.mode import Mode, get_mode

from sgn_theano.merge_rewrite import with_destroy_aware_merge

__all__ = [
    "MODES",
    "compile_mode",
    "default_mode_name",
    "fix_jax_reductions",
    "loops_can_exit_early",
    "prepare_jax_backend",
]

MODES = ("C", "NUMBA", "JAX", "FAST_RUN", "FAST_COMPILE")


def _link_blas() -> bool:
    """Point the C backend at OpenBLAS if no BLAS is configured; True if one is."""
    with warnings.catch_warnings():
        # Reading the flag makes PyTensor search for a BLAS and warn when it finds none;
        # OpenBLAS is looked for below, and the C mode raises a clear error without it.
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
        configured = pytensor.config.blas__ldflags
    if configured:
        return True
    if ctypes.util.find_library("openblas"):
        pytensor.config.blas__ldflags = "-lopenblas"
        return True
    return False


def default_mode_name() -> str:
    """``"C"`` where a BLAS can be linked (fastest to compile, measured in the README),
    else ``"NUMBA"``."""
    return "C" if _link_blas() else "NUMBA"


def compile_mode(name: str | None = None) -> Mode:
    """The PyTensor mode for ``name`` (``None``: :func:`default_mode_name`), with
    :func:`sgn_theano.merge_rewrite.with_destroy_aware_merge` applied.

    Compile the updates of :func:`sgn_theano.sgn` with it:
    ``pytensor.function(..., updates=sgn(...), mode=compile_mode())``.

    Raises
    ------
    ValueError
        For an unknown name, or ``"C"`` with no BLAS to link against.
    """
    name = default_mode_name() if name is None else name
    if name not in MODES:
        raise ValueError(f"Unknown mode {name!r}; choose one of {', '.join(MODES)}.")
    if name == "C":
        if not _link_blas():
            raise ValueError("The C mode needs a BLAS: install OpenBLAS "
                             "(`apt-get install libopenblas-dev`) or set "
                             "PYTENSOR_FLAGS=blas__ldflags=...")
        return with_destroy_aware_merge(Mode(linker="cvm"))
    if name == "JAX":
        prepare_jax_backend()
    return with_destroy_aware_merge(get_mode(name))


def loops_can_exit_early(mode) -> bool:
    """Whether compiled loops may stop early (``scan`` with ``until``) in ``mode``:
    every backend but JAX, whose PyTensor translation has no while-loop scan."""
    from pytensor.link.jax.linker import JAXLinker

    return not isinstance(get_mode(mode).linker, JAXLinker)


def prepare_jax_backend() -> None:
    """What JAX mode needs before it compiles an SGN step (idempotent, imports JAX):
    :func:`fix_jax_reductions`, and JAX versions of the patch ops
    (:func:`sgn_theano.patches.register_jax`)."""
    from sgn_theano.patches import register_jax

    fix_jax_reductions()
    register_jax()


_JAX_REDUCTIONS_FIXED = False


def fix_jax_reductions() -> None:
    """Make PyTensor's JAX reductions return their output dtype (idempotent).

    PyTensor 3.0.7 translates a reduction (``Sum``, ``Max``...) to JAX in its
    *accumulator* dtype: a float32 ``sum`` accumulates, and comes back, in float64. A
    float32 ``scan`` then fails in JAX (its loop carry changes dtype), as does any
    float32 SGN step. This re-registers the translation with a cast to the dtype
    PyTensor's graph says the result has; :func:`prepare_jax_backend` calls it.
    """
    global _JAX_REDUCTIONS_FIXED
    if _JAX_REDUCTIONS_FIXED:
        return
    from pytensor.link.jax.dispatch import jax_funcify
    from pytensor.link.jax.dispatch.elemwise import jax_funcify_CAReduce
    from pytensor.tensor.elemwise import CAReduce

    @jax_funcify.register(CAReduce)
    def reduce_in_output_dtype(op, node=None, **kwargs):
        reduce = jax_funcify_CAReduce(op, node=node, **kwargs)
        if node is None:
            return reduce
        dtype = node.outputs[0].dtype
        return lambda x: reduce(x).astype(dtype)

    _JAX_REDUCTIONS_FIXED = True
