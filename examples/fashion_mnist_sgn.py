"""SGN inside a plain PyTensor training script: a 784-128-10 MLP on Fashion-MNIST.

    python examples/fashion_mnist_sgn.py [--data-dir DIR] [--steps 60]
"""

import argparse

import numpy as np
import pytensor
import pytensor.tensor as pt

from sgn_theano import SGN, softmax_cross_entropy
from sgn_theano.data import FASHION_MNIST_DIR, load_fashion_mnist, minibatches
from sgn_theano.models import mlp
from sgn_theano.compilation.modes import compile_mode

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default=FASHION_MNIST_DIR)
parser.add_argument("--steps", type=int, default=60)
parser.add_argument("--batch-size", type=int, default=1000)
parser.add_argument("--mode", default=None, help="C, NUMBA, JAX, FAST_COMPILE...")
args = parser.parse_args()
mode = compile_mode(args.mode)

x_train, y_train, x_test, y_test = load_fashion_mnist(args.data_dir)
x, y = pt.matrix("x", dtype="float32"), pt.ivector("y")
logits, params = mlp(x, [784, 128, 10], activation="relu")
loss = softmax_cross_entropy(logits, y)

optimizer = SGN(loss, params, logits, [x, y], mode=mode)  # the defaults: K-FAC, see SGNConfig
batches = minibatches((x_train, y_train), args.batch_size)
for step in range(1, args.steps + 1):
    xb, yb = next(batches)
    info = optimizer.step(xb, yb)
    if step % 10 == 0 or step == args.steps:
        print(f"step {step:3d}  loss {info.loss:.4f}  damping {info.damping:.1e}  "
              f"step size {info.step_size:g}")

predict = pytensor.function([x], pt.argmax(logits, axis=1), mode=mode)
accuracy = float(np.mean(predict(x_test) == y_test))
print(f"test accuracy {accuracy:.4f}")
