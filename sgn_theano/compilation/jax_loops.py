"""Loops that stop early in JAX mode: a ``scan`` with ``until`` as ``jax.lax.while_loop``.

PyTensor 3.0.7's JAX backend refuses a ``scan`` with an ``until`` condition ("While Scan
cannot yet be converted to JAX"), so in JAX mode a CG loop would have to run all its
iterations. :func:`register_while_scans` gives the backend a translation for the loops
whose every output is loop state read only at the end (``trace[-1]``), which is the form
of this library's loops (CG, and the line search): ``jax.lax.while_loop`` over the loop
state, from one iteration on (``scan`` tests its condition after each iteration, so the
body runs at least once) until the condition holds or ``n_steps`` iterations have run.
Each output trace is returned as its final state broadcast to the trace's length, so
``trace[-1]`` is the final state (XLA folds the broadcast away); other elements of the
trace are not the loop's history, which is why loops with sequences, multi-tap states or
outputs that are not fed back are refused with ``NotImplementedError``. Scans without
``until`` go to PyTensor's own translation. Not differentiable through (JAX cannot
reverse-differentiate a while loop), which these loops never are.
"""

from __future__ import annotations

__all__ = ["register_while_scans", "registered"]

_REGISTERED = False


def registered() -> bool:
    """Whether :func:`register_while_scans` has run in this process."""
    return _REGISTERED


def register_while_scans() -> None:
    """Register the translation with PyTensor's JAX backend (idempotent; imports JAX)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from pytensor.link.jax.dispatch import jax_funcify
    from pytensor.link.jax.dispatch.scan import jax_funcify_Scan
    from pytensor.scan.op import Scan

    @jax_funcify.register(Scan)
    def scan_or_while_loop(op, node=None, **kwargs):
        if not op.info.as_while:
            return jax_funcify_Scan(op, node=node, **kwargs)
        return _while_loop(op, **kwargs)

    _REGISTERED = True


def _check_only_loop_state(info) -> None:
    """Refuse a scan with outputs other than loop state read at the end."""
    kinds = {"sequences": info.n_seqs, "multi-tap inputs": info.n_mit_mot,
             "multi-tap states": info.n_mit_sot, "outputs that are not fed back": info.n_nit_sot}
    refused = [kind for kind, count in kinds.items() if count]
    if refused:
        raise NotImplementedError(
            f"A scan with `until` becomes a JAX while loop only when every output is loop "
            f"state read at the end; this one has {', '.join(refused)}.")


def _while_loop(op, **kwargs):
    """The JAX function of a while-``scan`` ``op`` whose outputs are all loop state."""
    import jax
    import jax.numpy as jnp
    from pytensor.compile.mode import JAX, get_mode
    from pytensor.link.jax.dispatch import jax_funcify

    _check_only_loop_state(op.info)
    # The inner graph's own JAX rewrites, as PyTensor's translation of scan does.
    get_mode(op.mode).including("jax").excluding("numba", *JAX._optimizer.exclude
                                                 ).optimizer(op.fgraph)
    inner = jax_funcify(op.fgraph, **kwargs)
    # The carry's dtypes are PyTensor's: a state that came in wider (JAX widens some
    # float32 values to float64) is cast to the dtype the loop body gives back.
    state_dtypes = [output.type.dtype for output in op.inner_sitsot_outs(op.fgraph.outputs)]
    untraced_dtypes = [output.type.dtype
                       for output in op.inner_untraced_sit_sot_outs(op.fgraph.outputs)]

    def while_loop(*outer_inputs):
        outer_inputs = list(outer_inputs)
        n_steps = outer_inputs[0]
        buffers = op.outer_sitsot(outer_inputs)
        untraced = list(op.outer_untraced_sit_sot(outer_inputs))
        non_sequences = list(op.outer_non_seqs(outer_inputs))

        def body(carry):
            count, states, untraced_states, _ = carry
            outputs = list(inner(*states, *untraced_states, *non_sequences))
            return (count + 1, list(op.inner_sitsot_outs(outputs)),
                    list(op.inner_untraced_sit_sot_outs(outputs)),
                    jnp.asarray(outputs[-1], dtype=bool))

        def keep_going(carry):
            count, _, _, stop = carry
            return (count < n_steps) & jnp.logical_not(stop)

        start = (jnp.asarray(0, dtype=jnp.asarray(n_steps).dtype),
                 [buffer[0].astype(dtype) for buffer, dtype in zip(buffers, state_dtypes)],
                 [jnp.asarray(state, dtype=dtype)
                  for state, dtype in zip(untraced, untraced_dtypes)], jnp.asarray(False))
        _, states, untraced_states, _ = jax.lax.while_loop(keep_going, body, start)
        outputs = [jnp.broadcast_to(state, buffer.shape)
                   for state, buffer in zip(states, buffers)] + list(untraced_states)
        return outputs[0] if len(outputs) == 1 else outputs

    return while_loop
