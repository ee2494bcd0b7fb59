"""Engine files of real GPU builds through the plan validator (issue 18), on the device:

for each workload (torchvision ResNet-50 and MobileNetV2, a BERT-base encoder; random weights), build an FP16 CUDA
engine from its ONNX export, write it, load it back (every field validated, the tactics' predicates asked on the
device), and check that
  - the loaded engine gives bit-for-bit the outputs of the built one;
  - loading takes little time (the validator's cost, median of a few loads);
  - NaN and Inf in the input reach the output as they do in PyTorch eager (the reference): the count of NaN outputs
    and of non-finite outputs for an input with one NaN pixel, and for an all-NaN input.
Results go to $OUT/roundtrip.json as each workload ends.

    PYTHONPATH=. python bench/engine_roundtrip.py --out $OUT
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tensorkiln as tk  # noqa: E402
from models import make_model, randomize_batchnorm  # noqa: E402
from tensorkiln import BuilderConfig, Precision, Target, parse_onnx  # noqa: E402

WORKLOADS = {"resnet50": 8, "mobilenet_v2": 8, "bert_base": 2}


def inputs_for(name: str, batch: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    if name == "bert_base":
        mask = torch.ones(batch, 128)
        mask[:, 100:] = 0
        return {"hidden": torch.randn(batch, 128, 768, generator=generator), "mask": mask}
    return {"x": torch.randn(batch, 3, 224, 224, generator=generator)}


def nan_counts(outputs: torch.Tensor) -> dict[str, int]:
    return {"nan": int(torch.isnan(outputs).sum()), "non_finite": int((~torch.isfinite(outputs)).sum())}


def run_workload(name: str, batch: int, folder: str) -> dict:
    model = make_model(name).eval()
    randomize_batchnorm(model)
    inputs = inputs_for(name, batch)
    onnx_path = os.path.join(folder, f"{name}.onnx")
    torch.onnx.export(model, tuple(inputs.values()), onnx_path, input_names=list(inputs), output_names=["output"],
                      opset_version=17, dynamo=False)
    config = BuilderConfig(target=Target.CUDA, precision=Precision.FP16, opt_level=1,
                           timing_cache=os.path.join(folder, "timing.cache"))
    start = time.perf_counter()
    engine = tk.Builder(config).build(parse_onnx(onnx_path))
    result = {"build_s": round(time.perf_counter() - start, 2), "steps": engine.num_layers}
    blob = engine.serialize()
    result["engine_mb"] = round(len(blob) / 2**20, 2)
    loads = []
    for _ in range(5):
        start = time.perf_counter()
        loaded = tk.Runtime().deserialize(blob)
        loads.append(time.perf_counter() - start)
    result["load_ms_median"] = round(statistics.median(loads) * 1e3, 2)
    device_inputs = {k: v.cuda() for k, v in inputs.items()}
    built_out = engine.create_execution_context(cuda_graph=False).execute(dict(device_inputs))["output"]
    loaded_out = loaded.create_execution_context(cuda_graph=False).execute(dict(device_inputs))["output"]
    result["loaded_bit_identical"] = bool(torch.equal(torch.as_tensor(built_out), torch.as_tensor(loaded_out)))
    with torch.no_grad():
        reference = model.cuda()(*device_inputs.values()).float()
    got = torch.as_tensor(loaded_out).float().cuda()
    result["max_rel_error_vs_eager"] = float((got - reference).abs().max() / reference.abs().max())
    # NaN / Inf propagation against eager PyTorch (FP32), on the loaded engine
    first = next(iter(inputs))
    context = loaded.create_execution_context(cuda_graph=False)
    for label, poison in (("one_nan", "one"), ("all_nan", "all"), ("one_inf", "inf")):
        poisoned = {k: v.clone() for k, v in device_inputs.items()}
        if poison == "one":
            poisoned[first].view(-1)[poisoned[first].numel() // 3] = float("nan")
        elif poison == "all":
            poisoned[first].fill_(float("nan"))
        else:
            poisoned[first].view(-1)[poisoned[first].numel() // 3] = float("inf")
        with torch.no_grad():
            expected = model(*poisoned.values()).float()
        actual = torch.as_tensor(context.execute(dict(poisoned))["output"]).float().cuda()
        result[label] = {"eager": nan_counts(expected), "tensorkiln": nan_counts(actual)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--workloads", default=",".join(f"{k}:{v}" for k, v in WORKLOADS.items()))
    args = parser.parse_args()
    results = {"device": torch.cuda.get_device_name()}
    with tempfile.TemporaryDirectory() as folder:
        for item in args.workloads.split(","):
            name, batch = item.split(":")
            try:
                results[f"{name}_b{batch}"] = run_workload(name, int(batch), folder)
            except Exception as error:  # one workload's failure is a result; the others still run
                results[f"{name}_b{batch}"] = {"error": f"{type(error).__name__}: {error}"[:2000]}
            print(name, json.dumps(results[f"{name}_b{batch}"]), flush=True)
            with open(os.path.join(args.out, "roundtrip.json"), "w") as file:
                json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
