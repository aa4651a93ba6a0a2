"""The training loop, the evaluator, the command line and the example, on tiny data."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytensor.tensor as pt
import pytest
from conftest import TEST_MODE
from idx_files import write_mnist_like

from sgn_theano import softmax_cross_entropy
from sgn_theano.cli import main, parse_optimizer
from sgn_theano.train import make_evaluator, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_evaluate():
    return {"test_loss": 1.0, "test_accuracy": 0.5}


def test_step_budget_and_checkpoints():
    data = (np.zeros((10, 2)), np.zeros(10))
    losses = iter(np.linspace(1.0, 0.1, 100))
    result = train(lambda x, y: next(losses), fake_evaluate, data, batch_size=5, max_steps=6,
                   checkpoints=[2, 4], progress=False)
    assert result.steps == 6 and not result.diverged
    assert [point.step for point in result.history] == [0, 2, 4, 6]
    assert [point.epoch for point in result.history] == [0.0, 1.0, 2.0, 3.0]
    assert math.isnan(result.history[0].train_loss)
    assert result.history[1].train_loss == pytest.approx(np.mean(np.linspace(1, 0.1, 100)[:2]))


def test_epoch_budget():
    result = train(lambda x: 0.5, fake_evaluate, (np.zeros(10),), batch_size=3, max_epochs=2,
                   progress=False)
    assert result.steps == 6 and result.history[-1].epoch == 2.0


def test_divergence_stops_training():
    values = iter([1.0, 2.0, float("nan"), 1.0])
    result = train(lambda x: next(values), fake_evaluate, (np.zeros(4),), batch_size=1,
                   max_steps=10, progress=False)
    assert result.diverged and result.steps == 3


def test_budget_arguments():
    with pytest.raises(ValueError, match="exactly one of"):
        train(lambda x: 0.0, fake_evaluate, (np.zeros(4),), batch_size=1, progress=False)


def test_evaluator_weights_chunks():
    x, y = pt.matrix("x"), pt.ivector("y")
    logits = pt.concatenate([x, -x], axis=1)
    evaluate = make_evaluator([x, y], logits, softmax_cross_entropy(logits, y),
                              np.array([[1.0], [-1.0], [2.0]]), np.array([0, 0, 1], np.int32),
                              mode=TEST_MODE, chunk_size=2)
    assert evaluate()["test_accuracy"] == pytest.approx(1 / 3)


def test_parse_optimizer():
    assert parse_optimizer("sgn:5") == ("sgn", 5.0)
    assert parse_optimizer("adam") == ("adam", 1e-3)
    for bad in ("sgn:2.5", "lbfgs", "sgd:-1", "sgd:abc"):
        with pytest.raises(Exception, match="sgn|optimizer|number|positive"):
            parse_optimizer(bad)


def test_cli_runs_all_optimizers_and_writes_json(tmp_path, capsys):
    data_dir = write_mnist_like(str(tmp_path / "mnist"), train=300, test=100)
    output = tmp_path / "out.json"
    code = main(["--task", "mnist", "--data-dir", data_dir, "--sizes", "784-16-10",
                 "--batch-size", "100", "--time-budget", "1", "--checkpoints", "0.5",
                 "--mode", "FAST_COMPILE", "--output", str(output), "--no-progress"])
    assert code == 0
    table = capsys.readouterr().out
    for name in ("SGN k=3", "SGD lr=0.1", "ADAM lr=0.001", "acc@0.5s", "acc@1s"):
        assert name in table
    record = json.loads(output.read_text())
    assert [run["name"] for run in record["runs"]] == ["SGN k=3", "SGD lr=0.1", "ADAM lr=0.001"]
    assert all(run["steps"] > 0 and len(run["history"]) >= 2 for run in record["runs"])


def test_cli_reports_missing_data(tmp_path, capsys):
    assert main(["--task", "mnist", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err


def test_example_script_runs_and_learns(tmp_path):
    data_dir = write_mnist_like(str(tmp_path / "fm"), train=400, test=200)
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "fashion_mnist_sgn.py"), "--data-dir",
         data_dir, "--steps", "20", "--batch-size", "100", "--mode", "FAST_COMPILE"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    accuracy = float(completed.stdout.strip().splitlines()[-1].split()[-1])
    assert accuracy > 0.9  # ten linearly separable classes: chance is 0.1
