"""Errors raised by tensorkiln. Each message states the cause and, where there is one, the fix."""


class TensorkilnError(Exception):
    """Base class of every error tensorkiln raises on purpose."""


class ModelFormatError(TensorkilnError):
    """The model file could not be read (truncated, malformed, not a model)."""


class UnsupportedOpError(TensorkilnError):
    """One or more operators of the model have no converter."""


class ShapeError(TensorkilnError):
    """Shapes or dtypes do not agree (in the network, or at an engine's inputs)."""


class BuildError(TensorkilnError):
    """The builder could not turn the network into an engine."""


class EngineFormatError(TensorkilnError):
    """An engine file is truncated, corrupted, foreign, or from an incompatible version."""


class InputError(TensorkilnError):
    """The inputs given to an execution context do not match the engine's inputs."""


class ResourceLimitError(TensorkilnError):
    """A tensor (or several together) would need more memory than the budget allows (tensorkiln.limits); raised
    before anything is allocated, at import, build or run time."""


class RefitError(BuildError):
    """New weights cannot go into an engine as they are (unknown name, other shape or dtype), or they would make a
    different engine (another structure, another tactic) that only a rebuild can give."""
