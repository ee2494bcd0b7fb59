"""Which step of an engine goes wrong: each step's chosen tactic against the portable torch kernel in FP32 on the
engine's own activations (tensorkiln.tactics.check).

    python bench/check_tactics.py MODEL.onnx [--fp16|--bf16] [--opt-level N] [--shapes name:1x3x224x224]
"""
from __future__ import annotations

import argparse

import numpy as np

import tensorkiln as tk
from tensorkiln.builder import BuilderConfig, Target
from tensorkiln.importers.onnx import parse_onnx
from tensorkiln.quant.precision import Precision
from tensorkiln.tactics.check import layerwise_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--opt-level", type=int, default=2)
    parser.add_argument("--shapes", nargs="*", default=[], help="name:1x3x224x224 for dynamic inputs")
    args = parser.parse_args()
    precision = Precision.FP16 if args.fp16 else Precision.BF16 if args.bf16 else Precision.FP32
    shapes = {s.split(":")[0]: tuple(int(d) for d in s.split(":")[1].split("x")) for s in args.shapes}
    engine = tk.Builder(BuilderConfig(target=Target.CUDA, precision=precision, opt_level=args.opt_level)).build(
        parse_onnx(args.model, input_shapes=shapes or None))
    rng = np.random.default_rng(0)
    errors = layerwise_errors(engine, {t.name: rng.standard_normal(t.shape).astype(t.dtype.numpy)
                                       for t in engine.plan.inputs})
    for e in sorted(errors, key=lambda e: -e.error)[:10]:
        print(f"{e.error:.2e}  {e.step}  [{e.tactic}]  output {e.output}")


if __name__ == "__main__":
    main()
