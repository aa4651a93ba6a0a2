"""The gradient of a CNN in PyTorch, timed: the reference ``bench_steps.py`` compares our
convolutions with (run by a python that has torch, e.g. ``.venv-yardsticks``).

The network is given the way :func:`sgn_theano.models.cnn` takes it, as JSON: the
image shape ``(H, W, C)`` and the layers ``["conv", F, k, stride, padding]``,
``["pool", s]``, ``["dense", n]``; every layer but the last is followed by a relu. The
loss is the mean softmax cross-entropy of a random float32 batch, the gradient one
``backward`` (``torch.nn`` convolutions, channels first as PyTorch prefers). Prints one
JSON line: ``{"median_ms": {"grad": ...}, "threads": ...}``.

    python torch_cnn.py --input-shape '[28, 28, 1]' --layers '[["conv", 6, 5, 1, 2], ...]'
"""

from __future__ import annotations

import argparse
import json
import os
import time

# Passive waiting, as ../shared/yardsticks does: spinning OpenMP threads collapse a
# 2-thread torch on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def network(input_shape, layers) -> torch.nn.Sequential:
    """The CNN of ``sgn_theano.models.cnn(x, input_shape, layers)``, in ``torch.nn``."""
    height, width, channels = input_shape
    modules, flat = [], None
    for index, (kind, *arguments) in enumerate(layers, start=1):
        if kind == "pool":
            modules.append(torch.nn.MaxPool2d(arguments[0]))
            height, width = height // arguments[0], width // arguments[0]
            continue
        if kind == "conv":
            filters, kernel, stride, padding = (*arguments, 1, 0)[:4]
            modules.append(torch.nn.Conv2d(channels, filters, kernel, stride, padding))
            height = (height + 2 * padding - kernel) // stride + 1
            width = (width + 2 * padding - kernel) // stride + 1
            channels = filters
        else:
            if flat is None:
                flat = height * width * channels
                modules.append(torch.nn.Flatten())
            modules.append(torch.nn.Linear(flat, arguments[0]))
            flat = arguments[0]
        if index < len(layers):
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-shape", type=json.loads, required=True)
    parser.add_argument("--layers", type=json.loads, required=True)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = network(args.input_shape, args.layers)
    height, width, channels = args.input_shape
    images = torch.rand(args.batch_size, channels, height, width)
    labels = torch.randint(0, args.layers[-1][1], (args.batch_size,))

    def gradient():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()

    for _ in range(2):
        gradient()
    times = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        gradient()
        times.append(time.perf_counter() - started)
    print(json.dumps({"median_ms": {"grad": float(np.median(times)) * 1e3},
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
