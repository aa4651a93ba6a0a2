"""The stochastic generalized Gauss-Newton (SGN) optimizer.

Gargiani, Zanelli, Diehl, Hutter (2020), "On the promise of the stochastic generalized
Gauss-Newton method for training DNNs", arXiv:2006.02409.

On each mini-batch, with :math:`g` the gradient, :math:`G = J^\\top H_L J` the
generalized Gauss-Newton matrix (:mod:`sgn_theano.curvature`) and :math:`\\rho` the
damping, SGN approximately solves

.. math::

    (G + \\rho I) \\, d = -g

with at most ``max_cg_iters`` conjugate-gradient iterations (:mod:`sgn_theano.cg`) and
moves :math:`\\theta \\leftarrow \\theta + \\alpha d`. Two entry points share one
implementation (:func:`gauss_newton_direction`, and the step stages of
:mod:`sgn_theano.step_stages`):

* :func:`sgn`, Lasagne-style updates with fixed damping and step size;
* :class:`SGN`, the full method, compiled into one function per step: trust-region
  damping, Armijo line search, momentum, warm start, step rejection.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import pytensor
from pytensor.tensor.variable import TensorVariable

from sgn_theano import validation
from sgn_theano.block_layout import with_static_shapes
from sgn_theano.compilation.loop_invariants import loops_compiled_in
from sgn_theano.compilation.modes import check_mode, is_jax_mode, loops_can_exit_early
from sgn_theano.curvature import (
    curvature_batch,
    first_rows,
    gauss_newton_operator,
    loss_hessian_root,
)
from sgn_theano.data_parallel import DataParallel, local_shard
from sgn_theano.errors import SGNInputError
from sgn_theano.preconditioning.host_probe import HostProbe
from sgn_theano.preconditioning.kronecker_factored import inverse_refresh_updates, refresh_due
from sgn_theano.preconditioning.layer_detection import find_layers
from sgn_theano.preconditioning.loop_layers import layers_in_loops
from sgn_theano.preconditioning.positive_inverse import one_host_blas_thread
from sgn_theano.sgn_config import SGNConfig
from sgn_theano.sgn_state import SGNState
from sgn_theano.step_stages import Rejection, StepInfo, build_step, gauss_newton_direction

__all__ = ["SGN", "SGNConfig", "StepInfo", "gauss_newton_direction", "sgn"]


def sgn(
    loss: TensorVariable,
    params: Sequence,
    outputs: TensorVariable,
    *,
    max_cg_iters: int = 3,
    damping: float | TensorVariable = 1e-3,
    learning_rate: float | TensorVariable = 1.0,
    curvature_fraction: float = 1.0,
    early_exit: bool = True,
) -> OrderedDict:
    """SGN updates with fixed damping and step size, Lasagne style.

    ``param := param + learning_rate * d`` with ``d`` from ``max_cg_iters`` CG
    iterations on :math:`(G + \\rho I) d = -g` started at zero. ``damping`` and
    ``learning_rate`` may be floats or symbolic scalars (e.g. shared variables, to
    change them later without recompiling).

    Parameters
    ----------
    loss : TensorVariable
        Scalar mean loss built from ``outputs``.
    params : list of shared variables
        The parameters to update.
    outputs : TensorVariable
        Where the Gauss-Newton split is made (the logits for classification).
    max_cg_iters : int
        CG iterations per step, ``>= 1``.
    damping : float or scalar TensorVariable
        :math:`\\rho \\ge 0`.
    learning_rate : float or scalar TensorVariable
        :math:`\\alpha > 0`.
    curvature_fraction : float
        :math:`f \\in (0, 1]`: the Gauss-Newton products use the first
        :math:`\\lceil f B \\rceil` rows of each batch of :math:`B` rows (every free
        input of ``loss`` with a first axis is cut, in the graph:
        :func:`sgn_theano.curvature.first_rows`), as in :class:`SGN`. In the JAX
        backend the inputs then need a static batch size (``pt.matrix(shape=(B, n))``).
    early_exit : bool
        Leave the CG loop when it stops (see :func:`sgn_theano.cg.conjugate_gradient`).
        In JAX mode that needs the library's while loops: compile with
        ``mode=compile_mode("JAX")`` (:mod:`sgn_theano.compilation.jax_loops`), or pass False for
        a plain PyTensor JAX mode.

    Returns
    -------
    OrderedDict
        ``{param: updated expression}`` for ``pytensor.function(..., updates=...)``.

    Examples
    --------
    >>> updates = sgn(loss, params, logits, max_cg_iters=5)     # doctest: +SKIP
    >>> train = pytensor.function([x, y], loss, updates=updates)  # doctest: +SKIP
    """
    params = validation.check_params(params)
    dtype = validation.check_graph(validation.check_loss(loss), outputs, params)
    max_cg_iters = validation.check_integer("max_cg_iters", max_cg_iters, low=1)
    rho = validation.scalar_hyperparameter("damping", damping, dtype, low=0.0)
    alpha = validation.scalar_hyperparameter("learning_rate", learning_rate, dtype, low=0.0,
                                             low_open=True)
    fraction = validation.check_float("curvature_fraction", curvature_fraction, low=0.0,
                                      high=1.0, low_open=True)
    rows = first_rows(validation.free_inputs(loss), fraction) if fraction < 1 else {}
    curvature_loss, curvature_outputs = curvature_batch(loss, outputs, rows)
    gradients = pytensor.grad(loss, params)
    product = gauss_newton_operator(curvature_loss, curvature_outputs, params)
    rhs = with_static_shapes([-gradient for gradient in gradients], params)
    solution = gauss_newton_direction(product, rhs, rho, max_cg_iters=max_cg_iters,
                                      early_exit=early_exit)
    return OrderedDict(
        (param, param + alpha * direction) for param, direction in zip(params, solution.x)
    )


class SGN:
    """Stochastic generalized Gauss-Newton optimizer with step control.

    One call of :meth:`step` runs one compiled function on one mini-batch:

    1. loss :math:`L` and gradient :math:`g`; with momentum :math:`\\beta`, the
       right-hand side is the bias-corrected average
       :math:`m_t = \\beta m_{t-1} + (1 - \\beta) g`, :math:`b = -m_t / (1 - \\beta^t)`,
       otherwise :math:`b = -g`;
    2. at most ``max_cg_iters`` CG iterations on :math:`(G + \\rho I) d = b`
       (:func:`sgn_theano.cg.conjugate_gradient`), with :math:`G` that of the first
       :math:`\\lceil f B \\rceil` rows of the batch (``curvature_fraction`` :math:`f`),
       from the warm start
       :math:`d_0 = \\text{warm\\_start} \\cdot d_{\\text{previous}}`, stopping early
       once :math:`\\lVert r \\rVert \\le \\text{cg\\_tol} \\lVert b \\rVert`, on too
       little relative progress on the quadratic model (``cg_progress_tol``, Martens'
       rule), or on a direction without positive curvature; preconditioned,
       with ``preconditioner="kfac"``, by Kronecker-factored curvature, per layer
       :math:`R \\mapsto (A + \\pi\\sqrt\\rho I)^{-1} R (S + \\sqrt\\rho/\\pi I)^{-1}`
       (:mod:`sgn_theano.preconditioning.kronecker_factored`), or with a
       diagonal ``preconditioner`` by
       :math:`M = (\\max(D, 0) + \\epsilon)^{-a}` elementwise
       (:func:`sgn_theano.preconditioning.diagonal.curvature_preconditioner`), with
       :math:`a` = ``preconditioner_exponent``, :math:`\\epsilon` =
       ``preconditioner_epsilon`` (by default :math:`\\rho`) and :math:`D` the square
       of the right-hand side :math:`b^2` (``"jacobi"``), or the bias-corrected average
       with decay ``preconditioner_decay`` of :math:`g^2` (``"gradient_squares"``,
       Adam's second moment) or of Hutchinson's :math:`v \\odot G v` (``"hutchinson"``,
       an unbiased estimate of :math:`\\operatorname{diag}(G)` from one more
       :math:`G v`; :mod:`sgn_theano.preconditioning.curvature_diagonal`); then, with
       ``model_momentum``, the update is :math:`\\delta = \\alpha d + \\mu
       \\delta_{t-1}`, :math:`(\\alpha, \\mu)` minimizing the quadratic model on the
       span of :math:`d` and the previous update (K-FAC's momentum; one more
       :math:`G v`; :func:`sgn_theano.step_stages.model_momentum_update`), and
       :math:`d` stands for :math:`\\delta` below;
    3. with ``line_search``, Armijo backtracking on the same batch from
       :math:`\\alpha_0` = ``learning_rate``: the largest
       :math:`\\alpha = \\alpha_0 2^{-i}`, :math:`i < 10`, with
       :math:`L(\\theta + \\alpha d) \\le L + 10^{-4} \\alpha g^\\top d`;
    4. when the loss after the step is evaluated (``line_search`` or
       ``trust_region``), the ratio of actual to predicted change
       :math:`r = (L(\\theta + \\alpha d) - L) / (\\alpha g^\\top d +
       \\tfrac12 \\alpha^2 d^\\top (G + \\rho I) d)`;
    5. the next damping: with ``trust_region``, :math:`\\rho \\leftarrow 3\\rho/2` if
       :math:`r < 1/4`, :math:`2\\rho/3` if :math:`r > 3/4`, clipped to
       ``[min_damping, max_damping]``; otherwise the ``damping_schedule`` value
       :math:`\\rho_{t+1}` (:func:`sgn_theano.damping.scheduled_damping`), or
       :math:`\\max(\\rho_{t+1}, 3\\rho/2)` after a rejected step;
    6. :math:`\\theta \\leftarrow \\theta + \\alpha d` unless the step is rejected, which
       leaves the parameters byte-identical and says why in :attr:`StepInfo.reason`:
       a non-finite loss or gradient; a non-finite direction or one that is not a
       descent direction (:math:`g^\\top d \\ge 0`); a failed line search; a non-finite
       loss after the step; or :math:`r` below ``rejection_threshold`` (or undefined,
       when the model predicts no decrease).

    Parameters
    ----------
    loss : TensorVariable
        Scalar mean loss over the batch, built from ``outputs``.
    params : list of shared variables
        Parameters to optimize, updated in place by :meth:`step`.
    outputs : TensorVariable
        Where the Gauss-Newton split is made (logits, linear regression output).
    inputs : list of TensorVariable
        The free symbolic inputs of ``loss`` (e.g. ``[x, y]``), in the order
        :meth:`step` takes the batch arrays.
    mode : str or pytensor Mode, optional
        Compile mode: a name of :data:`sgn_theano.compilation.modes.MODES` (``"C"``, ``"NUMBA"``,
        ``"JAX"``...) or any PyTensor mode. Default: ``"C"`` linked to OpenBLAS where
        it is found (the fastest to compile, as fast to run), else ``"NUMBA"``.
    comm : mpi4py communicator, optional
        Data parallelism (:mod:`sgn_theano.data_parallel`): every process of ``comm``
        builds the same SGN and calls :meth:`step` on its own shard of each batch
        (shards may differ in size), and ``loss`` is the mean over the shard. The loss,
        the gradient, each :math:`G v` and each loss of the line search are summed over
        the processes, weighted by shard size, inside the compiled step, so every
        process takes the step one process would take on the whole batch (the
        curvature mini-batch is ``curvature_fraction`` of each shard). The parameters
        are set to rank 0's values here. A bad batch on any process raises the same
        error on every process, with nothing changed. Modes C and NUMBA (JAX has no
        MPI op here).
    **options
        The options of the step, each checked and documented by
        :class:`~sgn_theano.sgn_config.SGNConfig` (``max_cg_iters``, ``damping``,
        ``preconditioner``, ``curvature_fraction``...); an unknown name raises
        :class:`~sgn_theano.errors.SGNInputTypeError`.
    """

    def __init__(self, loss: TensorVariable, params: Sequence, outputs: TensorVariable,
                 inputs: Sequence[TensorVariable], *, mode=None, comm=None, **options):
        params = validation.check_params(params)
        self.dtype = validation.check_graph(validation.check_loss(loss), outputs, params)
        self.inputs = validation.check_inputs(inputs, loss)
        #: The options, checked (:class:`sgn_theano.sgn_config.SGNConfig`).
        self.config = SGNConfig.from_options(options)
        mode = check_mode(mode)
        self._parallel = None if comm is None else DataParallel(comm, self.dtype)
        if self._parallel is not None and is_jax_mode(mode):
            raise SGNInputError("`comm` (data-parallel SGN) works in modes C and NUMBA; JAX "
                                "mode has no MPI op in this library (mpi4jax is not supported "
                                "yet).")
        curvature = self._curvature_batch(loss, outputs)
        #: K-FAC's layers (:func:`sgn_theano.preconditioning.layer_detection.find_layers`,
        #: and inside ``scan`` loops :func:`sgn_theano.preconditioning.loop_layers.
        #: layers_in_loops`), with ``preconditioner="kfac"``; :meth:`LayerMap.describe`
        #: says which parameter got which block.
        self.layers = None
        if self.config.kronecker_factored:
            with loops_compiled_in(mode):  # a rebuilt user loop compiles in `mode` too
                curvature, in_loops = layers_in_loops(*curvature, params)
            self.layers = find_layers(curvature[1], params, in_loops)
        #: The shared variables of the step (:class:`sgn_theano.sgn_state.SGNState`).
        self.state = SGNState.create(params, self.config, self.dtype, self.layers)
        self._probe = HostProbe(self.config, outputs, params, self.inputs, self.dtype)
        with loops_compiled_in(mode):  # the CG loop and line search compile in `mode` too
            step_outputs, updates = build_step(
                loss, outputs, self.state, self.config, early_exit=loops_can_exit_early(mode),
                curvature=curvature, parallel=self._parallel, probe=self._probe.symbolic,
                layers=self.layers)
        weights = [] if self._parallel is None else self._parallel.inputs
        # The rows of an input the products do not need (the targets of a squared error,
        # whose Hessian is constant) go unused; `check_inputs` has checked the others.
        self._step = pytensor.function(self.inputs + self._curvature_inputs
                                       + self._probe.inputs + weights,
                                       step_outputs.packed(self.dtype), updates=updates,
                                       mode=mode, on_unused_input="ignore")
        # `step` hands the function checked arrays of the inputs' dtypes; in JAX mode
        # PyTensor's own input check would copy an array on the device to the host.
        self._step.trust_input = is_jax_mode(mode)
        #: The compiled refresh of K-FAC's damped inverses (no input, no output: in JAX
        #: mode the factors stay on the device), called after the steps where one is due
        #: (:func:`sgn_theano.preconditioning.kronecker_factored.refresh_due`); ``None``
        #: without K-FAC.
        self.inverse_refresh = None
        if self.config.kronecker_factored and self.state.factors:
            self.inverse_refresh = pytensor.function([], [], updates=inverse_refresh_updates(
                self.state, self.config, loss_hessian_root(*curvature) is not None), mode=mode)
        self._step_count = int(self.state.step_count.get_value())
        # JAX cannot raise inside the step: a failed check of the graph's shows as a
        # non-finite loss, and raises on the host after the step that rejects it.
        self._host_checks = (validation.HostChecks(loss, self.inputs) if is_jax_mode(mode)
                             else None)
        if self._parallel is not None:
            self._parallel.broadcast(self.params)

    def _curvature_batch(self, loss: TensorVariable, outputs: TensorVariable) -> tuple:
        """``loss`` and ``outputs`` on the curvature rows
        (:func:`sgn_theano.curvature.curvature_batch`). The rows come in as inputs of their
        own, ``self._curvature_inputs`` (cut from the arrays in :meth:`step`), so every
        backend sees static slice bounds."""
        with_rows = validation.batched(self.inputs)
        self._curvature_inputs = [] if self.config.curvature_fraction == 1 else [
            variable.type.clone(shape=(None, *variable.type.shape[1:]))(
                name=f"{variable.name or 'input'}_curvature_rows") for variable in with_rows]
        return curvature_batch(loss, outputs, dict(zip(with_rows, self._curvature_inputs)))

    @property
    def params(self) -> list:
        """The parameters (shared variables) :meth:`step` updates."""
        return self.state.params

    def step(self, *batch) -> StepInfo:
        """Run one SGN iteration on one mini-batch and update the parameters in place.

        Parameters
        ----------
        *batch : numpy arrays, or JAX arrays in JAX mode
            One array per element of ``inputs``, in that order, with a common first
            (batch) axis. They are checked (dimensions, dtype, finiteness) before
            anything runs; a bad batch raises :class:`~sgn_theano.errors.SGNInputError`
            and leaves every state untouched. Arrays already on a JAX device (a GPU's)
            stay there: their values are checked for NaN and inf only after a step
            that found a non-finite loss or gradient, which raises the same error with
            the state restored.

        Returns
        -------
        StepInfo
        """
        fraction = self.config.curvature_fraction
        shard = (local_shard(self.inputs, batch, fraction) if self._parallel is None
                 else self._parallel.shard(self.inputs, batch, fraction))
        rows = shard.curvature_rows
        arguments = [*shard.arrays,
                     *[array[:rows] for array in validation.batched(shard.arrays)
                       if self._curvature_inputs],
                     *self._probe.arrays(shard.arrays, self._step_count, shard.offset, rows,
                                         shard.curvature_total),
                     *shard.weights]
        packed = (self._step(*arguments) if self._parallel is None
                  else self._parallel.run(self._step, *arguments))
        info = StepInfo.from_outputs(np.asarray(packed))  # the step's one device-to-host copy
        if info.reason == Rejection.NON_FINITE_GRADIENT.reason:
            self._refuse_bad_batch_after_rejection(shard.arrays, info)
        self._step_count += 1  # as the compiled step counts: every call that returned
        if self.inverse_refresh is not None and refresh_due(self._step_count,
                                                            self.config.kfac_inverse_interval):
            with one_host_blas_thread():  # no spinning LAPACK threads left for the next step
                self.inverse_refresh()
        return info

    def _refuse_bad_batch_after_rejection(self, arrays: list, info: StepInfo) -> None:
        """After a step that found a non-finite loss or gradient, raise the error the
        batch gets before the step in C mode, with the state as it was (the rejected step
        kept the parameters and averages; its damping and step count are undone here):
        NaN or inf in an array on a device, whose values are read only now
        (:func:`~sgn_theano.validation.check_batch`), and in JAX mode a failed check of
        the graph's (:class:`~sgn_theano.validation.HostChecks`)."""
        def restore_state():
            self.state.damping.set_value(np.asarray(info.damping, dtype=self.dtype))
            self.state.step_count.set_value(np.int64(self._step_count))
        for index, array in enumerate(arrays):
            if (validation.is_device_array(array) and np.dtype(array.dtype).kind == "f"
                    and not np.isfinite(np.asarray(array)).all()):
                restore_state()
                raise SGNInputError(validation.non_finite_message(self.inputs, index))
        if self._host_checks is not None:
            try:
                self._host_checks(arrays)
            except SGNInputError:
                restore_state()
                raise

    def warm_up(self, *batch) -> None:
        """Compile the step for batches shaped like ``batch``, before any timed step: one
        :meth:`step` taken and undone, every state array restored bit for bit
        (:meth:`state_dict`), K-FAC's :attr:`inverse_refresh` run once with it. Backends
        that compile at the first call (JAX's JIT, NUMBA) compile here; in C mode the step
        was compiled at construction, and this only costs a step. A data-parallel SGN
        calls it on every process, each with its shard.

        Parameters
        ----------
        *batch : arrays
            As :meth:`step` takes them; checked the same way.
        """
        saved = self.state_dict()
        self.step(*batch)
        if self.inverse_refresh is not None and not refresh_due(
                self._step_count, self.config.kfac_inverse_interval):  # the step did not
            self.inverse_refresh()
        self.load_state_dict(saved)

    @property
    def damping(self) -> float:
        """The damping :math:`\\rho` the next step will use."""
        return float(self.state.damping.get_value())

    @property
    def step_count(self) -> int:
        """Number of calls of :meth:`step` so far (accepted or not); kept on the host,
        so reading it does not wait for a device."""
        return self._step_count

    def state_dict(self) -> dict:
        """Everything needed to resume exactly: the configuration and every state array.

        Returns
        -------
        dict
            ``{"config": dict, "state": {role: [numpy array, ...]}}``: the options as
            :meth:`SGNConfig.to_dict` gives them, and copies of the parameters, the
            damping, the step counters, and the momentum and warm-start buffers where
            used (the roles of :meth:`SGNState.roles`).
        """
        return {
            "config": self.config.to_dict(),
            "state": {role: [variable.get_value(borrow=False) for variable in variables]
                      for role, variables in self.state.roles().items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`, checking it all before changing anything.

        Raises
        ------
        SGNInputError
            If ``state`` comes from a differently shaped model or an optimizer whose
            configuration differs from this one.
        """
        if not isinstance(state, dict) or set(state) != {"config", "state"}:
            raise SGNInputError("`state` must be a dict from `SGN.state_dict()` with keys "
                                "'config' and 'state'.")
        config = self.config.to_dict()
        if state["config"] != config:
            differing = sorted(key for key in set(state["config"]) | set(config)
                               if state["config"].get(key) != config.get(key))
            raise SGNInputError(f"`state` was saved by an SGN with other settings: {differing}.")
        saved, roles = state["state"], self.state.roles()
        if set(saved) != set(roles):
            raise SGNInputError(f"`state` holds {sorted(saved)}, expected {sorted(roles)}.")
        targets = []
        for role, variables in roles.items():
            if len(saved[role]) != len(variables):
                raise SGNInputError(f"`state['state']['{role}']` has {len(saved[role])} arrays, "
                                    f"expected {len(variables)}: is it from another model?")
            targets += [(f"`state['state']['{role}'][{i}]`", variable, value)
                        for i, (variable, value) in enumerate(zip(variables, saved[role]))]
        validation.set_checked_values(targets)
        self._step_count = int(self.state.step_count.get_value())
