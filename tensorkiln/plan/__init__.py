"""The engine file: the Plan (what to run), and its on-disk format (write, read, validate)."""
from .plan import Plan, Step, TensorSpec

__all__ = ["Plan", "Step", "TensorSpec"]
