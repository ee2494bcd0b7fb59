"""Runtime, Engine and ExecutionContext: the execution phase."""
from .context import ExecutionContext
from .engine import Engine, TensorIOMode
from .runtime import Runtime

__all__ = ["Runtime", "Engine", "ExecutionContext", "TensorIOMode"]
