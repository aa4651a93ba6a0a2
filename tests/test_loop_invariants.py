"""Loop-invariant work is computed outside the scan loops, once per step."""

import numpy as np
import pytensor
import pytensor.tensor as pt
from helpers import TEST_MODE, build_problem
from pytensor.compile.mode import Mode
from pytensor.graph.traversal import ancestors, applys_between
from pytensor.scan.op import Scan

from sgn_theano import SGN
from sgn_theano.cg import UNROLLED_MAX_ITERS
from sgn_theano.compat import GRAPH_SOFTMAX_OPS
from sgn_theano.compilation.loop_invariants import (hoist_loop_invariants, loops_compiled_in,
                                                    scan_on_stand_ins)
from sgn_theano.curvature import gauss_newton_operator
from sgn_theano.optimizer import gauss_newton_direction


#: CG iterations that run in a loop (fewer are written out).
LOOPED = UNROLLED_MAX_ITERS + 2


def scalar_op_names(op: Scan) -> set[str]:
    return {type(node.op.scalar_op).__name__
            for node in applys_between(op.inner_inputs, op.inner_outputs)
            if hasattr(node.op, "scalar_op")}


def inner_op_names(op: Scan) -> set[str]:
    return {type(node.op).__name__ for node in op.fgraph.apply_nodes}


def test_scan_on_stand_ins_is_scan_on_the_real_inputs():
    x = pt.vector("x")
    start, scale = pt.cumsum(pt.exp(x)), pt.sum(x)  # graphs behind both outer inputs
    (trace, doubled) = scan_on_stand_ins(
        lambda state, factor: [state * factor, 2 * state], [start, None], [scale], 4)
    free = {v for v in ancestors([trace, doubled])
            if v.owner is None and not isinstance(v, pytensor.graph.basic.Constant)}
    assert free == {x}  # every stand-in was replaced by the real input
    values = np.array([0.1, -0.2, 0.3])
    got_trace, got_doubled = pytensor.function([x], [trace, doubled], mode=TEST_MODE)(values)
    state, factor = np.cumsum(np.exp(values)), values.sum()
    expected = [state * factor ** (i + 1) for i in range(4)]
    np.testing.assert_allclose(got_trace, expected)
    np.testing.assert_allclose(got_doubled, [2 * state * factor ** i for i in range(4)])


def test_hoists_nested_invariants_and_keeps_the_variant_part():
    x = pt.vector("x")
    hidden = pt.tanh(x)           # invariant, and an ancestor of the next invariant
    feature = pt.exp(hidden) * x  # invariant
    body, invariants = hoist_loop_invariants(lambda s: [s[0] * feature + hidden], [pt.vector()])
    assert set(invariants) == {feature, hidden}
    v, inner_feature, inner_hidden = pt.vector(), pt.vector(), pt.vector()
    (rebuilt,) = body([v], [inner_feature if i is feature else inner_hidden for i in invariants])
    assert x not in set(ancestors([rebuilt]))  # the invariant graph is cut off
    value = pytensor.function([v, inner_feature, inner_hidden], rebuilt, mode=TEST_MODE)(
        np.ones(2), np.full(2, 3.0), np.full(2, 4.0))
    np.testing.assert_array_equal(value, [7.0, 7.0])


def test_cg_loop_body_does_not_recompute_the_forward_pass():
    loss, outputs, params, _ = build_problem("softmax_cross_entropy", "tanh", "float64")
    gradients = pytensor.grad(loss, params)
    solution = gauss_newton_direction(gauss_newton_operator(loss, outputs, params),
                                      [-g for g in gradients],
                                      pt.constant(0.1, dtype="float64"), max_cg_iters=LOOPED)
    (loop,) = {v.owner for v in ancestors(solution.x)
               if v.owner is not None and isinstance(v.owner.op, Scan)}
    names = scalar_op_names(loop.op)
    assert "Tanh" not in names and "Exp" not in names  # activations and softmax hoisted
    assert "Mul" in names  # the vector-dependent products stay in the loop


def step_loops(optimizer) -> list:
    return [node for node in optimizer._step.maker.fgraph.apply_nodes
            if isinstance(node.op, Scan)]


def test_sgn_step_runs_one_cg_loop_and_one_line_search_loop():
    loss, outputs, params, inputs = build_problem("softmax_cross_entropy", "tanh", "float64")
    loops = step_loops(SGN(loss, params, outputs, inputs, max_cg_iters=LOOPED,
                           mode=TEST_MODE))
    assert len(loops) == 2  # no copy of the CG loop (graph_replace, not clone_replace)
    # only the line search evaluates the loss (picks each row's label), at new params
    evaluating = [loop for loop in loops if "AdvancedSubtensor" in inner_op_names(loop.op)]
    assert len(evaluating) == 1
    for loop in loops:  # softmax inlined in the loops, whose mode is not the caller's
        # softmax ops with no C code are inlined (PyTensor 3's; 2.38's have C code)
        assert not {op.__name__ for op in GRAPH_SOFTMAX_OPS} & inner_op_names(loop.op)


def test_few_cg_iterations_are_written_out_without_a_loop():
    loss, outputs, params, inputs = build_problem("softmax_cross_entropy", "tanh", "float64")
    for line_search in (False, True):
        optimizer = SGN(loss, params, outputs, inputs, max_cg_iters=UNROLLED_MAX_ITERS,
                        line_search=line_search, mode=TEST_MODE)
        assert len(step_loops(optimizer)) == int(line_search)  # the line search's only


def test_step_graph_as_built_holds_no_copy_of_the_cg_loop():
    # No rewrites at all: the compiled graph is the graph as built, so a copy of the CG
    # loop (clone_replace instead of graph_replace in the loss after the step) shows.
    unrewritten = Mode(linker="py", optimizer=None)
    loss, outputs, params, inputs = build_problem("softmax_cross_entropy", "tanh", "float64")
    for line_search, expected in ((False, 1), (True, 2)):
        optimizer = SGN(loss, params, outputs, inputs, line_search=line_search,
                        max_cg_iters=LOOPED, mode=unrewritten)
        assert len(step_loops(optimizer)) == expected, line_search


def cg_loop(optimizer):
    """The CG loop of a step (the one that does not evaluate the loss)."""
    (loop,) = [loop for loop in step_loops(optimizer)
               if "AdvancedSubtensor" not in inner_op_names(loop.op)]
    return loop


def test_a_callable_preconditioner_is_computed_once_outside_the_loop():
    # A per-example squared-gradient diagonal written by a user over the step's own
    # activations: its matrix products must run once per step, not in every iteration.
    rng = np.random.default_rng(0)
    x, y = pt.matrix("x", dtype="float64"), pt.ivector("y")
    w1, w2 = (pytensor.shared(rng.normal(size=shape), name=name)
              for shape, name in [((3, 4), "w1"), ((4, 3), "w2")])
    before_activation = x @ w1
    hidden = pt.maximum(before_activation, 0)
    outputs = hidden @ w2
    loss = -pt.mean(pt.special.log_softmax(outputs, axis=1)[pt.arange(y.shape[0]), y])
    rows = pt.cast(x.shape[0], "float64")
    delta_hidden, delta_out = (pytensor.grad(loss, z) * rows for z in (before_activation, outputs))
    diagonal = [(x**2).T @ delta_hidden**2 / rows, (hidden**2).T @ delta_out**2 / rows]

    def per_example(residual):
        return [r / (d + 0.1) for r, d in zip(residual, diagonal)]

    def body_products(preconditioner):
        optimizer = SGN(loss, [w1, w2], outputs, [x, y], max_cg_iters=LOOPED,
                        preconditioner=preconditioner, mode=TEST_MODE)
        loop = cg_loop(optimizer)
        return sum(any(name in type(node.op).__name__ for name in ("Dot", "Gemm"))
                   and sum(inp.type.ndim == 2 and 1 not in inp.type.shape
                           for inp in node.inputs) >= 2
                   for node in loop.op.fgraph.apply_nodes)

    # matrix-matrix products, G v's only (a preconditioner adds a vector dot, r^T z, which
    # the Python linker's rewrites write as a (1, n) @ (n, 1) product)
    assert body_products(per_example) == body_products(None) > 0


def test_sgn_compiles_its_loops_in_its_own_mode_and_the_context_does_for_others():
    # A scan made without a mode compiles its body in C even under FAST_COMPILE.
    loss, outputs, params, inputs = build_problem("softmax_cross_entropy", "tanh", "float64")
    optimizer = SGN(loss, params, outputs, inputs, max_cg_iters=LOOPED, mode=TEST_MODE)
    loops = step_loops(optimizer)
    assert len(loops) == 2  # CG and the line search
    for loop in loops:
        assert loop.op.fn.maker.linker.c_thunks is False  # the Python linker, no gcc
        assert loop.op.allow_gc  # intermediates freed, as in a scan without a mode
    x = pt.vector("x")

    def doubled():
        return scan_on_stand_ins(lambda v: 2 * v, [x], [], 3)[0]

    with loops_compiled_in(TEST_MODE):
        inside = doubled()
    outside = doubled()
    assert inside.owner.inputs[0].owner.op.mode is TEST_MODE  # the trace's loop
    assert outside.owner.inputs[0].owner.op.mode is None
