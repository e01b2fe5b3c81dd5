"""Bad input on the command line: one red line naming the problem, and exit code 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer
from rich.console import Console

err_console = Console(stderr=True)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn bad input (ValueError, missing or unwritable paths, broken checkpoints, bad JSON) into one clear
    line and exit 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, json.JSONDecodeError) as err:
            err_console.print(f"[bold red]error:[/] {err}", markup=True, highlight=False)
            raise typer.Exit(2) from err
        except OSError as err:  # a path that is missing, not a folder, not writable, ...
            where = f" {str(err.filename)!r}" if err.filename else ""
            err_console.print(f"[bold red]error:[/]{where} {err.strerror or err}", markup=True, highlight=False)
            raise typer.Exit(2) from err

    return wrapper
