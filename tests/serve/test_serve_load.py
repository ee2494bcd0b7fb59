"""The load test of bench/serve_load.py, small: 600 requests through tritonclient's async HTTP and gRPC clients at
concurrency 1, 8 and 64, with malformed requests, disconnects and an unload midway. Each valid request is counted
once by its id: 0 lost, 0 duplicated, 0 wrong, 0 server errors, nothing left pending. (The full run, 20,000
requests at concurrency 1..256: `python3 bench/serve_load.py`.)"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench/serve_load.py"


def _serve_load():
    spec = importlib.util.spec_from_file_location("serve_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_load_with_injected_faults(server):
    summary = _serve_load().run_load(server.http_url, server.grpc_url, 600, [1, 8, 64])
    print({key: summary[key] for key in ("valid", "lost", "duplicated", "wrong", "server_errors", "malformed",
                                         "disconnects", "retried_after_503", "unloads")})
    assert summary["valid"] == 528 and summary["malformed"] == 48 and summary["disconnects"] == 24
    assert summary["unloads"] == 1 and summary["retried_after_503"] > 0  # the unload happened under load
    assert (summary["lost"], summary["duplicated"], summary["wrong"], summary["server_errors"]) == (0, 0, 0, 0), \
        summary["examples"]
    assert sum(summary["malformed_refused"].values()) == summary["malformed"]
    assert summary["server_pending"] == 0
