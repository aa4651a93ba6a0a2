"""Kronecker-factored curvature (K-FAC) as the preconditioner of SGN's CG.

For a layer :math:`s = a W + b` (:mod:`sgn_theano.preconditioning.layer_detection`),
stack :math:`[W; b]` as one :math:`(d_{in} + 1) \\times d_{out}` block and append a 1
to :math:`a`. With :math:`m` curvature rows, the Gauss-Newton block of the mean loss is

.. math::

    G_{W} = \\frac1m \\sum_i a_i a_i^\\top \\otimes J_{s,i}^\\top H_i J_{s,i}
    \\approx A \\otimes S, \\qquad
    A = \\frac1m \\sum_i a_i a_i^\\top, \\quad
    S = \\frac1m \\sum_i J_{s,i}^\\top H_i J_{s,i}

(Martens and Grosse 2015), with :math:`H_i` the Hessian of row :math:`i`'s loss in
its outputs and :math:`J_{s,i}` the Jacobian of its outputs in :math:`s`. A
convolution's patches at every position are rows of :math:`a` and the per-position
:math:`J^\\top u` rows of :math:`S`'s sum, still divided by the examples :math:`m`
(Grosse and Martens 2016): :math:`A` is the mean over examples and positions.

:math:`S` is estimated without forming :math:`H_i`. For the library's losses
(:mod:`sgn_theano.losses`), which record a square root :math:`R_i R_i^\\top = H_i`,
from one backward pass of :math:`R_i \\epsilon_i`, :math:`\\epsilon_i` a Rademacher probe
per row (:math:`\\pm 1` entries): :math:`S \\approx \\frac1m \\sum_i x_i x_i^\\top`,
:math:`x_i = J_{s,i}^\\top R_i \\epsilon_i`, unbiased and positive semi-definite (the
softmax's :math:`R e = \\sqrt p \\odot e - p\\, (\\sqrt p^\\top e)` covers the
categorical Fisher exactly). For any other loss written in PyTensor (a hand-written one),
with a Rademacher probe :math:`\\epsilon_i` per row (:math:`\\pm 1` entries),
:math:`x_i = J_{s,i}^\\top \\epsilon_i` and :math:`y_i = J_{s,i}^\\top H_i
\\epsilon_i` (two backward passes on the curvature rows, the second from the output
Hessian product SGN's :math:`G v` uses), :math:`E[x_i y_i^\\top] = J_{s,i}^\\top H_i
J_{s,i}`; the estimate :math:`\\frac1{2m} \\sum_i (x_i y_i^\\top + y_i x_i^\\top)` is
unbiased, symmetric, and positive semi-definite only on average: its negative
eigenvalues are clipped when it is inverted. Averaged over steps (bias-corrected,
decay ``kfac_decay``), the factors are inverted every ``kfac_inverse_interval`` steps,
by a compiled function in the step's mode (:func:`inverse_refresh_updates`), with
Martens and Grosse's factored Tikhonov damping,

.. math::

    M R = (A + \\pi \\gamma I)^{-1} R \\, (S + \\tfrac{\\gamma}{\\pi} I)^{-1}, \\qquad
    \\gamma = \\sqrt{\\rho}, \\quad
    \\pi = \\sqrt{\\frac{\\operatorname{tr} A / \\dim A}{\\operatorname{tr} S / \\dim S}},

so each product in CG is two matrix products per layer, and nothing is recompiled. A
factor wider than :data:`EXACT_INVERSE_LIMIT` (a 2048-unit layer's) would cost
:math:`O(d^2 d')` per product and :math:`O(d^3)` per refresh: it gets a low-rank plus
isotropic inverse instead, from its top ``kfac_rank`` eigenpairs :math:`(\\lambda_i, v_i)`
(one step of subspace iteration from the last refresh's eigenvectors and a few random
columns, then Rayleigh-Ritz) and the mean :math:`\\sigma` of the rest of its spectrum
(from the trace),

.. math::

    (F + s I)^{-1} \\approx \\frac{1}{\\sigma + s} I + \\sum_i
    \\left(\\frac{1}{\\lambda_i + s} - \\frac{1}{\\sigma + s}\\right) v_i v_i^\\top,

exact where :math:`F` has rank ``kfac_rank`` or its other eigenvalues are equal; a
product then costs :math:`O(d\\, r\\, d')`.
Parameters outside any layer get a diagonal block (averaged gradient squares,
:func:`sgn_theano.preconditioning.diagonal.curvature_preconditioner`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.ifelse import ifelse
from pytensor.tensor.variable import TensorVariable

from sgn_theano.block_layout import Blocks
from sgn_theano.compat import isfinite
from sgn_theano.preconditioning.layer_detection import KroneckerLayer
from sgn_theano.preconditioning.positive_inverse import positive_definite_inverse

__all__ = ["EXACT_INVERSE_LIMIT", "KroneckerPreconditioner", "damped_inverses",
           "factor_statistics", "identity_inverse", "inverse_refresh_updates",
           "refresh_due", "times_inverse"]

#: Factors of at most this dimension are inverted exactly; wider ones get a low-rank plus
#: isotropic inverse (:func:`damped_inverses`). 1024 keeps every factor of the MLPs and
#: LeNet-5 of the results exact (785 at most).
EXACT_INVERSE_LIMIT = 1024
#: Columns the range finder of a wide factor's top eigenpairs draws beyond its rank.
OVERSAMPLING = 8



def factor_statistics(layers: Sequence[KroneckerLayer], outputs: TensorVariable,
                      probe: TensorVariable, hessian_product: Callable,
                      hessian_root: Callable | None = None) -> Blocks:
    """This step's factors :math:`[A_1, S_1, A_2, S_2, \\dots]` on the curvature rows.

    Parameters
    ----------
    layers : list of KroneckerLayer
        Found in the graph of ``outputs``.
    outputs : TensorVariable
        The outputs of the curvature rows, shape ``(m, ...)``.
    probe : TensorVariable
        :math:`\\epsilon`, Rademacher, shaped like ``outputs``.
    hessian_product : callable
        ``u -> H_L u`` of the rows' mean loss in ``outputs`` (:math:`H_i / m` per row).
    hessian_root : callable, optional
        ``e -> R e`` with :math:`R_i R_i^\\top = H_i` per row
        (:func:`sgn_theano.curvature.loss_hessian_root`; the library's losses have
        one): then :math:`S` is estimated from one backward pass, as
        :math:`\\frac1m \\sum_i x_i x_i^\\top`, :math:`x_i = J_{s,i}^\\top R_i
        \\epsilon_i`, positive semi-definite; otherwise by the symmetrized two-pass
        estimate of the module's docstring.

    Returns
    -------
    list of TensorVariable
        :math:`A` of shape ``(d_in [+ 1], d_in [+ 1])`` and :math:`S` of shape
        ``(d_out, d_out)`` per layer, in the outputs' dtype.
    """
    dtype = outputs.dtype
    examples = pt.cast(outputs.shape[0], dtype)
    preactivations = [layer.preactivations for layer in layers]
    if hessian_root is not None:
        left = pytensor.grad(None, preactivations, known_grads={outputs: hessian_root(probe)})
        right = left
    else:
        left = pytensor.grad(None, preactivations, known_grads={outputs: probe})
        right = pytensor.grad(None, preactivations,
                              known_grads={outputs: hessian_product(probe) * examples})
    statistics = []
    for layer, x, y in zip(layers, left, right):
        rows = layer.inputs
        if layer.bias is not None:
            rows = pt.concatenate([rows, pt.ones((rows.shape[0], 1), dtype=dtype)], axis=1)
        width = layer.shape[1]
        x, y = x.reshape((-1, width)), y.reshape((-1, width))
        if hessian_root is not None:  # x = y
            output_factor = pt.dot(x.T, x) / examples
        else:
            cross = pt.dot(x.T, y)
            output_factor = (cross + cross.T) / (2 * examples)
        statistics += [pt.dot(rows.T, rows) / pt.cast(rows.shape[0], dtype), output_factor]
    return statistics


class KroneckerPreconditioner:
    """``residual blocks -> M residual``: the Kronecker product on each layer's
    :math:`[W; b]`, a diagonal product on every other parameter.

    Parameters
    ----------
    params : list of shared variables
        The order of the blocks.
    layers : list of KroneckerLayer
    inverses : list of shared variables
        :math:`[(A_1 + \\pi\\gamma I)^{-1}, (S_1 + \\gamma/\\pi I)^{-1}, \\dots]`.
    diagonal : dict
        ``{param: weight}`` for the parameters outside the layers: ``r -> r * weight``.
    """

    def __init__(self, params: Sequence, layers: Sequence[KroneckerLayer],
                 inverses: Sequence, diagonal: dict):
        self.params, self.layers = list(params), list(layers)
        self.inverses, self.diagonal = list(inverses), diagonal

    def __call__(self, residual: Blocks) -> Blocks:
        position = {param: index for index, param in enumerate(self.params)}
        result = [None] * len(self.params)
        for param, weight in self.diagonal.items():
            result[position[param]] = residual[position[param]] * weight
        for layer, input_inverse, output_inverse in zip(
                self.layers, self.inverses[0::2], self.inverses[1::2]):
            matrix = layer.as_matrix(residual[position[layer.weight]])
            if layer.bias is not None:
                matrix = pt.concatenate([matrix, residual[position[layer.bias]][None, :]])
            product = times_inverse(times_inverse(matrix, input_inverse, "left"),
                                     output_inverse, "right")
            if layer.bias is not None:
                result[position[layer.bias]] = product[-1]
                product = product[:-1]
            result[position[layer.weight]] = layer.as_weight(product)
        return result


def times_inverse(matrix: TensorVariable, inverse, side: str) -> TensorVariable:
    """``inverse @ matrix`` (``side="left"``) or ``matrix @ inverse`` (``"right"``) for an
    inverse as :func:`damped_inverses` stores it: a ``(d, d)`` matrix, or a low-rank
    plus isotropic one packed as ``(d + 1, r + 1)``: :math:`V` in ``[:d, :r]``, the
    coefficients :math:`c_i = 1/(\\lambda_i + s) - 1/(\\sigma + s)` in ``[d, :r]`` and
    :math:`1/(\\sigma + s)` in ``[d, r]``, for :math:`V \\operatorname{diag}(c) V^\\top
    + I / (\\sigma + s)`."""
    rows, columns = inverse.get_value(borrow=True).shape
    if rows == columns:
        return pt.dot(inverse, matrix) if side == "left" else pt.dot(matrix, inverse)
    dimension, rank = rows - 1, columns - 1
    vectors = inverse[:dimension, :rank]
    coefficients, isotropic = inverse[dimension, :rank], inverse[dimension, rank]
    if side == "left":
        return isotropic * matrix + pt.dot(vectors, coefficients[:, None]
                                           * pt.dot(vectors.T, matrix))
    return isotropic * matrix + pt.dot(pt.dot(matrix, vectors) * coefficients, vectors.T)


def identity_inverse(dimension: int, rank: int, dtype: str) -> np.ndarray:
    """The identity in the layout :func:`damped_inverses` gives a factor of
    ``dimension`` (a fresh state's inverse): ``(d, d)``, or packed ``(d + 1, r + 1)``
    for a factor wider than :data:`EXACT_INVERSE_LIMIT`."""
    if dimension <= EXACT_INVERSE_LIMIT:
        return np.eye(dimension, dtype=dtype)
    rank = _usable_rank(dimension, rank)
    packed = np.zeros((dimension + 1, rank + 1), dtype=dtype)
    packed[dimension, rank] = 1
    return packed


def damped_inverses(input_factor, output_factor, damping, rank: int = 128,
                    previous: tuple | None = None, output_definite: bool = True,
                    ) -> tuple[TensorVariable, TensorVariable]:
    """:math:`(A + \\pi\\gamma I)^{-1}` and :math:`(S + \\gamma/\\pi I)^{-1}`,
    :math:`\\gamma = \\sqrt{\\rho}`, symbolically and in float64 (the factored Tikhonov
    damping above): graphs of PyTensor's linear algebra, compiled in the step's mode, so
    in JAX mode the factors never leave the device.

    Each is inverted through its Cholesky factor
    (:func:`~sgn_theano.preconditioning.positive_inverse.positive_definite_inverse`: a
    tenth of an eigen-decomposition's time at 256 rows, measured in the docs'
    "Performance"). An estimate of :math:`S` that
    may have a negative eigenvalue (``output_definite=False``: the two-pass estimate of a
    hand-written loss) falls back, where the Cholesky factorization fails, to its
    eigen-decomposition with the negative eigenvalues clipped to zero; a factor positive
    semi-definite by construction whose damped Cholesky factorization still fails (in
    floating point only) keeps ``previous``'s inverse. A zero trace (a layer no row
    reached) counts as a unit one, so :math:`\\pi` stays finite. A factor wider than
    :data:`EXACT_INVERSE_LIMIT` gets the low-rank plus isotropic inverse of rank
    ``rank`` of the module's docstring, packed as :func:`identity_inverse` says, its
    eigenvectors refined from those packed in ``previous``.

    Parameters
    ----------
    input_factor, output_factor : TensorVariable or array
        :math:`A` and :math:`S`, symmetric, shapes ``(d, d)`` and ``(d', d')``.
    damping : scalar TensorVariable or float
        :math:`\\rho \\ge 0`; :math:`\\gamma` is floored at float32's epsilon.
    rank : int
        ``kfac_rank``, for factors wider than :data:`EXACT_INVERSE_LIMIT`.
    previous : (TensorVariable or array, TensorVariable or array), optional
        The last refresh's inverses of the two factors, in :func:`identity_inverse`'s
        layout: a wide factor's eigenvectors start from them.
    output_definite : bool
        Whether :math:`S` is positive semi-definite by construction.

    Returns
    -------
    (TensorVariable, TensorVariable)
        The two inverses in float64, in :func:`identity_inverse`'s layout.
    """
    input_factor = pt.as_tensor_variable(input_factor).astype("float64")
    output_factor = pt.as_tensor_variable(output_factor).astype("float64")
    input_scale = pt.trace(input_factor) / input_factor.shape[0]
    output_scale = pt.maximum(pt.trace(output_factor) / output_factor.shape[0], 0.0)
    input_scale, output_scale = (pt.switch(pt.eq(scale, 0.0), 1.0, scale)
                                 for scale in (input_scale, output_scale))
    ratio = pt.sqrt(input_scale / output_scale)
    gamma = pt.sqrt(pt.maximum(pt.as_tensor_variable(damping).astype("float64"), 0.0))
    gamma = pt.switch(pt.gt(gamma, 0.0), gamma, float(np.finfo(np.float32).eps))
    previous = previous or (None, None)
    return (_damped_inverse(input_factor, ratio * gamma, rank, previous[0], True),
            _damped_inverse(output_factor, gamma / ratio, rank, previous[1], output_definite))


def _damped_inverse(matrix: TensorVariable, shift: TensorVariable, rank: int,
                    previous=None, definite: bool = True) -> TensorVariable:
    """:math:`(X + s I)^{-1}` of a symmetric :math:`X` by Cholesky where
    :math:`X + s I` is positive definite; otherwise ``previous`` (``definite``) or
    :math:`(X_+ + s I)^{-1}` with :math:`X_+` the :math:`X` whose negative eigenvalues
    are set to zero; low-rank plus isotropic beyond :data:`EXACT_INVERSE_LIMIT`."""
    dimension = matrix.type.shape[0]
    if dimension > EXACT_INVERSE_LIMIT:
        return _low_rank_damped_inverse(matrix, shift, rank, previous)
    inverse = positive_definite_inverse(matrix + shift * pt.eye(dimension, dtype="float64"))
    factored = isfinite(pt.sum(inverse))
    if definite:
        if previous is None:
            return inverse
        return ifelse(factored, inverse, pt.as_tensor_variable(previous).astype("float64"))
    values, vectors = pt.linalg.eigh((matrix + matrix.T) / 2)
    return ifelse(factored, inverse,
                  pt.dot(vectors / (pt.maximum(values, 0.0) + shift), vectors.T))


def _usable_rank(dimension: int, rank: int) -> int:
    """``rank``, at most ``dimension - OVERSAMPLING`` (the range finder's columns must fit
    in the factor's dimension)."""
    return min(rank, dimension - OVERSAMPLING)


def _low_rank_damped_inverse(matrix: TensorVariable, shift: TensorVariable, rank: int,
                             previous=None) -> TensorVariable:
    """The packed low-rank plus isotropic :math:`(X + s I)^{-1}` (module docstring).

    The top ``rank`` eigenpairs of the symmetric :math:`X` by one step of subspace
    iteration and Rayleigh-Ritz (Halko, Martinsson and Tropp 2011): the basis of
    :math:`X \\Omega` with :math:`\\Omega` the eigenvectors packed in ``previous`` (the
    last refresh's inverse: a factor changes slowly between refreshes) and
    :data:`OVERSAMPLING` random columns from a fixed seed, so that a resumed run
    refreshes identically; where ``previous`` packs no eigenvectors (a fresh state),
    :math:`\\Omega` is random and the step is repeated twice. Negative eigenvalues are
    set to zero.
    """
    dimension = matrix.type.shape[0]
    rank = _usable_rank(dimension, rank)
    symmetric = (matrix + matrix.T) / 2
    start = np.random.default_rng(dimension).standard_normal((dimension, rank + OVERSAMPLING))
    random_start = pt.constant(start)
    basis = pt.linalg.qr(pt.dot(symmetric, random_start), mode="economic")[0]
    for _ in range(2):
        basis = pt.linalg.qr(pt.dot(symmetric, basis), mode="economic")[0]
    if previous is not None:
        previous = pt.as_tensor_variable(previous).astype("float64")
        vectors = previous[:dimension, :rank]
        warm_start = pt.concatenate([vectors, random_start[:, rank:]], axis=1)
        refined = pt.linalg.qr(pt.dot(symmetric, warm_start), mode="economic")[0]
        basis = ifelse(pt.any(pt.neq(vectors, 0.0)), refined, basis)
    values, small_vectors = pt.linalg.eigh(pt.dot(basis.T, pt.dot(symmetric, basis)))
    values = pt.maximum(values[-rank:], 0.0)
    vectors = pt.dot(basis, small_vectors[:, -rank:])
    rest = pt.maximum((pt.trace(symmetric) - values.sum()) / max(dimension - rank, 1), 0.0)
    isotropic = 1.0 / (rest + shift)
    coefficients = 1.0 / (values + shift) - isotropic
    return pt.concatenate([
        pt.concatenate([vectors, pt.zeros((dimension, 1), dtype="float64")], axis=1),
        pt.concatenate([coefficients, isotropic[None]])[None, :]], axis=0)


def refresh_due(steps: int, interval: int) -> bool:
    """Whether K-FAC's inverses are refreshed after ``steps`` steps: after the first,
    and then every ``interval`` (``kfac_inverse_interval``) steps. ``steps`` is known on
    the host, so the decision reads nothing from the device."""
    return (steps - 1) % interval == 0


def inverse_refresh_updates(state, config, output_definite: bool = True) -> OrderedDict:
    """The updates of ``state.factor_inverses`` that refresh K-FAC's damped inverses:
    the bias-corrected averages :math:`\\hat A = A_t / (1 - \\beta^t)` (likewise
    :math:`\\hat S`) inverted by :func:`damped_inverses` with the state's damping (the
    next step's), in the model's dtype. Where no factor has been averaged yet
    (:math:`t = 0`) the inverses keep their values. :class:`sgn_theano.SGN` compiles
    them, in the step's mode, into a function of no input and no output that it calls
    where :func:`refresh_due`.

    Parameters
    ----------
    state : sgn_theano.sgn_state.SGNState
    config : sgn_theano.sgn_config.SGNConfig
    output_definite : bool
        Whether the :math:`S` estimates are positive semi-definite by construction (the
        library's losses, which record a Hessian root).

    Returns
    -------
    OrderedDict
        ``{inverse: refreshed value}``.
    """
    count = state.factor_count
    correction = 1 - pt.constant(config.kfac_decay, "float64") ** pt.cast(count, "float64")
    correction = pt.switch(pt.gt(count, 0), correction, 1.0)
    factors = [pt.specify_shape(factor, factor.get_value(borrow=True).shape) / correction
               for factor in state.factors]
    inverses, updates = state.factor_inverses, OrderedDict()
    for index in range(0, len(factors), 2):
        pair = damped_inverses(factors[index], factors[index + 1],
                               state.damping, config.kfac_rank,
                               tuple(inverses[index:index + 2]), output_definite)
        for inverse, value in zip(inverses[index:index + 2], pair):
            updates[inverse] = ifelse(pt.gt(count, 0), value.astype(inverse.dtype), inverse)
    return updates
