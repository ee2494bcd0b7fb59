"""`kiln --version` and `kiln --help` answer without importing torch (nor any subcommand's module), in well under
half a second; each subcommand's help line in `kiln --help` is the one its module gives."""
import argparse
import importlib
import json
import subprocess
import sys
import time

import pytest

from tensorkiln.cli.main import SUBCOMMANDS, main, make_parser

_PROBE = """
import json, sys, time
start = time.perf_counter()
from tensorkiln.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - start,
                  "heavy": sorted(m for m in ("torch", "numpy", "rich", "onnx") if m in sys.modules),
                  "subcommands": sorted(m for m in sys.modules if m.startswith("tensorkiln.cli.")
                                        and m != "tensorkiln.cli.main")}))
"""


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_no_heavy_module(flag):
    result = subprocess.run([sys.executable, "-c", _PROBE, flag], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["heavy"] == [], report  # torch alone takes 1.5-3 s to import
    assert report["subcommands"] == [], report


def _best_of_3(command: list[str]) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def test_version_answers_in_under_half_a_second():
    # the whole process, as a user counts it; best of 3. On a loaded machine (CI, other jobs) every process is slower:
    # there the bound is a quarter of what a process that imports torch takes (as kiln did before), measured alongside
    version = _best_of_3([sys.executable, "-m", "tensorkiln.cli.main", "--version"])
    if version > 0.5:
        with_torch = _best_of_3([sys.executable, "-c", "import torch"])
        assert version <= 0.25 * with_torch, (version, with_torch)


def test_help_lines_match_the_subcommand_modules():
    full = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    lazy = next(a for a in make_parser(())._actions if isinstance(a, argparse._SubParsersAction))
    by_name = lambda action: {choice.dest: choice.help for choice in action._choices_actions}  # noqa: E731
    assert by_name(full) == by_name(lazy) == {command.name: command.help for command in SUBCOMMANDS}
    for command in SUBCOMMANDS:
        assert hasattr(importlib.import_module(command.module), "main"), command


def test_a_subcommand_still_parses_its_own_flags(capsys):
    # only the named subcommand's module is loaded, and its flags (and --plugins) work as before
    assert main(["inspect", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: kiln inspect" in out and "--plugins" in out and "--layers" in out
    assert main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err
