"""Named PyTensor compile modes, with the C backend linked to a real BLAS.

``"C"`` is PyTensor's C backend (``Mode(linker="cvm")``). It needs a BLAS to link
against: a pip-installed PyTensor finds none and falls back to slow code. Where no
``blas__ldflags`` are configured, :func:`link_openblas` points PyTensor at OpenBLAS
(Debian: ``apt-get install libopenblas-dev``); this changes PyTensor's configuration
for the whole process, so :func:`compile_mode` does it only when the C mode is asked
for, and says so with a :class:`BlasLinkWarning` (call :func:`link_openblas` yourself
to do it silently, or set ``SGN_THEANO_LINK_BLAS=0`` to never do it). ``"NUMBA"``
(PyTensor's default), ``"JAX"``, ``"FAST_RUN"`` and ``"FAST_COMPILE"`` are PyTensor's
modes of those names; asking for ``"JAX"`` or ``"NUMBA"`` registers that backend's
versions of the library's ops process-wide (:func:`prepare_jax_backend`,
:func:`prepare_numba_backend`). Every mode :func:`compile_mode` returns
has its last merge pass replaced by
:class:`sgn_theano.compilation.merge_rewrite.DestroyAwareMerge` (a user-written loss took minutes
to compile without it).
"""

from __future__ import annotations

import ctypes.util
import os
import warnings
from collections.abc import Callable

import pytensor
from pytensor.compile.mode import Mode, get_mode

from sgn_theano.compilation.merge_rewrite import with_destroy_aware_merge
from sgn_theano.compilation.softmax_inlining import with_inlined_softmax
from sgn_theano.errors import SGNInputError

__all__ = [
    "MODES",
    "BlasLinkWarning",
    "check_mode",
    "compile_mode",
    "default_mode_name",
    "fix_jax_alloc",
    "fix_jax_arange",
    "fix_jax_reductions",
    "is_jax_mode",
    "link_openblas",
    "loops_can_exit_early",
    "prepare_backend",
    "prepare_jax_backend",
    "register_backend_preparer",
    "prepare_numba_backend",
]

MODES = ("C", "NUMBA", "JAX", "FAST_RUN", "FAST_COMPILE")

#: Set to ``"0"`` to keep :func:`compile_mode` from configuring OpenBLAS.
LINK_BLAS_VARIABLE = "SGN_THEANO_LINK_BLAS"


class BlasLinkWarning(UserWarning):
    """:func:`compile_mode` set ``pytensor.config.blas__ldflags`` to link OpenBLAS."""


def _configured_blas() -> str:
    with warnings.catch_warnings():
        # Reading the flag makes PyTensor search for a BLAS and warn when it finds none;
        # OpenBLAS is looked for next, and the C mode raises a clear error without it.
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
        return pytensor.config.blas__ldflags


def _can_link_openblas() -> bool:
    return (os.environ.get(LINK_BLAS_VARIABLE, "1") != "0"
            and ctypes.util.find_library("openblas") is not None)


def link_openblas() -> bool:
    """Point PyTensor's C backend at OpenBLAS if no BLAS is configured.

    Sets ``pytensor.config.blas__ldflags = "-lopenblas"``, for the whole process, when
    that flag is empty and OpenBLAS is found (and ``SGN_THEANO_LINK_BLAS`` is not
    ``0``); a configured flag is left alone.

    Returns
    -------
    bool
        Whether a BLAS is configured now.
    """
    if _configured_blas():
        return True
    if not _can_link_openblas():
        return False
    pytensor.config.blas__ldflags = "-lopenblas"
    return True


def default_mode_name() -> str:
    """``"C"`` where a BLAS is configured or OpenBLAS can be linked (fastest to compile,
    measured in the docs, "Performance"), else ``"NUMBA"``. Changes nothing."""
    return "C" if _configured_blas() or _can_link_openblas() else "NUMBA"


def compile_mode(name: str | None = None) -> Mode:
    """The PyTensor mode for ``name`` (``None``: :func:`default_mode_name`), with
    :func:`sgn_theano.compilation.merge_rewrite.with_destroy_aware_merge` applied, and for ``"C"``
    and ``"FAST_RUN"`` (the C backend) and ``"FAST_COMPILE"`` softmax inlined
    (:func:`sgn_theano.compilation.softmax_inlining.with_inlined_softmax`; in
    ``FAST_COMPILE``'s Python linker a graph softmax would otherwise run as a function of
    its own, JIT-compiled by PyTensor's default backend, NUMBA, on its first call).

    Compile the updates of :func:`sgn_theano.sgn` with it:
    ``pytensor.function(..., updates=sgn(...), mode=compile_mode())``. For ``"C"`` with
    no BLAS configured, it calls :func:`link_openblas` and warns
    (:class:`BlasLinkWarning`) that it did; for ``"JAX"`` and ``"NUMBA"`` it calls
    :func:`prepare_backend`.

    Raises
    ------
    ValueError
        For an unknown name, or ``"C"`` with no BLAS to link against.
    """
    name = default_mode_name() if name is None else name
    if name not in MODES:
        raise SGNInputError(f"Unknown mode {name!r}; choose one of {', '.join(MODES)}.")
    if name == "C":
        linking = not _configured_blas()
        if not link_openblas():
            raise SGNInputError("The C mode needs a BLAS: install OpenBLAS "
                                "(`apt-get install libopenblas-dev`) or set "
                                "PYTENSOR_FLAGS=blas__ldflags=...")
        if linking:
            warnings.warn("sgn_theano set pytensor.config.blas__ldflags = '-lopenblas' for "
                          "this process, as no BLAS was configured for the C mode. Configure "
                          "one yourself (PYTENSOR_FLAGS=blas__ldflags=..., or call "
                          "sgn_theano.compilation.modes.link_openblas()) to silence this, or set "
                          f"{LINK_BLAS_VARIABLE}=0 to prevent it.", BlasLinkWarning,
                          stacklevel=2)
        return with_inlined_softmax(with_destroy_aware_merge(Mode(linker="cvm")))
    mode = get_mode(name)
    prepare_backend(mode)
    if name in ("FAST_RUN", "FAST_COMPILE"):  # a graph softmax is otherwise NUMBA-compiled
        mode = with_inlined_softmax(mode)
    return with_destroy_aware_merge(mode)


def is_jax_mode(mode) -> bool:
    """Whether ``mode`` (a name or a ``Mode``) compiles with PyTensor's JAX backend."""
    from pytensor.link.jax.linker import JAXLinker

    return isinstance(get_mode(mode).linker, JAXLinker)


def loops_can_exit_early(mode) -> bool:
    """Whether compiled loops may stop early (``scan`` with ``until``) in ``mode``: in
    every backend but JAX, and in JAX once :func:`prepare_jax_backend` has given it
    while loops (:mod:`sgn_theano.compilation.jax_loops`), which every mode the library resolves
    has."""
    from sgn_theano.compilation import jax_loops

    return not is_jax_mode(mode) or jax_loops.registered()


def prepare_backend(mode) -> None:
    """Register the library's ops with the backend of ``mode`` where it needs it: JAX
    (:func:`prepare_jax_backend`) and NUMBA (:func:`prepare_numba_backend`)."""
    from pytensor.link.numba.linker import NumbaLinker

    if is_jax_mode(mode):
        prepare_jax_backend()
    elif isinstance(get_mode(mode).linker, NumbaLinker):
        prepare_numba_backend()


#: Functions that register an op's version for a backend, by backend ("NUMBA", "JAX"):
#: each op module adds its own (:func:`register_backend_preparer`).
_BACKEND_PREPARERS: dict[str, list[Callable[[], None]]] = {"NUMBA": [], "JAX": []}
_PREPARED_BACKENDS: set[str] = set()


def register_backend_preparer(backend: str, preparer: Callable[[], None]) -> None:
    """Have ``preparer`` (idempotent; it may import the backend) called when the library
    prepares ``backend`` ("NUMBA" or "JAX"), or at once if it already has. A module of ops
    with versions for a backend registers them this way, so this module knows no op."""
    _BACKEND_PREPARERS[backend].append(preparer)
    if backend in _PREPARED_BACKENDS:
        preparer()


def _run_preparers(backend: str) -> None:
    _PREPARED_BACKENDS.add(backend)
    for preparer in _BACKEND_PREPARERS[backend]:
        preparer()


def prepare_numba_backend() -> None:
    """NUMBA versions of the library's ops (those registered with
    :func:`register_backend_preparer`; idempotent)."""
    _run_preparers("NUMBA")


def prepare_jax_backend() -> None:
    """What JAX mode needs before it compiles an SGN step (idempotent, imports JAX):
    :func:`fix_jax_reductions`, :func:`fix_jax_alloc`, :func:`fix_jax_arange`, while
    loops for the scans that stop early
    (:func:`sgn_theano.compilation.jax_loops.register_while_scans`), shape arithmetic
    done while tracing (:func:`sgn_theano.compilation.jax_shapes.register_traced_shapes`),
    and JAX versions of
    the library's ops (those registered with :func:`register_backend_preparer`)."""
    from sgn_theano.compilation.jax_loops import register_while_scans
    from sgn_theano.compilation.jax_shapes import register_traced_shapes

    fix_jax_reductions()
    fix_jax_alloc()
    fix_jax_arange()
    register_while_scans()
    register_traced_shapes()
    _run_preparers("JAX")


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


_JAX_ALLOC_FIXED = False


def fix_jax_alloc() -> None:
    """Make PyTensor's JAX ``Alloc`` (``pt.zeros``, ``pt.full``...) return its output
    dtype (idempotent).

    PyTensor 3.0.7 writes a scalar constant into the JAX code as a Python number, and
    ``jnp.broadcast_to`` makes a float64 array of it: float32 zeros come back as
    float64, and so does everything computed from them (the zero-padded images of a
    convolution, and then a CNN's whole gradient). This re-registers the translation
    with a cast to the dtype PyTensor's graph says the result has;
    :func:`prepare_jax_backend` calls it.
    """
    global _JAX_ALLOC_FIXED
    if _JAX_ALLOC_FIXED:
        return
    import jax.numpy as jnp
    from pytensor.link.jax.dispatch import jax_funcify
    from pytensor.link.jax.dispatch.tensor_basic import jax_funcify_Alloc
    from pytensor.tensor.basic import Alloc

    @jax_funcify.register(Alloc)
    def alloc_in_output_dtype(op, node, **kwargs):
        alloc = jax_funcify_Alloc(op, node, **kwargs)
        dtype = node.outputs[0].dtype
        return lambda value, *shape: alloc(jnp.asarray(value, dtype=dtype), *shape)

    _JAX_ALLOC_FIXED = True


_JAX_ARANGE_FIXED = False


def fix_jax_arange() -> None:
    """Give PyTensor's JAX ``ARange`` constant bounds in its output dtype (idempotent).

    PyTensor 3.0.7 hands ``jnp.arange`` each constant bound in the constant's own
    dtype: the row index ``pt.arange(y.shape[0])`` of a hand-written
    ``-mean(log_softmax(z)[arange(n), y])`` starts at an int8 0, and under numpy 2 a
    batch of 128 rows or more overflows int8. This re-registers the translation with the
    constant bounds cast to the dtype of the range; :func:`prepare_jax_backend` calls it.
    """
    global _JAX_ARANGE_FIXED
    if _JAX_ARANGE_FIXED:
        return
    import pytensor.tensor as pt
    from pytensor.graph.basic import Constant
    from pytensor.link.jax.dispatch import jax_funcify
    from pytensor.link.jax.dispatch.tensor_basic import jax_funcify_ARange
    from pytensor.tensor.basic import ARange

    @jax_funcify.register(ARange)
    def arange_with_wide_bounds(op, node, **kwargs):
        bounds = [pt.constant(bound.data, dtype=op.dtype) if isinstance(bound, Constant)
                  else bound for bound in node.inputs]
        return jax_funcify_ARange(op, node.clone_with_new_inputs(bounds, strict=False),
                                  **kwargs)

    _JAX_ARANGE_FIXED = True


def check_mode(mode):
    """Resolve a compile mode, or raise ``ValueError`` naming the bad one.

    ``None`` and the names of :data:`MODES` are
    :func:`compile_mode` (``None``: C where a BLAS can be linked, else
    NUMBA; its errors, such as the C mode without a BLAS, pass through unchanged);
    anything else is handed to PyTensor, its backend given the library's ops
    (:func:`prepare_backend`), and
    its last merge pass made :class:`sgn_theano.compilation.merge_rewrite.DestroyAwareMerge`.
    """
    if mode is None or isinstance(mode, str) and mode in MODES:
        return compile_mode(mode)
    try:
        resolved = pytensor.compile.mode.get_mode(mode)
    except Exception as error:  # pytensor raises several kinds for unknown names
        raise SGNInputError(f"Unknown compile `mode` {mode!r}: {error}") from None
    prepare_backend(resolved)
    return with_destroy_aware_merge(resolved)
