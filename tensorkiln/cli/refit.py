"""`kiln refit`: new weights into an engine without rebuilding it (TensorRT's refit; tools/refit.py does the work).

    kiln refit model.engine --weights retrained.onnx -o retrained.engine
    kiln refit model.engine --weights new_weights.npz --model model.onnx -o retrained.engine
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .inputs import CommandLineError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "refit", help="put new weights into an engine without timing its tactics again",
        description="Refit an engine with new weights: from a whole ONNX model of the same network (re-exported "
                    "after training), or from an .npz of named model weights over the model the engine was built "
                    "from. Folded and fused weights are recomputed from the new ones; the engine keeps its "
                    "tactics. New weights that would change the engine's structure are refused (rebuild then).")
    parser.add_argument("engine", metavar="ENGINE", help="the engine file (made by `kiln build`)")
    parser.add_argument("--weights", metavar="NEW.onnx|NEW.npz",
                        help="the new weights: an ONNX model of the same network, or an .npz of model weights by "
                             "name (see --list) with --model")
    parser.add_argument("--model", metavar="MODEL.onnx",
                        help="with --weights NEW.npz: the ONNX model the engine was built from")
    parser.add_argument("-o", "--output", metavar="OUT.engine",
                        help="where to write the refit engine (required, as --weights is, unless --list)")
    parser.add_argument("--list", action="store_true",
                        help="list the engine's refittable weights (name, dtype, shape) and exit")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from ..runtime import Runtime
    from ..tools.refit import Refitter, refit_onnx
    from .display import key_value_table, make_console

    console = make_console()
    engine = Runtime().load(args.engine)
    refitter = Refitter(engine)
    if args.list:
        for name, spec in refitter.refittable_weights().items():
            console.print(f"{name}  {spec.dtype.value} {list(spec.shape)}", highlight=False)
        return 0
    if not args.weights or not args.output:
        raise CommandLineError("give the new weights and the refit engine's path: --weights NEW.onnx|NEW.npz "
                               "-o OUT.engine (or --list to see the refittable weights)")
    weights_path = Path(args.weights)
    if not weights_path.is_file():
        raise CommandLineError(f"--weights {args.weights}: no such file")
    start = time.perf_counter()
    if weights_path.suffix.lower() == ".npz":
        if not args.model:
            raise CommandLineError("--weights NEW.npz holds weights only: give the model the engine was built from "
                                   "with --model MODEL.onnx")
        with np.load(weights_path, allow_pickle=False) as archive:
            weights = {name: archive[name] for name in archive.files}
        refit = refit_onnx(engine, Path(args.model), weights)
        changed = sorted(weights)
    else:
        if args.model:
            raise CommandLineError("--model goes with --weights NEW.npz; an ONNX --weights is the whole model")
        refit = refit_onnx(engine, weights_path)
        changed = sorted(refitter.refittable_weights())
    seconds = time.perf_counter() - start
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    refit.save(output)
    engine_weights = {w for name in changed for w in refitter.engine_weights_of(name)}
    console.print(key_value_table("refit", [
        ("engine", f"{args.engine} -> {output}"), ("weights", str(weights_path)),
        ("model weights set", f"{len(changed)} of {len(refitter.refittable_weights())} refittable"),
        ("engine weights recomputed", f"{len(engine_weights)} of {len(refit.plan.weights)}"),
        ("tactics", f"kept ({len(refit.plan.steps)} steps, none timed)"), ("refit time", f"{seconds:.3f} s"),
    ]))
    return 0
