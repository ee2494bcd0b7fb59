"""Freed activation memory kept for the next CPU run (runtime/cpu_memory.py): without it, blocks of a few
megabytes go back to the kernel and every run faults their pages in again."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

import tensorkiln as tk

# three 20 MB activations alive at once, freed, allocated again: the minor page faults of the later rounds
_PROBE = textwrap.dedent("""
    import resource, sys
    import torch
    if sys.argv[1] == "retain":
        from tensorkiln.runtime.cpu_memory import retain_freed_memory
        assert retain_freed_memory()

    def run():
        blocks = [torch.empty(5_000_000).fill_(1.0) for _ in range(3)]
        del blocks

    for _ in range(3):  # the heap settles: a small allocation between the blocks can make it grow once more
        run()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        run()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
""")


def _faults_per_round(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def test_retained_memory_is_not_faulted_in_again():
    default, retained = _faults_per_round("default"), _faults_per_round("retain")
    assert default > 2_000  # glibc's defaults: at least one 20 MB block mapped afresh a round (4,883 pages)
    assert retained < 100


def test_a_cpu_context_retains_freed_memory():
    network = tk.NetworkDefinition()
    x = network.add_input("x", tk.DataType.FLOAT, (1, 8, 64, 64))
    network.mark_output(network.add_activation(x, tk.ActivationType.RELU).get_output(0))
    context = tk.Builder().build(network).create_execution_context()
    assert context._static is not None and context._static.retains_memory
    value = torch.randn(1, 8, 64, 64)
    (result,) = context.execute({"x": value.numpy()}).values()
    assert torch.equal(torch.from_numpy(result), value.relu())
