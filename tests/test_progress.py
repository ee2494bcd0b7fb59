"""Progress bars on tactic timing and INT8 calibration: drawn (rich) where stderr is a terminal, nothing otherwise."""
import io
import sys

import numpy as np
import pytest
from rich.console import Console

import tensorkiln as tk
import tensorkiln.progress as progress
from tensorkiln.progress import progress_bar
from tensorkiln.quant.calibrator import DataCalibrator
from tensorkiln.quant.int8 import Int8Options


def test_a_bar_is_drawn_on_a_terminal_console():
    buffer = io.StringIO()
    with progress_bar("timing tactics of 3 layers", 3, console=Console(force_terminal=True, file=buffer)) as advance:
        for _ in range(3):
            advance()
    drawn = buffer.getvalue()
    assert "timing tactics of 3 layers" in drawn and "\x1b[" in drawn  # text and terminal control sequences


def test_nothing_is_drawn_where_stderr_is_no_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a log file: no isatty
    with progress_bar("calibrating", 2) as advance:
        advance()
        advance()
    assert sys.stderr.getvalue() == ""


def test_disabled_bar_draws_nothing_even_on_a_terminal():
    buffer = io.StringIO()
    with progress_bar("idle", 0, enabled=False, console=Console(force_terminal=True, file=buffer)) as advance:
        advance()
    assert buffer.getvalue() == ""


def _int8_build(batches: int = 3):
    network = tk.NetworkDefinition("calibrated")
    x = network.add_input("x", tk.DataType.FLOAT, (2, 8))
    rng = np.random.default_rng(0)
    weights = network.add_constant((8, 4), rng.standard_normal((8, 4)).astype(np.float32)).get_output(0)
    network.mark_output(network.add_matrix_multiply(x, weights).get_output(0))
    data = [rng.standard_normal((2, 8)).astype(np.float32) for _ in range(batches)]
    calibrator = DataCalibrator(data, "minmax", progress=True)  # as kiln build makes it
    tk.Builder(tk.BuilderConfig(precision=tk.Precision.INT8, int8=Int8Options(calibrator))).build(network)


@pytest.mark.parametrize("terminal", [False, True])
def test_calibration_shows_its_bar_only_on_a_terminal(terminal, monkeypatch, capsys):
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: terminal)
    _int8_build()
    err = capsys.readouterr().err
    assert ("calibrating" in err) is terminal, err
    assert ("\x1b[" in err) is terminal


@pytest.mark.gpu
def test_tactic_timing_shows_its_bar_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    network = tk.NetworkDefinition("timed")
    x = network.add_input("x", tk.DataType.FLOAT, (64, 128))
    weights = network.add_constant((128, 64), np.ones((128, 64), np.float32)).get_output(0)
    network.mark_output(network.add_matrix_multiply(x, weights).get_output(0))
    tk.Builder(tk.BuilderConfig(target=tk.Target.CUDA, precision=tk.Precision.FP16)).build(network)
    assert "timing tactics of 1 layers" in capsys.readouterr().err
