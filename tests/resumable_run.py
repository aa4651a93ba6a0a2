"""A small SGN training run for the checkpoint tests, run as a separate process.

    python resumable_run.py OUTPUT.npz STEPS [--checkpoint PATH] [--interrupt-at N]

Trains a 6-8-3 tanh MLP on synthetic data (three Gaussian blobs) for STEPS steps of
``train`` and saves the final parameters and optimizer state to OUTPUT.npz. With
``--interrupt-at N`` the process sends itself SIGINT (as Ctrl-C would) in the middle of
step N.
"""

import argparse
import os
import signal

import numpy as np
import pytensor.tensor as pt

from sgn_theano import SGN, softmax_cross_entropy
from sgn_theano.models import mlp
from sgn_theano.bench.train import make_evaluator, train


def synthetic_blobs(rows: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, rows).astype(np.int32)
    centres = rng.standard_normal((3, 6)) * 2
    return (centres[labels] + rng.standard_normal((rows, 6))).astype(np.float64), labels


class InterruptedAt:
    """Wraps an optimizer; sends SIGINT to this process during step ``at``."""

    def __init__(self, optimizer, at):
        self.optimizer, self.at, self.calls = optimizer, at, 0

    def step(self, *batch):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.optimizer.step(*batch)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("steps", type=int)
    parser.add_argument("--checkpoint")
    parser.add_argument("--interrupt-at", type=int)
    args = parser.parse_args()
    x, y = pt.matrix("x", dtype="float64"), pt.ivector("y")
    logits, params = mlp(x, [6, 8, 3], activation="tanh", seed=1, dtype="float64")
    loss = softmax_cross_entropy(logits, y)
    optimizer = SGN(loss, params, logits, [x, y], momentum=0.5, warm_start=0.5,
                    mode="FAST_COMPILE")
    runner = InterruptedAt(optimizer, args.interrupt_at) if args.interrupt_at else optimizer
    x_train, y_train = synthetic_blobs(200)
    evaluate = make_evaluator([x, y], logits, loss, *synthetic_blobs(50, seed=1),
                              mode="FAST_COMPILE")
    result = train(runner, evaluate, (x_train, y_train), batch_size=20, max_steps=args.steps,
                   checkpoints=[5, 10, 15], seed=3, progress=False,
                   checkpoint_path=args.checkpoint)
    state = optimizer.state_dict()["state"]
    np.savez(args.output, steps=result.steps, history=[p.step for p in result.history],
             **{f"{role}_{i}": array for role, arrays in state.items()
                for i, array in enumerate(arrays)})


if __name__ == "__main__":
    main()
