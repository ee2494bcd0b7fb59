"""`kiln`: the command line of tensorkiln (build, run, bench, inspect), in the spirit of trtexec.

Each subcommand lives in its own module with `add_parser(subparsers)` and `main(args) -> exit code`; this
module only dispatches and turns tensorkiln's errors into one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .. import __version__
from ..errors import TensorkilnError
from ..plugins import MissingPluginError, UnknownPluginError
from . import bench, build, demo, inspect_cmd, run, serve
from .plugins import add_plugins_argument, load_plugins

SUBCOMMANDS = (build, run, bench, inspect_cmd, demo, serve)
PLUGIN_SUBCOMMANDS = ("build", "run", "bench", "inspect")  # those that read models or engines with custom layers
ERROR_EXIT_CODE = 2  # as argparse uses for usage errors
INTERRUPTED_EXIT_CODE = 130  # the shell's code for SIGINT

EPILOG = """examples:
  kiln demo                  # build and run the models that ship with tensorkiln; see kiln demo --help
  kiln build model.onnx -o model.engine --shapes input:1x3x224x224
  kiln build --deploy deploy.prototxt --model net.caffemodel --output prob --saveEngine net.engine
  kiln run model.engine --inputs input:image.npy --save-outputs out.npz
  kiln bench model.engine --iterations 200 --json perf.json
  kiln inspect model.engine --layers
  kiln build model.onnx --plugins my_layers.py && kiln run model.engine --plugins my_layers.py

`kiln COMMAND --help` explains each command's flags."""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiln", description="Build, run, benchmark and inspect tensorkiln inference engines.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"kiln (tensorkiln) {__version__}",
                        help="print the tensorkiln version and exit")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    for name in PLUGIN_SUBCOMMANDS:
        add_plugins_argument(subparsers.choices[name])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `kiln` with `argv` (default: sys.argv[1:]); returns the exit code instead of exiting."""
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return ERROR_EXIT_CODE
        load_plugins(getattr(args, "plugins", ()))  # before the handler parses a model or loads an engine
        return args.handler(args)
    except SystemExit as exit_request:  # argparse: --help, --version, and usage errors (already printed)
        return _exit_code(exit_request.code)
    except (MissingPluginError, UnknownPluginError) as error:  # the library's advice, and kiln's way to follow it
        return _fail(f"{error} (with kiln: --plugins MODULE_OR_FILE.py)")
    except TensorkilnError as error:
        return _fail(str(error))
    except OSError as error:  # an output file that cannot be written, a directory that cannot be made
        return _fail(f"{error.strerror or error}: {error.filename}" if error.filename else str(error))
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE


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
