"""Threads on a shared machine: idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE set by `import tensorkiln` before
torch loads, unless the user chose), and every kiln command that runs kernels takes --threads."""
import os
import subprocess
import sys

import pytest

from tensorkiln.cli.main import THREADS_SUBCOMMANDS, main, make_parser

CHECK = ("import os, tensorkiln, torch; "
         "print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads())")


def _child(env_changes: dict[str, str | None]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    return subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True,
                          check=True).stdout.split()[0]


def test_import_asks_openmp_threads_to_sleep():
    assert _child({}) == "PASSIVE"


def test_the_users_own_policy_wins():
    assert _child({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
    assert _child({"GOMP_SPINCOUNT": "1000"}) == "None"


@pytest.mark.parametrize("command", [*THREADS_SUBCOMMANDS, "bench"])
def test_every_command_that_runs_kernels_takes_threads(command):
    parser = make_parser([command])
    assert "--threads" in parser._subparsers._group_actions[0].choices[command].format_help()


def test_threads_is_applied(tmp_path, monkeypatch):
    import torch

    saved = torch.get_num_threads()
    try:
        # `kiln run` on a missing engine fails after the thread count is set
        assert main(["run", str(tmp_path / "missing.engine"), "--threads", "1"]) == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(saved)
