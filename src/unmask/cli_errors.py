"""Bad input on the command line: one red line naming the problem, and exit code 2.

Two layers: ``friendly_errors`` wraps each command (a ``ValueError``, a missing or unwritable path, a
broken checkpoint, bad JSON), and ``OneLineErrorsGroup``, the app's click group, prints click's own
usage errors (an option's value of the wrong type, an unknown option, a missing argument) on one line
as well, instead of the usage text and a boxed message.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

PIPED_WIDTH = 240  # columns of tables written to a file or a pipe (rich's default there, 80, cuts them)


def make_console(stderr: bool = False) -> Console:
    """A rich console: the terminal's width on a terminal, ``PIPED_WIDTH`` columns when piped or redirected."""
    stream = sys.stderr if stderr else sys.stdout
    interactive = hasattr(stream, "isatty") and stream.isatty()
    return Console(stderr=stderr, width=None if interactive else PIPED_WIDTH)


err_console = make_console(stderr=True)
# click's base of usage errors, from whichever click typer uses (its own copy in typer >= 0.24)
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr, on one line however wide the terminal (no hard wrap)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn bad input (ValueError, missing or unwritable paths, broken checkpoints, bad JSON) into one clear
    line and exit 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, json.JSONDecodeError) as err:
            print_error(str(err))
            raise typer.Exit(2) from err
        except OSError as err:  # a path that is missing, not a folder, not writable, ...
            where = f"{str(err.filename)!r} " if err.filename else ""
            print_error(f"{where}{err.strerror or err}")
            raise typer.Exit(2) from err

    return wrapper


def given_value(param: Any, args: list[str]) -> str | None:
    """The last value given on the command line to the option ``param`` (``--opt V`` or ``--opt=V``)."""
    found = None
    for opt in getattr(param, "opts", ()) if getattr(param, "param_type_name", "") == "option" else ():
        for i, arg in enumerate(args):
            if arg == opt and i + 1 < len(args):
                found = args[i + 1]
            elif arg.startswith(opt + "=") and opt.startswith("--"):
                found = arg[len(opt) + 1:]
    return found


class OneLineErrorsGroup(TyperGroup):
    """The app's group: click's usage errors as ``error: MESSAGE (see 'unmask CMD --help')``, exit 2."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # `unmask` alone: the help was printed
                sys.exit(err.exit_code)
            ctx = getattr(err, "ctx", None)
            message = err.format_message()
            value = given_value(getattr(err, "param", None), sys.argv[1:] if args is None else list(args))
            if value is not None and value not in message:  # typer's type errors do not repeat the value
                message += f" (got {value!r})"
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            print_error(f"{message}{hint}")
            sys.exit(err.exit_code)
        except typer.Abort:
            err_console.print("Aborted!")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)  # a command returns None; typer.Exit(n) returns n
