"""`--plugins MODULE_OR_FILE` (trtexec's --plugins): import the user's plugin code so that its
`@register_plugin` classes are registered before a model is parsed or an engine is loaded.

This runs code the user names on the command line, as `python -c "import MODULE"` would; an engine file never
names code to load (it stores plugin type names and JSON parameters only), and nothing here reads one.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Iterable

from .inputs import CommandLineError

# A plugin file is imported under a name made from its resolved path, so that naming one file twice (or in two
# `kiln` calls of one process, as the tests make) imports it once, and two files of one name stay apart.
FILE_MODULE_PREFIX = "_kiln_plugin_"


def add_plugins_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugins", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="import a Python module (by name, e.g. my_pkg.plugins) or a .py file (by path) "
                             "whose @register_plugin classes implement the model's or engine's custom layers; "
                             "repeatable (trtexec's --plugins). This runs that code, as importing it would")


def load_plugins(specs: Iterable[str]) -> list[str]:
    """Import each module name or .py path; returns the module names imported. One-line errors for what fails."""
    return [_load(spec) for spec in specs]


def _load(spec: str) -> str:
    path = Path(spec)
    if spec.endswith(".py") or path.is_file() or "/" in spec or "\\" in spec:
        return _load_file(path, spec)
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as error:
        if error.name and (spec == error.name or spec.startswith(error.name + ".")):
            here = Path(spec.replace(".", "/") + ".py")
            hint = f"; to import the file {here} here, give its path: --plugins ./{here}" if here.is_file() else ""
            raise CommandLineError(f"--plugins {spec}: no module named {error.name!r} on the Python path; give a "
                                   f"module name importable here, or the path of a .py file{hint}") from None
        raise _import_failed(spec, error, f'python3 -c "import {spec}"') from None
    except Exception as error:  # the user's module raised while importing: say which and what, in one line
        raise _import_failed(spec, error, f'python3 -c "import {spec}"') from None
    return spec


def _load_file(path: Path, spec: str) -> str:
    if not path.is_file():
        raise CommandLineError(f"--plugins {spec}: no such file; give the path of a .py file or a module name")
    resolved = path.resolve()
    name = FILE_MODULE_PREFIX + _identifier(resolved.stem) + "_" + hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    if name in sys.modules:
        return name
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise CommandLineError(f"--plugins {spec}: cannot be imported as Python source; give a .py file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # as import does: the module can find itself (dataclasses and pickling need it)
    try:
        module_spec.loader.exec_module(module)
    except BaseException as error:
        del sys.modules[name]
        if not isinstance(error, Exception):
            raise
        raise _import_failed(spec, error, f"python3 {spec}") from None
    return name


def _import_failed(spec: str, error: Exception, rerun: str) -> CommandLineError:
    return CommandLineError(f"--plugins {spec}: importing it failed with {type(error).__name__}: {error} "
                            f"(`{rerun}` shows the traceback)")


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in text)
