"""The options of :class:`sgn_theano.SGN`: one frozen, typed record, checked when made.

:class:`SGNConfig` holds every option of the step (what :class:`~sgn_theano.SGN`
takes besides the graph and the mode), converted to plain Python types and checked
for range and for conflicts between options when it is constructed, so a bad option
raises before anything is compiled. It reads like a mapping (``config["damping"]``),
and :meth:`SGNConfig.to_dict` gives the plain-data form saved by
:meth:`sgn_theano.SGN.state_dict`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

from sgn_theano.damping import LOWER_RATIO, SCHEDULES
from sgn_theano.errors import SGNInputError, SGNInputTypeError
from sgn_theano.preconditioning.diagonal import JACOBI_EXPONENT
from sgn_theano.preconditioning.registry import PRECONDITIONERS
from sgn_theano.validation import check_float, check_integer

__all__ = ["SGNConfig"]

#: How :meth:`SGNConfig.to_dict` records a callable preconditioner.
CUSTOM_PRECONDITIONER = "custom"

#: (low, high, low_open, high_open) of each float option whose range is fixed.
FLOAT_RANGES = {
    "cg_tol": (0.0, float("inf"), False, False),
    "cg_progress_tol": (0.0, float("inf"), False, False),
    "learning_rate": (0.0, float("inf"), True, False),
    "rejection_threshold": (0.0, LOWER_RATIO, False, True),
    "momentum": (0.0, 1.0, False, True),
    "warm_start": (0.0, 1.0, False, False),
    "min_damping": (0.0, float("inf"), True, False),
    "max_damping": (0.0, float("inf"), True, False),
    "curvature_fraction": (0.0, 1.0, True, False),
    "preconditioner_decay": (0.0, 1.0, False, True),
    "preconditioner_exponent": (0.0, 1.0, False, False),
    "kfac_decay": (0.0, 1.0, False, True),
}


@dataclasses.dataclass(frozen=True, eq=False)
class SGNConfig(Mapping):
    """The options of the SGN step, each with its default: what
    ``SGN(loss, params, outputs, inputs, **options)`` takes, the one place each option
    and its default are written (:class:`sgn_theano.SGN` gives the method they control,
    step by step).

    Parameters
    ----------
    max_cg_iters : int
        Largest number of CG iterations per step, ``>= 1``.
    cg_tol : float
        Relative residual tolerance of CG, ``>= 0``.
    cg_progress_tol : float
        :math:`\\epsilon \\ge 0` of Martens' relative-progress rule (acts after more
        than 10 iterations); 0 turns it off.
    damping : float
        Initial :math:`\\rho` (``>= 0``; within ``[min_damping, max_damping]`` with
        ``trust_region`` or a decaying schedule).
    min_damping, max_damping : float
        Bounds of :math:`\\rho` under the trust-region rule; ``min_damping`` is also
        where a schedule decays to. The default floor 0.1 is measured: with a floor of
        1e-6, 10-20 CG iterations nearly solve each batch's model and over-fit that
        batch (Fashion-MNIST test accuracy stuck near 80% with k = 20); 0.1 fixes that
        and leaves k = 3 as good as before. Lower it for small, smooth full-batch
        problems that need long steps (docs, results: "Robustness").
    min_damping_rows : int, optional
        :math:`m_0 \\ge 1`: with a curvature mini-batch of :math:`m > m_0` rows the
        trust region's floor is ``min_damping`` :math:`\\times m_0 / m`
        (:func:`sgn_theano.damping.damping_floor`: the curvature estimate's variance
        falls as :math:`1/m`); ``None`` keeps it at ``min_damping``. The default 100 is
        the curvature rows of a batch of 1000, where the floor 0.1 was measured; at
        batch 10000 (1000 rows, floor 0.01) SGN gained about 2 points of test accuracy
        at 10 s on Fashion-MNIST (docs, results).
    trust_region : bool
        Adapt :math:`\\rho` by the trust-region rule.
    damping_schedule : {"constant", "linear", "cosine"}
        Damping when ``trust_region`` is off: constant, or decaying from ``damping``
        to ``min_damping`` over ``damping_decay_steps`` steps.
    damping_decay_steps : int, optional
        Length of a linear or cosine decay, ``>= 1``.
    line_search : bool
        Armijo backtracking from ``learning_rate``.
    learning_rate : float
        Step size :math:`\\alpha`, or the first one tried by the line search.
    rejection_threshold : float
        Steps with :math:`r` below it are rejected, in ``[0, 1/4)``; 0 rejects steps
        that increase the loss. Acts when :math:`r` is computed (``trust_region`` or
        ``line_search``).
    momentum : float
        :math:`\\beta \\in [0, 1)`, the gradient averaging of the right-hand side.
    preconditioner : {"kfac", "jacobi", "gradient_squares", "hutchinson"}, callable or None
        ``"kfac"``, Kronecker-factored curvature
        (:mod:`sgn_theano.preconditioning.kronecker_factored`) on the dense and im2col
        layers found in the graph (:attr:`sgn_theano.SGN.layers`), with averaged
        gradient squares on the other parameters (ahead of the best Adam at batch 10000
        and on a deep autoencoder in the docs' results, where SGN without it trailed; its
        step costs 1.0-1.3 steps without a preconditioner); one of the diagonal
        preconditioners of :class:`~sgn_theano.SGN` (step 2); ``None`` (the default),
        plain CG; or a callable ``list -> list``: a symbolic product with an SPD
        approximation of :math:`(G + \\rho I)^{-1}`, handed to
        :func:`sgn_theano.cg.conjugate_gradient` (what it computes that does not depend
        on its argument is computed once per step, outside CG's loop).
    preconditioner_decay : float
        :math:`\\beta \\in [0, 1)` of the average of ``"gradient_squares"`` and
        ``"hutchinson"``.
    preconditioner_exponent : float
        :math:`a \\in [0, 1]`: 1 is Jacobi's, 3/4 Martens' (2010), 1/2 Adam's scaling.
    preconditioner_epsilon : float, optional
        :math:`\\epsilon > 0` added to the diagonal; ``None`` adds the damping
        :math:`\\rho`, the diagonal of :math:`G + \\rho I`.
    curvature_fraction : float
        :math:`f \\in (0, 1]`, the curvature mini-batch (Martens 2010; Byrd et al.
        2011): the Gauss-Newton products of CG, and so the curvature term of
        :math:`r`, use only the first :math:`m = \\lceil f B \\rceil` rows of each
        batch of :math:`B` rows, as the mean loss over those rows
        (:func:`sgn_theano.curvature.curvature_batch`); the gradient, the loss and the
        line search use the whole batch. Their forward pass is computed once per step,
        so a :math:`G v` costs about :math:`f` of a full one. The first rows are a
        sample only if batches come in random order, as
        :func:`sgn_theano.data.minibatches` gives them. 1 uses the whole batch.
        The default 0.1 is measured: on Fashion-MNIST (MLP at batch 1000, LeNet-5) and
        the sine regression it was ahead of 1 at equal seconds with three seeds (docs,
        results); a batch of fewer than 10 rows gets a curvature batch of one row.
    kfac_decay : float
        :math:`\\beta \\in [0, 1)` of K-FAC's factor averages.
    kfac_inverse_interval : int
        Steps between refreshes of K-FAC's damped inverses (a compiled function of
        their own in the step's mode, :attr:`sgn_theano.SGN.inverse_refresh`, with the
        damping of the time), ``>= 1``.
    kfac_rank : int
        Rank of the low-rank plus isotropic inverses of factors wider than
        :data:`~sgn_theano.preconditioning.kronecker_factored.EXACT_INVERSE_LIMIT`
        (a 2048-unit layer's), ``>= 1``; narrower factors are inverted exactly.
    warm_start : float
        Decay :math:`\\in [0, 1]` applied to the previous accepted direction to start
        CG (Martens uses 0.95); 0 (the default) starts from zero. Off by default: it
        costs one more :math:`G v` per step and, measured on Fashion-MNIST (batch 1000,
        a fresh batch each step), did not pay for it.
    model_momentum : bool
        K-FAC's momentum (:class:`~sgn_theano.SGN`, step 2): one more :math:`G v` per step.

    Raises
    ------
    SGNInputTypeError
        An option of the wrong kind (a string for a number, a non-bool flag), or an
        unknown option (:meth:`from_options`); a ``TypeError``.
    SGNInputError
        An option out of range, or options that conflict (a decaying damping schedule
        with the trust region on, ``min_damping > max_damping``...); a ``ValueError``.
    """

    max_cg_iters: int = 1
    cg_tol: float = 1e-6
    cg_progress_tol: float = 5e-4
    damping: float = 0.1
    min_damping: float = 0.1
    min_damping_rows: int | None = 100
    max_damping: float = 1e6
    trust_region: bool = True
    damping_schedule: Literal["constant", "linear", "cosine"] = "constant"
    damping_decay_steps: int | None = None
    line_search: bool = True
    learning_rate: float = 1.0
    rejection_threshold: float = 0.0
    momentum: float = 0.0
    preconditioner: (Literal["jacobi", "gradient_squares", "hutchinson", "kfac"] | Callable
                     | None) = "kfac"
    preconditioner_decay: float = 0.99
    preconditioner_exponent: float = JACOBI_EXPONENT
    preconditioner_epsilon: float | None = None
    kfac_decay: float = 0.95
    kfac_inverse_interval: int = 10
    kfac_rank: int = 128
    warm_start: float = 0.0
    model_momentum: bool = True
    curvature_fraction: float = 0.1

    def __post_init__(self):
        checked = {name: check_integer(name, getattr(self, name), low=1)
                   for name in ("max_cg_iters", "kfac_inverse_interval", "kfac_rank")}
        for name, (low, high, low_open, high_open) in FLOAT_RANGES.items():
            checked[name] = check_float(name, getattr(self, name), low=low, high=high,
                                        low_open=low_open, high_open=high_open)
        for flag in ("trust_region", "line_search", "model_momentum"):
            if not isinstance(getattr(self, flag), bool):
                raise SGNInputTypeError(f"`{flag}` must be True or False, got "
                                        f"{getattr(self, flag)!r}.")
        self._check_preconditioner()
        if checked["min_damping"] > checked["max_damping"]:
            raise SGNInputError(f"`min_damping` ({checked['min_damping']}) exceeds "
                                f"`max_damping` ({checked['max_damping']}).")
        checked["damping_decay_steps"] = self._checked_decay_steps()
        if self.min_damping_rows is not None:
            checked["min_damping_rows"] = check_integer("min_damping_rows",
                                                        self.min_damping_rows, low=1)
        if self.preconditioner_epsilon is not None:
            checked["preconditioner_epsilon"] = check_float(
                "preconditioner_epsilon", self.preconditioner_epsilon, low=0.0, low_open=True)
        if self.trust_region or self.decaying:
            checked["damping"] = check_float("damping", self.damping,
                                             low=checked["min_damping"],
                                             high=checked["max_damping"])
        else:
            checked["damping"] = check_float("damping", self.damping, low=0.0)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def _check_preconditioner(self) -> None:
        preconditioner = self.preconditioner
        if not (preconditioner is None or callable(preconditioner)
                or isinstance(preconditioner, str) and preconditioner in PRECONDITIONERS):
            raise SGNInputTypeError(f"`preconditioner` must be one of {tuple(PRECONDITIONERS)}, "
                                    f"a callable list -> list, or None, got {preconditioner!r}.")

    def _checked_decay_steps(self) -> int | None:
        schedule = self.damping_schedule
        if not isinstance(schedule, str) or schedule not in SCHEDULES:
            raise SGNInputError(f"`damping_schedule` must be one of {SCHEDULES}, got "
                                f"{schedule!r}.")
        if self.decaying and self.trust_region:
            raise SGNInputError(f"`damping_schedule={schedule!r}` needs `trust_region=False` "
                                "(the trust region adapts the damping itself).")
        if self.decaying:
            return check_integer("damping_decay_steps", self.damping_decay_steps, low=1)
        if self.damping_decay_steps is not None:
            raise SGNInputError("`damping_decay_steps` applies to the 'linear' and 'cosine' "
                                "damping schedules only.")
        return None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SGNConfig:
        """The config of ``SGN(..., **options)``: an unknown name raises
        :class:`~sgn_theano.errors.SGNInputTypeError` listing the options."""
        unknown = sorted(set(options) - set(cls._names()))
        if unknown:
            raise SGNInputTypeError(f"Unknown SGN option(s) {unknown}; the options are "
                                    f"{list(cls._names())} (see SGNConfig).")
        return cls(**options)

    @property
    def decaying(self) -> bool:
        """Whether the damping follows a decaying schedule (``"linear"``, ``"cosine"``)."""
        return self.damping_schedule != "constant"

    @property
    def averages_diagonal(self) -> bool:
        """Whether the preconditioner averages a diagonal estimate over steps."""
        named = self.named_preconditioner
        return named is not None and named.averages_diagonal

    @property
    def kronecker_factored(self) -> bool:
        """Whether the preconditioner keeps Kronecker factors (``"kfac"``)."""
        return (self.named_preconditioner is not None
                and self.named_preconditioner.kronecker_factored)

    @property
    def named_preconditioner(self):
        """The :class:`sgn_theano.preconditioning.registry.Preconditioner` of a named
        ``preconditioner``, else ``None``."""
        chosen = self.preconditioner
        return PRECONDITIONERS[chosen] if isinstance(chosen, str) else None

    @property
    def evaluates_loss_after(self) -> bool:
        """Whether the step evaluates :math:`L(\\theta + \\alpha d)` (line search or
        trust region), and so the ratio :math:`r`."""
        return self.line_search or self.trust_region

    def to_dict(self) -> dict[str, Any]:
        """The options as plain data (a callable preconditioner becomes ``"custom"``),
        the form :meth:`sgn_theano.SGN.state_dict` saves and compares."""
        values = dict(self)
        if callable(values["preconditioner"]):
            values["preconditioner"] = CUSTOM_PRECONDITIONER
        return values

    # -- the mapping view -------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        if name not in self._names():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))
