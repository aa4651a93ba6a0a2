"""Compiler plumbing: how the library's graphs are compiled, in every backend.

Compile modes and their set-up (:mod:`~sgn_theano.compilation.modes`), the rewrites the
library adds or replaces (:mod:`~sgn_theano.compilation.merge_rewrite`,
:mod:`~sgn_theano.compilation.softmax_inlining`), loops built cheaply
(:mod:`~sgn_theano.compilation.loop_invariants`) and as while loops in JAX
(:mod:`~sgn_theano.compilation.jax_loops`), and the process's memory allocator
(:mod:`~sgn_theano.compilation.allocator`). Nothing here knows the method or any network
op: ops with backend versions register them
(:func:`~sgn_theano.compilation.modes.register_backend_preparer`).
"""
