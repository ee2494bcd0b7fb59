"""`kiln`: the command line of tensorkiln (build, run, bench, inspect), in the spirit of trtexec.

Each subcommand lives in its own module with `add_parser(subparsers)` and `main(args) -> exit code`; this
module only dispatches and turns tensorkiln's errors into one line on stderr and exit code 2. It imports a
subcommand's module only when that subcommand runs: the modules import numpy, rich and (for build) torch, which
take seconds, and `kiln --version` or `kiln --help` should answer at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from typing import Iterable, Sequence

from .. import __version__
from ..errors import TensorkilnError


@dataclasses.dataclass(frozen=True)
class Subcommand:
    name: str
    module: str  # imported only when the subcommand runs (or make_parser is asked for it)
    help: str  # the line `kiln --help` shows; the module's add_parser gives the same (a test checks)


SUBCOMMANDS = (
    Subcommand("build", "tensorkiln.cli.build", "build an engine from an ONNX model or a Caffe net"),
    Subcommand("run", "tensorkiln.cli.run", "run an engine once and show its outputs"),
    Subcommand("bench", "tensorkiln.cli.bench", "measure an engine's throughput and latency"),
    Subcommand("inspect", "tensorkiln.cli.inspect_cmd", "show what an engine file holds"),
    Subcommand("demo", "tensorkiln.cli.demo",
               "build and run the bundled models: accuracy, optimizations, latency against onnxruntime"),
    Subcommand("serve", "tensorkiln.cli.serve",
               "serve a model repository over HTTP and gRPC (KServe v2 / Triton protocol)"),
    Subcommand("refit", "tensorkiln.cli.refit", "put new weights into an engine without timing its tactics again"),
    Subcommand("compare", "tensorkiln.cli.compare", "compare an engine's outputs with onnxruntime's, layer by layer"),
)
# those that read models or engines with custom layers
PLUGIN_SUBCOMMANDS = ("build", "run", "bench", "inspect", "refit")
THREADS_SUBCOMMANDS = ("build", "run", "demo", "serve", "compare")  # run kernels; `kiln bench` has its own --threads
ERROR_EXIT_CODE = 2  # as argparse uses for usage errors
INTERRUPTED_EXIT_CODE = 130  # the shell's code for SIGINT

EPILOG = """examples:
  kiln demo                  # build and run the models that ship with tensorkiln; see kiln demo --help
  kiln build model.onnx -o model.engine --shapes input:1x3x224x224
  kiln build --deploy deploy.prototxt --model net.caffemodel --output prob --saveEngine net.engine
  kiln run model.engine --inputs input:image.npy --save-outputs out.npz
  kiln bench model.engine --iterations 200 --json perf.json
  kiln inspect model.engine --layers --graph model.svg
  kiln refit model.engine --weights retrained.onnx -o retrained.engine
  kiln build model.onnx --plugins my_layers.py && kiln run model.engine --plugins my_layers.py

`kiln COMMAND --help` explains each command's flags."""


def make_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """kiln's parser. `commands`: the subcommands whose modules are imported to give their full parsers (None: all);
    the others appear in `kiln --help` by name and help line only."""
    parser = argparse.ArgumentParser(
        prog="kiln", description="Build, run, benchmark and inspect tensorkiln inference engines.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kiln (tensorkiln) {__version__}",
                        help="print the tensorkiln version and exit")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    loaded = {command.name for command in SUBCOMMANDS} if commands is None else set(commands)
    for command in SUBCOMMANDS:
        if command.name in loaded:
            importlib.import_module(command.module).add_parser(subparsers)
            if command.name in PLUGIN_SUBCOMMANDS:
                from .plugins import add_plugins_argument

                add_plugins_argument(subparsers.choices[command.name])
            if command.name in THREADS_SUBCOMMANDS:
                from .threads import add_threads_argument

                add_threads_argument(subparsers.choices[command.name])
        else:
            subparsers.add_parser(command.name, help=command.help)
    return parser


def _command_in(argv: Sequence[str]) -> list[str]:
    """The subcommand `argv` names: its first word that is no option (kiln's own options take no values)."""
    return [word for word in argv if not word.startswith("-")][:1]


def main(argv: Sequence[str] | None = None) -> int:
    """Run `kiln` with `argv` (default: sys.argv[1:]); returns the exit code instead of exiting."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = make_parser(_command_in(argv))
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return ERROR_EXIT_CODE
        from .plugins import load_plugins

        load_plugins(getattr(args, "plugins", ()))  # before the handler parses a model or loads an engine
        if args.command in THREADS_SUBCOMMANDS:
            from .threads import apply_threads

            apply_threads(args)
        return args.handler(args)
    except SystemExit as exit_request:  # argparse: --help, --version, and usage errors (already printed)
        return _exit_code(exit_request.code)
    except TensorkilnError as error:
        if _is_plugin_error(error):  # the library's advice, and kiln's way to follow it
            return _fail(f"{error} (with kiln: --plugins MODULE_OR_FILE.py)")
        return _fail(str(error))
    except OSError as error:  # an output file that cannot be written, a directory that cannot be made
        return _fail(f"{error.strerror or error}: {error.filename}" if error.filename else str(error))
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE


def _is_plugin_error(error: TensorkilnError) -> bool:
    # the plugin registry imports torch: look it up only where it is loaded (it is, wherever its errors arise)
    registry = sys.modules.get("tensorkiln.plugins.registry")
    return registry is not None and isinstance(error, (registry.MissingPluginError, registry.UnknownPluginError))


def _fail(message: str) -> int:
    one_line = " ".join(message.split())  # a message over several lines would read as several errors
    print(f"kiln: error: {one_line}", file=sys.stderr)
    return ERROR_EXIT_CODE


def _exit_code(code) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else ERROR_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
