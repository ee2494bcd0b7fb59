"""Runtime: turns engine files (or bytes) into Engines."""
from __future__ import annotations

from pathlib import Path

from ..errors import EngineFormatError
from ..plan.file_format import deserialize
from .engine import Engine


class Runtime:
    def deserialize(self, blob: bytes, source: str = "engine") -> Engine:
        """The engine of an engine file's bytes: an Engine, or a ProfiledEngine for an engine built with
        optimization profiles (format version 2)."""
        from ..plan.profile_file import deserialize_profiled, is_profiled

        if is_profiled(blob, source):
            return deserialize_profiled(blob, source)
        plan, weights = deserialize(blob, source)
        from ..plugins import check_plugins  # an engine naming an unregistered plugin fails here, not mid-run

        check_plugins(plan.steps)
        return Engine(plan, weights)

    deserialize_cuda_engine = deserialize  # the TensorRT spelling

    def load(self, path: str | Path) -> Engine:
        path = Path(path)
        if not path.is_file():
            raise EngineFormatError(f"engine file {str(path)!r} does not exist")
        return self.deserialize(path.read_bytes(), source=f"engine file {str(path)!r}")
