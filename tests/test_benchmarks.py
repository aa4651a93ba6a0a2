"""The micro-benchmarks run end to end (tiny sizes, no timing asserted)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The figures the step benchmark is asked for: one of each kind (fewer SGN builds).
FIGURES = ("gradient", "G v", "3 G v", "SGD step", "Adam step", "SGN k=3 (fixed)",
           "SGN k=10 (line search + trust region, curvature_fraction=0.1)")


@pytest.mark.slow
def test_bench_steps_writes_every_figure_it_is_asked_for(tmp_path):
    output = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_steps.py"), "--models", "a",
         "--batch-size", "20", "--rounds", "1", "--calls", "1", "--modes", "FAST_COMPILE",
         "--figures", *FIGURES, "--output", str(output)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(output.read_text())["modes"]["FAST_COMPILE"]["a"]
    assert set(report["median_s"]) == set(FIGURES) == set(report["compile_s"])
    assert report["ratio_to_gradient"]["gradient"] == 1.0
    iterations = report["mean_cg_iterations"]
    assert set(iterations) == {name for name in FIGURES if name.startswith("SGN")}
    limits = {"k=3": 3, "k=10": 10}
    assert all(0 < count <= limits[name.split()[1]] for name, count in iterations.items())
    assert set(report["peak_bytes"]) == set(report["median_s"])
    assert report["peak_bytes"]["gradient"] > 0
    assert "G v" in completed.stdout


@pytest.mark.slow
def test_bench_compile_pairs_every_hand_written_loss_with_the_librarys(tmp_path):
    output = tmp_path / "compile.json"
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_compile.py"), "--quick",
         "--depths", "1", "--no-lenet", "--modes", "FAST_COMPILE", "--repeats", "1",
         "--output", str(output)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    rows = json.loads(output.read_text())["modes"]["FAST_COMPILE"]
    assert [row["case"] for row in rows] == ["MLP 1x20 tanh, softmax cross-entropy",
                                             "MLP 1x20 relu h*(h>0), softmax cross-entropy"]
    for row in rows:
        assert row["hand_s"] == row["hand"]["construct_s"] + row["hand"]["first_call_s"]
        assert row["hand_over_library"] == row["hand_s"] / row["library_s"] > 0
        for loss in ("library", "hand"):
            figures = row[loss]
            assert figures["over_gradient"] == figures["build_s"] / figures["gradient_build_s"]
    assert "hand/lib" in completed.stdout and "lib/grad" in completed.stdout


@pytest.mark.slow
def test_bench_compile_builds_the_scan_rnn(tmp_path):
    output = tmp_path / "compile.json"
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_compile.py"), "--rnn",
         "--no-mlp", "--no-lenet", "--modes", "FAST_COMPILE", "--repeats", "1",
         "--output", str(output)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    rows = json.loads(output.read_text())["modes"]["FAST_COMPILE"]
    assert [(row["case"], row["build"]) for row in rows] == [
        ("RNN 28-128-10 tanh, softmax cross-entropy", build)
        for build in ("SGN k=1", "SGN k=3", "SGN k=50", "SGN defaults")]
    assert all(row["library_s"] > 0 and row["hand_s"] > 0 for row in rows)
