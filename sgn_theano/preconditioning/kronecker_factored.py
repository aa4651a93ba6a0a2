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
decay ``kfac_decay``), the factors are inverted on the host every
``kfac_inverse_interval`` steps with Martens and Grosse's factored Tikhonov damping,

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

from collections.abc import Callable, Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt
import scipy.linalg.lapack
from pytensor.tensor.variable import TensorVariable

from sgn_theano.block_layout import Blocks
from sgn_theano.preconditioning.layer_detection import KroneckerLayer

__all__ = ["EXACT_INVERSE_LIMIT", "KroneckerPreconditioner", "damped_inverses",
           "factor_statistics", "identity_inverse", "refresh_factor_inverses",
           "times_inverse"]

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


def damped_inverses(input_factor: np.ndarray, output_factor: np.ndarray,
                    damping: float, rank: int = 128, previous: tuple | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """:math:`(A + \\pi\\gamma I)^{-1}` and :math:`(S + \\gamma/\\pi I)^{-1}`,
    :math:`\\gamma = \\sqrt{\\rho}`, in float64 (the factored Tikhonov damping above).

    Each is inverted through its Cholesky factor (LAPACK's ``potrf`` and ``potri``: a
    tenth of an eigen-decomposition's time at 256 rows, measured in the docs'
    "Performance"). An estimate of :math:`S` with a negative eigenvalue beyond the shift
    (the two-pass estimate of a hand-written loss may have one) makes that fail: its
    eigen-decomposition then clips the negative eigenvalues to zero. A zero trace (a
    layer no row reached) counts as a unit one, so :math:`\\pi` stays finite. A factor
    wider than :data:`EXACT_INVERSE_LIMIT` gets the low-rank plus isotropic inverse of
    rank ``rank`` of the module's docstring, packed as :func:`identity_inverse` says,
    its eigenvectors refined from those of ``previous`` (the last refresh's inverses
    of the two factors, packed alike) where given.
    """
    input_factor = np.asarray(input_factor, dtype=np.float64)
    output_factor = np.asarray(output_factor, dtype=np.float64)
    input_scale = np.trace(input_factor) / len(input_factor) or 1.0
    output_scale = max(np.trace(output_factor) / len(output_factor), 0.0) or 1.0
    ratio = np.sqrt(input_scale / output_scale)
    gamma = np.sqrt(max(damping, 0.0)) or np.finfo(np.float32).eps
    previous = previous or (None, None)
    return (_damped_inverse(input_factor, ratio * gamma, rank, previous[0]),
            _damped_inverse(output_factor, gamma / ratio, rank, previous[1]))


def _damped_inverse(matrix: np.ndarray, shift: float, rank: int,
                    previous: np.ndarray | None = None) -> np.ndarray:
    """:math:`(X + s I)^{-1}` of a symmetric :math:`X` by Cholesky where
    :math:`X + s I` is positive definite, else :math:`(X_+ + s I)^{-1}` with
    :math:`X_+` the :math:`X` whose negative eigenvalues are set to zero; low-rank plus
    isotropic beyond :data:`EXACT_INVERSE_LIMIT`."""
    if len(matrix) > EXACT_INVERSE_LIMIT:
        return _low_rank_damped_inverse(matrix, shift, rank, previous)
    damped = matrix + shift * np.eye(len(matrix))
    factor, info = scipy.linalg.lapack.dpotrf(damped, lower=1)
    if info == 0:
        inverse, info = scipy.linalg.lapack.dpotri(factor, lower=1)
    if info != 0:
        values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
        return (vectors / (np.maximum(values, 0.0) + shift)) @ vectors.T
    return np.tril(inverse) + np.tril(inverse, -1).T


def _usable_rank(dimension: int, rank: int) -> int:
    """``rank``, at most ``dimension - OVERSAMPLING`` (the range finder's columns must fit
    in the factor's dimension)."""
    return min(rank, dimension - OVERSAMPLING)


def _low_rank_damped_inverse(matrix: np.ndarray, shift: float, rank: int,
                             previous: np.ndarray | None = None) -> np.ndarray:
    """The packed low-rank plus isotropic :math:`(X + s I)^{-1}` (module docstring).

    The top ``rank`` eigenpairs of the symmetric :math:`X` by one step of subspace
    iteration and Rayleigh-Ritz (Halko, Martinsson and Tropp 2011): the basis of
    :math:`X \\Omega` with :math:`\\Omega` the eigenvectors packed in ``previous`` (the
    last refresh's inverse: a factor changes slowly between refreshes) and
    :data:`OVERSAMPLING` random columns from a fixed seed, so that a resumed run
    refreshes identically; with no previous eigenvectors, :math:`\\Omega` is random and
    the step is repeated twice. Negative eigenvalues are set to zero.
    """
    dimension = len(matrix)
    rank = _usable_rank(dimension, rank)
    symmetric = (matrix + matrix.T) / 2
    start = np.random.default_rng(dimension).standard_normal((dimension, rank + OVERSAMPLING))
    known = previous is not None and previous.shape == (dimension + 1, rank + 1) and np.any(
        previous[:dimension, :rank])
    if known:
        start[:, :rank] = previous[:dimension, :rank]
    basis = np.linalg.qr(symmetric @ start)[0]
    for _ in range(0 if known else 2):
        basis = np.linalg.qr(symmetric @ basis)[0]
    values, small_vectors = np.linalg.eigh(basis.T @ (symmetric @ basis))
    values, vectors = np.maximum(values[-rank:], 0.0), basis @ small_vectors[:, -rank:]
    rest = max((np.trace(symmetric) - values.sum()) / max(dimension - rank, 1), 0.0)
    isotropic = 1.0 / (rest + shift)
    packed = np.zeros((dimension + 1, rank + 1))
    packed[:dimension, :rank] = vectors
    packed[dimension, :rank] = 1.0 / (values + shift) - isotropic
    packed[dimension, rank] = isotropic
    return packed


def refresh_factor_inverses(state, config, steps: int) -> bool:
    """Recompute the damped inverses of the averaged factors where a refresh is due.

    After the first step that averaged a factor estimate, and then every
    ``config.kfac_inverse_interval`` steps (``steps``, the steps taken, is known on the
    host: the device's counts are read only where a refresh may be due): the
    bias-corrected averages :math:`\\hat A = A_t / (1 - \\beta^t)` (likewise
    :math:`\\hat S`) are inverted by :func:`damped_inverses` with the damping of the
    next step, and stored in ``state.factor_inverses`` in the model's dtype.

    Parameters
    ----------
    state : sgn_theano.sgn_state.SGNState
    config : sgn_theano.sgn_config.SGNConfig
    steps : int
        The steps taken, :attr:`sgn_theano.SGN.step_count`.

    Returns
    -------
    bool
        Whether the inverses were refreshed.
    """
    if (steps - 1) % config.kfac_inverse_interval:
        return False
    count = int(state.factor_count.get_value())
    if count == 0:
        return False
    correction = 1 - config.kfac_decay ** count
    damping = float(state.damping.get_value())
    factors, inverses = state.factors, state.factor_inverses
    for index in range(0, len(factors), 2):
        # The last eigenvectors of the wide factors only (the others are inverted anew).
        pairs = zip(factors[index:index + 2], inverses[index:index + 2])
        previous = [inverse.get_value() if len(factor.get_value(borrow=True))
                    > EXACT_INVERSE_LIMIT else None for factor, inverse in pairs]
        pair = damped_inverses(factors[index].get_value() / correction,
                               factors[index + 1].get_value() / correction, damping,
                               config.kfac_rank, previous)
        for inverse, value in zip(inverses[index:index + 2], pair):
            inverse.set_value(value.astype(state.damping.dtype))
    return True
