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
    """Options of the SGN step; see :class:`sgn_theano.SGN` for what each one does.

    Raises
    ------
    TypeError
        An option of the wrong kind (a string for a number, a non-bool flag).
    ValueError
        An option out of range, or options that conflict (a decaying damping schedule
        with the trust region on, ``min_damping > max_damping``...).
    """

    max_cg_iters: int = 3
    cg_tol: float = 1e-6
    cg_progress_tol: float = 5e-4
    damping: float = 0.1
    min_damping: float = 0.1
    max_damping: float = 1e6
    trust_region: bool = True
    damping_schedule: Literal["constant", "linear", "cosine"] = "constant"
    damping_decay_steps: int | None = None
    line_search: bool = True
    learning_rate: float = 1.0
    rejection_threshold: float = 0.0
    momentum: float = 0.0
    preconditioner: (Literal["jacobi", "gradient_squares", "hutchinson", "kfac"] | Callable
                     | None) = None
    preconditioner_decay: float = 0.99
    preconditioner_exponent: float = 0.75
    preconditioner_epsilon: float | None = None
    kfac_decay: float = 0.95
    kfac_inverse_interval: int = 10
    warm_start: float = 0.0
    model_momentum: bool = False
    curvature_fraction: float = 0.1

    def __post_init__(self):
        checked = {name: check_integer(name, getattr(self, name), low=1)
                   for name in ("max_cg_iters", "kfac_inverse_interval")}
        for name, (low, high, low_open, high_open) in FLOAT_RANGES.items():
            checked[name] = check_float(name, getattr(self, name), low=low, high=high,
                                        low_open=low_open, high_open=high_open)
        for flag in ("trust_region", "line_search", "model_momentum"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"`{flag}` must be True or False, got {getattr(self, flag)!r}.")
        self._check_preconditioner()
        if checked["min_damping"] > checked["max_damping"]:
            raise ValueError(f"`min_damping` ({checked['min_damping']}) exceeds "
                             f"`max_damping` ({checked['max_damping']}).")
        checked["damping_decay_steps"] = self._checked_decay_steps()
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
            raise TypeError(f"`preconditioner` must be one of {tuple(PRECONDITIONERS)}, a callable "
                            f"list -> list, or None, got {preconditioner!r}.")

    def _checked_decay_steps(self) -> int | None:
        schedule = self.damping_schedule
        if not isinstance(schedule, str) or schedule not in SCHEDULES:
            raise ValueError(f"`damping_schedule` must be one of {SCHEDULES}, got "
                             f"{schedule!r}.")
        if self.decaying and self.trust_region:
            raise ValueError(f"`damping_schedule={schedule!r}` needs `trust_region=False` "
                             "(the trust region adapts the damping itself).")
        if self.decaying:
            return check_integer("damping_decay_steps", self.damping_decay_steps, low=1)
        if self.damping_decay_steps is not None:
            raise ValueError("`damping_decay_steps` applies to the 'linear' and 'cosine' "
                             "damping schedules only.")
        return None

    @property
    def decaying(self) -> bool:
        """Whether the damping follows a decaying schedule (``"linear"``, ``"cosine"``)."""
        return self.damping_schedule != "constant"

    @property
    def averages_diagonal(self) -> bool:
        """Whether the preconditioner averages a diagonal estimate over steps."""
        return self.named_preconditioner is not None and self.named_preconditioner.averages_diagonal

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
