"""Preconditioners of SGN's conjugate gradient, one module per kind.

* :mod:`~sgn_theano.preconditioning.registry`: the names :class:`sgn_theano.SGN` takes
  (``preconditioner=``) and what each needs from the step and the optimizer;
* :mod:`~sgn_theano.preconditioning.kronecker_factored`: K-FAC (``"kfac"``), on the
  layers :mod:`~sgn_theano.preconditioning.layer_detection` finds in the graph, its
  inverses refreshed by :mod:`~sgn_theano.preconditioning.positive_inverse`'s op;
* :mod:`~sgn_theano.preconditioning.diagonal` and
  :mod:`~sgn_theano.preconditioning.curvature_diagonal`: diagonal preconditioners and
  the estimates of the curvature's diagonal they are made from;
* :mod:`~sgn_theano.preconditioning.host_probe`: the random probes drawn on the host.

A new preconditioner is one module and one entry of
:data:`sgn_theano.preconditioning.registry.PRECONDITIONERS`.
"""
