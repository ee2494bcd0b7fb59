"""The Caffe LeNet on the bundled MNIST digits: accuracy against the labels, and tensorkiln's latency.

There is no peer to time here: onnxruntime cannot read Caffe nets, and the demo ships no ONNX export of this one."""
from __future__ import annotations

import collections
import dataclasses

import numpy as np

from .bundled import LENET, LENET_CAFFEMODEL, LENET_PROTOTXT, load_digits
from .common import DemoSettings, EngineRun, build_engine, engine_run, resolve_device
from .measure import as_numpy, measure

BATCH = 100  # digits per execution: the 500 bundled digits are 5 batches
PIXEL_SCALE = 1 / 256  # the net was trained on pixels scaled so (Caffe's `scale: 0.00390625`)
PEER_NOTE = "none: onnxruntime cannot read Caffe nets, so only tensorkiln is timed"


@dataclasses.dataclass(frozen=True)
class LenetReport:
    run: EngineRun
    correct: int
    total: int
    misread: tuple[tuple[int, int, int], ...]  # (label, read as, how many), most frequent first

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    def summary_rows(self) -> list[tuple[str, str]]:
        misread = ", ".join(f"{label} as {read}" + (f" (x{count})" if count > 1 else "")
                            for label, read, count in self.misread) or "none"
        return [("accuracy", f"{self.correct} of {self.total} digits right ({100 * self.accuracy:.1f}%)"),
                ("misread", misread), ("compared with", PEER_NOTE)]


def run_lenet(settings: DemoSettings) -> LenetReport:
    from ..importers.caffe import parse_caffe

    device = resolve_device(settings.device)
    engine, parse_seconds = build_engine(lambda: parse_caffe(LENET_PROTOTXT, LENET_CAFFEMODEL, batch_size=BATCH),
                                         device)
    images, labels = load_digits()
    batches = _batches(images)
    context = engine.create_execution_context()
    input_name, output_name = engine.inputs[0].name, engine.outputs[0].name
    predicted = np.concatenate([as_numpy(context.execute({input_name: batch})[output_name]).argmax(axis=1)
                                for batch in batches])[:len(labels)]
    latency = measure("tensorkiln", lambda: context.execute({input_name: batches[0]}), settings.iterations, BATCH)
    wrong = collections.Counter(zip(labels[predicted != labels].tolist(), predicted[predicted != labels].tolist()))
    return LenetReport(engine_run(LENET, engine, parse_seconds, latency), int((predicted == labels).sum()),
                       len(labels), tuple((label, read, count) for (label, read), count in wrong.most_common()))


def _batches(images: np.ndarray) -> list[np.ndarray]:
    """The digits as float32 NCHW batches of BATCH, the last one padded with blank digits."""
    count = len(images)
    padded = np.zeros((-(-count // BATCH) * BATCH, 1, 28, 28), np.float32)
    padded[:count, 0] = images * np.float32(PIXEL_SCALE)
    return [padded[start:start + BATCH] for start in range(0, len(padded), BATCH)]
