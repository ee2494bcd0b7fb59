"""`kiln build`'s INT8 flags (--int8 and the calibration group) and the Int8Options they make."""
from __future__ import annotations

import argparse
from pathlib import Path

from .inputs import CommandLineError, positive_int

CALIBRATORS = ("entropy", "minmax", "percentile", "mse")


def add_int8_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("INT8 calibration (with --int8)")
    group.add_argument("--calib", metavar="DIR|FILE",
                       help="calibration data: a folder of images (see --calib-preprocess), or an .npy (one input) / "
                            ".npz (one array per input name) file or folder of them, already preprocessed")
    group.add_argument("--calib-cache", "--calibCache", dest="calib_cache", metavar="FILE",
                       help="calibration cache (TensorRT's text layout): read when it exists, so a rebuild needs no "
                            "data; written after calibrating")
    group.add_argument("--calib-batches", type=positive_int, metavar="N",
                       help="calibrate on at most N batches of the engine's input shape (default: all the data)")
    group.add_argument("--calibrator", choices=CALIBRATORS, default="entropy",
                       help="how a tensor's range is chosen: entropy (TensorRT's entropy calibration 2, default), "
                            "minmax, percentile (99.99%% of |x|), mse")
    group.add_argument("--calib-preprocess", metavar="KEY=VALUE,...",
                       help="how images become inputs: resize=H[xW],crop=HxW,scale=S,mean=M[:M:M],std=S[:S:S],"
                            "order=rgb|bgr|gray,layout=nchw|nhwc (default: resize to the input, scale=1/255, rgb, "
                            "nchw)")
    group.add_argument("--int8-keep-fp16", type=int, default=0, metavar="K",
                       help="keep the K layers whose quantization costs the outputs most (measured on a calibration "
                            "batch) in float: FP16 on a GPU, FP32 on the CPU")


def check_int8_flags(args: argparse.Namespace) -> None:
    """The flags' own consistency, before the model is read."""
    if not args.int8:
        if args.calib or args.calib_cache or args.calib_batches or args.int8_keep_fp16 or args.calib_preprocess:
            raise CommandLineError("the calibration flags (--calib, --calib-cache, --calib-batches, "
                                   "--calib-preprocess, --int8-keep-fp16) apply to INT8 builds: add --int8")
        return
    if not args.calib and not (args.calib_cache and Path(args.calib_cache).is_file()):
        raise CommandLineError("--int8 needs calibration data (--calib DIR|FILE) or an existing calibration cache "
                               "(--calib-cache FILE)")
    if args.int8_keep_fp16 < 0:
        raise CommandLineError(f"--int8-keep-fp16 {args.int8_keep_fp16}: give a count of layers, 0 or more")
    _preprocessing(args)


def _preprocessing(args: argparse.Namespace):
    from ..quant.sources import ImagePreprocessing

    try:
        return ImagePreprocessing.parse(args.calib_preprocess) if args.calib_preprocess else None
    except (ValueError, TypeError) as error:
        raise CommandLineError(f"--calib-preprocess: {error}") from None


def int8_options(args: argparse.Namespace, network):
    """Int8Options for `network` (the imported IR) from the flags; None without --int8."""
    check_int8_flags(args)
    if not args.int8:
        return None
    from ..quant.calibrator import DataCalibrator
    from ..quant.int8 import Int8Options
    from ..quant.sources import calibration_source

    preprocessing = _preprocessing(args)
    data = None
    if args.calib:
        data = calibration_source(Path(args.calib), preprocessing, _image_size(network, preprocessing))
    calibrator = DataCalibrator(data, args.calibrator, args.calib_batches, args.calib_cache, progress=True)
    return Int8Options(calibrator, keep_float=args.int8_keep_fp16, measure_sqnr=args.verbose)


def _image_size(network, preprocessing) -> tuple[int, int]:
    """(height, width) of the first input, read as NCHW (or NHWC where the preprocessing says so)."""
    shape = network.inputs[0].shape if network.inputs else ()
    if len(shape) != 4:
        return (0, 0)  # not an image input: a folder of images fails on the shape check, naming the input's
    nhwc = preprocessing is not None and preprocessing.layout == "nhwc"
    return (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
