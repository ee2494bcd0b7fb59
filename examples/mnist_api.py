"""LeNet on MNIST, built layer by layer with the network API from the weights of a trained Caffe model.

The network is written out by hand (as TensorRT's classic `sampleMNISTAPI` does) instead of being imported:
the caffemodel only supplies the weights, read with tensorkiln.importers.caffe.caffemodel. The engine is
built, serialized, reloaded, and run over 5000 MNIST test digits; the script prints the top-1 accuracy
(the reference Caffe runtime, OpenCV's DNN module, gets 99.78%).

    python3 examples/mnist_api.py [--model-dir DIR] [--dataset FILE.csv.gz] [--batch-size N]

The defaults are in the shared folder next to the repository (`<repo>/../shared`, or $TENSORKILN_SHARED).
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

import tensorkiln as tk  # noqa: E402
from tensorkiln.importers.caffe import caffemodel  # noqa: E402

SHARED = Path(os.environ.get("TENSORKILN_SHARED", REPO / ".." / "shared")).resolve()
DEFAULT_MODEL_DIR = SHARED / "models" / "caffe" / "lenet_mnist"
DEFAULT_DATASET = SHARED / "datasets" / "mnist_5k" / "mnist_5k.csv.gz"
CAFFEMODEL = "lenet_iter_10000.caffemodel"
INPUT_NAME = "data"
IMAGE_SHAPE = (1, 28, 28)
# The training net's data layer scaled pixels 0..255 by 1/256 (transform_param.scale, kept in the caffemodel);
# the deploy net expects inputs scaled the same way. Used when the caffemodel does not say.
DEFAULT_INPUT_SCALE = 0.00390625


# ---- the network ----------------------------------------------------------------------------------------------
def load_lenet_weights(model_dir: Path) -> tuple[dict[str, list[np.ndarray]], float]:
    """The trained blobs of every LeNet layer, and the input scale the model was trained with."""
    net = caffemodel.read_caffemodel(Path(model_dir) / CAFFEMODEL)
    scale = DEFAULT_INPUT_SCALE
    for layer in caffemodel.iter_layers(net):
        if caffemodel.layer_type_name(layer).endswith("Data") and layer.transform_param.HasField("scale"):
            scale = layer.transform_param.scale
    return caffemodel.layer_blobs(net), scale


def build_lenet(weights: dict[str, list[np.ndarray]], batch_size: int) -> tk.NetworkDefinition:
    """LeNet as lenet.prototxt defines it; Caffe stores biases as (1, 1, 1, n) blobs in V1 models."""
    network = tk.NetworkDefinition("lenet")
    data = network.add_input(INPUT_NAME, tk.DataType.FLOAT, (batch_size, *IMAGE_SHAPE))

    def convolution(x, name: str, maps: int, kernel: int):
        kernel_weights, bias = weights[name]
        return network.add_convolution(x, maps, (kernel, kernel), kernel_weights, bias.reshape(-1), stride=1,
                                       name=name).get_output(0)

    def max_pool(x, name: str):
        # Caffe rounds pooled sizes up: ceil mode (the same sizes here, 24 -> 12 and 8 -> 4)
        return network.add_pooling(x, tk.PoolingType.MAX, (2, 2), stride=2, ceil_mode=True, name=name).get_output(0)

    def inner_product(x, name: str, outputs: int):
        kernel_weights, bias = weights[name]
        return network.add_fully_connected(x, outputs, kernel_weights, bias.reshape(-1), axis=1,
                                           name=name).get_output(0)

    x = convolution(data, "conv1", 20, 5)  # 1x28x28 -> 20x24x24
    x = max_pool(x, "pool1")  # -> 20x12x12
    x = convolution(x, "conv2", 50, 5)  # -> 50x8x8
    x = max_pool(x, "pool2")  # -> 50x4x4
    x = inner_product(x, "ip1", 500)  # flattens 50x4x4 = 800 in Caffe's (C, H, W) order
    x = network.add_activation(x, tk.ActivationType.RELU, name="relu1").get_output(0)
    x = inner_product(x, "ip2", 10)
    prob = network.add_softmax(x, axis=1, name="prob").get_output(0)
    network.mark_output(prob)
    return network


def build_engine(model_dir: Path, batch_size: int) -> tuple[tk.Engine, float]:
    """Build LeNet for `batch_size`, then serialize and reload the engine as a deployment would."""
    weights, input_scale = load_lenet_weights(model_dir)
    engine = tk.Builder().build(build_lenet(weights, batch_size))
    return tk.Runtime().deserialize(engine.serialize()), input_scale


# ---- data and evaluation --------------------------------------------------------------------------------------
def load_mnist(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 1, 28, 28), 0..255 as float32, and labels (N,): one CSV row per digit, label last."""
    with gzip.open(path) as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, *IMAGE_SHAPE), table[:, -1].astype(np.int64)


def classify(engine: tk.Engine, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, 10) for images already scaled; the last batch is padded up to the engine's."""
    batch_size = engine.get_tensor_shape(INPUT_NAME)[0]
    output_name = engine.outputs[0].name
    context = engine.create_execution_context()
    results = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        count = len(batch)
        if count < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - count, *batch.shape[1:]), batch.dtype)])
        results.append(context.execute({INPUT_NAME: np.ascontiguousarray(batch)})[output_name][:count])
    return np.concatenate(results)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                        help=f"folder holding {CAFFEMODEL} (default: %(default)s)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET,
                        help="MNIST digits as gzip CSV, 784 pixels then the label per row (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=500, help="batch the engine is built for")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    engine, input_scale = build_engine(args.model_dir, args.batch_size)
    built = time.perf_counter()
    pixels, labels = load_mnist(args.dataset)
    probabilities = classify(engine, pixels * np.float32(input_scale))
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    done = time.perf_counter()
    print(f"engine: {engine.num_layers} steps, batch {args.batch_size}, built and reloaded in {built - start:.2f} s")
    print(f"top-1 accuracy on {len(labels)} digits: {100 * accuracy:.2f}% ({done - built:.2f} s)")
    return accuracy


if __name__ == "__main__":
    main()
