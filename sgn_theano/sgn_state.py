"""The shared variables an SGN step reads and writes, in one named record."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytensor
from pytensor.compile.sharedvalue import SharedVariable

from sgn_theano.preconditioning.kronecker_factored import identity_inverse
from sgn_theano.preconditioning.layer_detection import LayerMap
from sgn_theano.sgn_config import SGNConfig
from sgn_theano.running_averages import shared_zeros_like

__all__ = ["SGNState"]


@dataclasses.dataclass(frozen=True)
class SGNState:
    """Every shared variable of one :class:`sgn_theano.SGN`, by role.

    Blocks (``params``, ``momentum``, ``direction``) are lists shaped like the
    parameters; a buffer an option does not use is an empty list, a counter it does
    not use is ``None``.
    """

    params: list[SharedVariable]  # the model, updated in place by each accepted step
    damping: SharedVariable  # shape=(), the model's dtype: rho of the next step
    step_count: SharedVariable  # shape=(), dtype=int64: steps taken, accepted or not
    momentum: list[SharedVariable]  # m_t, the gradient average (momentum > 0)
    momentum_count: SharedVariable | None  # shape=(), dtype=int64: t of the bias correction
    direction: list[SharedVariable]  # the last accepted direction (warm_start > 0)
    diagonal: list[SharedVariable]  # the averaged curvature diagonal (an estimator)
    diagonal_count: SharedVariable | None  # shape=(), dtype=int64: estimates averaged
    previous_update: list[SharedVariable]  # the last accepted update (model_momentum)
    factors: list[SharedVariable]  # K-FAC's averaged A_1, S_1, A_2, S_2, ... (kfac)
    factor_count: SharedVariable | None  # shape=(), dtype=int64: factor estimates averaged
    factor_inverses: list[SharedVariable]  # the damped inverses of `factors`, refreshed

    @classmethod
    def create(cls, params: list[SharedVariable], config: SGNConfig, dtype: str,
               layers: LayerMap | None = None) -> SGNState:
        """Fresh state: the given parameters, ``config.damping``, zero counters and
        buffers, and identity inverses of K-FAC's factors for the ``layers`` found
        (:func:`sgn_theano.preconditioning.layer_detection.find_layers`; needed with
        ``preconditioner="kfac"``, whose other parameters get a diagonal)."""
        if config.kronecker_factored and layers is None:
            raise ValueError("`layers` (find_layers of the curvature outputs) are needed for "
                             "preconditioner='kfac'.")
        use_momentum = config.momentum > 0
        diagonal_params = (params if config.averages_diagonal
                           else layers.diagonal if config.kronecker_factored else [])
        shapes = [shape for layer in (layers.layers if config.kronecker_factored else [])
                  for shape in layer.factor_shapes]
        return cls(
            params=params,
            damping=pytensor.shared(np.asarray(config.damping, dtype), name="damping"),
            step_count=pytensor.shared(np.int64(0), name="step_count"),
            momentum=[shared_zeros_like(p, "momentum") for p in params] if use_momentum else [],
            momentum_count=(pytensor.shared(np.int64(0), name="momentum_count")
                            if use_momentum else None),
            direction=([shared_zeros_like(p, "direction") for p in params]
                       if config.warm_start > 0 else []),
            diagonal=[shared_zeros_like(p, "diagonal") for p in diagonal_params],
            diagonal_count=(pytensor.shared(np.int64(0), name="diagonal_count")
                            if diagonal_params else None),
            previous_update=([shared_zeros_like(p, "previous_update") for p in params]
                             if config.model_momentum else []),
            factors=[pytensor.shared(np.zeros(shape, dtype), name="factor") for shape in shapes],
            factor_count=(pytensor.shared(np.int64(0), name="factor_count")
                          if shapes else None),
            factor_inverses=[pytensor.shared(identity_inverse(shape[0], config.kfac_rank, dtype),
                                             name="factor_inverse") for shape in shapes],
        )

    def roles(self) -> dict[str, list[SharedVariable]]:
        """``{role: [shared variable, ...]}`` for the roles in use, in field order (the
        layout of :meth:`sgn_theano.SGN.state_dict`)."""
        roles = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            variables = value if isinstance(value, list) else [] if value is None else [value]
            if variables or field.name == "params":
                roles[field.name] = variables
        return roles
