"""ONNX backend conformance: onnx's generated node test cases run against tensorkiln."""
from .runner import CaseResult, main, run_suite, summarize

__all__ = ["CaseResult", "main", "run_suite", "summarize"]
